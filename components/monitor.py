"""KFP component: skew, drift and prediction drift of a scored table (monitoring report)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def monitor(
    model: Input[Model],
    features_uri: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    monitoring: Output[Artifact],
    predictions_uri: str = "",
    run_id: str = "",
    series: str = "",
    statistics_store: str = "",
    thresholds: str = "{}",
    default_threshold: float = 0.3,
    prior_threshold: float = 0.1,
    timestamp_column: str = "",
    window_seconds: int = 86400,
    fail_on_alert: bool = False,
) -> NamedTuple("MonitorOutputs", [("alerts", list), ("alert_count", int)]):
    """Compare the scored table with the model's training statistics and the previous run.

    Args:
        model: model directory holding ``feature_statistics.json``.
        features_uri: the scored input table (``bq://p.d.t`` or ``duckdb:///abs.db?table=t``).
        metrics: one distance per feature and check (``skew_<f>``, ``drift_<f>``,
            ``prior_shift``) and ``alert_count``.
        report: the self-contained HTML report.
        monitoring: directory with ``monitoring.json`` and the HTML report.
        predictions_uri: the predictions table for prediction drift ("" = off).
        run_id: this run's id (the pipeline job id); a rerun replaces its stored statistics.
        series: what is compared across runs ("" = the features table).
        statistics_store: ``bq://project.dataset.table`` or a local DuckDB file for drift across
            runs ("" = no run-to-run drift).
        thresholds: JSON object feature -> alert threshold (overrides the default).
        default_threshold: alert threshold of the other features (Vertex's default 0.3).
        prior_threshold: alert when the EM serving prior moves a class share by more.
        timestamp_column: TIMESTAMP column for drift between consecutive windows ("" = off).
        window_seconds: window length for window drift.
        fail_on_alert: fail the task (after writing the outputs) when any alert fired.

    Returns:
        ``alerts`` (one line each) and ``alert_count``.
    """
    import json
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from vertex_imbalanced.monitoring.monitor import MonitorConfig, run_monitoring
    from vertex_imbalanced.monitoring.statistics import read_training_statistics
    from vertex_imbalanced.monitoring.store import open_store

    config = MonitorConfig(
        thresholds=json.loads(thresholds or "{}"),
        default_threshold=default_threshold,
        prior_threshold=prior_threshold,
        timestamp_column=timestamp_column or None,
        window_seconds=window_seconds,
        fail_on_alert=False,
    )
    result = run_monitoring(
        features_uri,
        read_training_statistics(model.path),
        monitoring.path,
        predictions_uri=predictions_uri or None,
        store=open_store(statistics_store) if statistics_store else None,
        series=series or None,
        run_id=run_id,
        config=config,
    )
    r = result.report
    for check, rows in (("skew", r["skew"]), ("drift", (r["drift"] or {}).get("distances", []))):
        for d in rows:
            metrics.log_metric(f"{check}_{d['feature']}", d["distance"])
    if r["prediction"] and r["prediction"]["distance"] is not None:
        metrics.log_metric("prior_shift", r["prediction"]["distance"])
    metrics.log_metric("alert_count", len(result.alerts))
    shutil.copyfile(result.html_path, report.path)
    monitoring.metadata.update({"alerts": result.alerts, "files": [Path(result.json_path).name]})
    for line in result.alerts:
        print("ALERT:", line)
    if fail_on_alert and result.alerts:
        from vertex_imbalanced.errors import MonitoringAlertError

        raise MonitoringAlertError(f"{len(result.alerts)} alert(s): " + "; ".join(result.alerts))
    return namedtuple("MonitorOutputs", ["alerts", "alert_count"])(
        result.alerts, len(result.alerts)
    )
