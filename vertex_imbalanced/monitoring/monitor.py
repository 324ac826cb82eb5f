"""One monitoring run: skew, drift and prediction drift of a scored table; JSON + HTML out.

- **Skew**: the scored input table's feature statistics (in SQL, over the training bins and
  categories) vs the training statistics stored with the model.
- **Drift**: vs the previous run's statistics of the same series in the statistics store and,
  with a timestamp column, between consecutive time windows of this table.
- **Prediction drift**: predicted-class shares and mean probabilities vs the training prior,
  and the EM estimate of the serving prior (:mod:`.prior_shift`).

Everything is checked (tables, columns, thresholds) and computed before anything is written;
then the statistics are stored for the next run and ``monitoring.json`` / ``report.html`` are
written (each to a temporary name, then renamed). With ``fail_on_alert`` the run raises
:class:`~vertex_imbalanced.errors.MonitoringAlertError` after writing its outputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import MonitoringAlertError, PipelineInputError
from vertex_imbalanced.monitoring.distances import (
    DEFAULT_THRESHOLD,
    FeatureDistance,
    feature_distances,
    resolve_thresholds,
)
from vertex_imbalanced.monitoring.predictions import DEFAULT_PRIOR_THRESHOLD, prediction_summary
from vertex_imbalanced.monitoring.statistics import (
    DEFAULT_TOP_K,
    STATISTICS_FORMAT,
    TableSource,
    feature_statistics,
)
from vertex_imbalanced.monitoring.store import StatisticsStore
from vertex_imbalanced.warehouse.engines import (
    DuckDBWarehouse,
    Warehouse,
    open_warehouse,
    source_table,
)
from vertex_imbalanced.warehouse.identifiers import TableRef

MONITORING_FILE = "monitoring.json"
MONITORING_REPORT_FILE = "monitoring_report.html"


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """Monitoring settings.

    Attributes:
        thresholds: feature -> alert threshold (overrides ``default_threshold``).
        default_threshold: threshold of every other feature (Vertex Model Monitoring's 0.3).
        prior_threshold: alert when the EM serving prior moves a class share by more than this.
        top_k: categorical values reported individually besides the training's.
        timestamp_column: TIMESTAMP column of the scored table for window drift (None: off).
        window_seconds: window length for window drift.
        fail_on_alert: raise MonitoringAlertError after writing the outputs when any alert fired.
    """

    thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    default_threshold: float = DEFAULT_THRESHOLD
    prior_threshold: float = DEFAULT_PRIOR_THRESHOLD
    top_k: int = DEFAULT_TOP_K
    timestamp_column: str | None = None
    window_seconds: int = 86_400
    fail_on_alert: bool = False


def spec_from_statistics(statistics: Mapping[str, Any]) -> FeatureSpec:
    """The numeric and categorical features the training statistics describe (label unused).

    Raises:
        PipelineInputError: not a statistics dict of a known format.
    """
    if statistics.get("format") != STATISTICS_FORMAT or "features" not in statistics:
        raise PipelineInputError(
            f"not a feature statistics dict of format {STATISTICS_FORMAT} "
            f"(keys {sorted(statistics)[:8]})"
        )
    features = statistics["features"]
    numeric = tuple(n for n, f in features.items() if f["type"] == "numeric")
    categorical = tuple(n for n, f in features.items() if f["type"] == "categorical")
    label = "_label_not_read"
    return FeatureSpec(label=label, numeric=numeric, categorical=categorical)


def _with_values(reference: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict:
    """The reference with categorical values of ``extra`` added (counted individually too)."""
    out = json.loads(json.dumps(reference))
    if extra:
        for name, f in out["features"].items():
            more = extra.get("features", {}).get(name, {})
            if f["type"] == "categorical" and more.get("type") == "categorical":
                for value in more["values"]:
                    f["values"].setdefault(value, 0)
    return out


def _same_bins(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    for name, f in a["features"].items():
        g = b.get("features", {}).get(name)
        if g is None or g["type"] != f["type"]:
            return False
        if f["type"] == "numeric" and list(f["edges"]) != list(g["edges"]):
            return False
    return True


def _alerts(kind: str, distances: Sequence[FeatureDistance], where: str = "") -> list[str]:
    return [
        f"{kind}{where}: feature {d.feature!r} {d.metric} {d.distance:.3f} > {d.threshold:.3f}"
        for d in distances
        if d.alert
    ]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


PREDICTIONS_CATALOG = "scored_predictions"
"""Name under which a predictions DuckDB file is attached (read-only) to the features' one."""


def _read_only_duckdb(path: str) -> DuckDBWarehouse:
    """The DuckDB file opened read-only (this process may already hold it for writing)."""
    import duckdb

    try:
        return DuckDBWarehouse(path, read_only=True)
    except duckdb.ConnectionException:
        # DuckDB refuses a second configuration of a file within one process: share the one
        # already open. This connection still only reads (and creates temporary views).
        return DuckDBWarehouse(path)


def open_scored_tables(
    features_uri: str, predictions_uri: str | None = None
) -> tuple[Warehouse, TableRef, TableRef | None]:
    """One warehouse that reads the scored features and, if given, the predictions.

    BigQuery: one client for both ``bq://`` tables. DuckDB: the features' file is opened
    read-only (the user's table is never written); predictions in another DuckDB file (the
    run's work database) are attached to it read-only and reached through a temporary view of
    the same name, so the SQL runs across both files and no rows are copied.

    Args:
        features_uri: the scored input table.
        predictions_uri: the predictions table (None: only the features).

    Returns:
        ``(warehouse, features table, predictions table or None)``; close the warehouse.

    Raises:
        PipelineInputError: malformed URIs, a missing file, or tables on two engines.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri

    ref = source_table(features_uri)
    predictions = source_table(predictions_uri) if predictions_uri else None
    if predictions_uri and features_uri.split(":", 1)[0] != predictions_uri.split(":", 1)[0]:
        raise PipelineInputError(
            f"the predictions {predictions_uri} and the scored table {features_uri} must be in "
            "the same warehouse (both bq:// or both duckdb://)"
        )
    if not features_uri.startswith("duckdb://"):
        warehouse, ref = open_warehouse(features_uri)
        return warehouse, ref, predictions
    path = parse_duckdb_uri(features_uri).path
    if not Path(path).is_file():
        raise PipelineInputError(f"DuckDB file {path} does not exist ({features_uri})")
    if predictions_uri is None:
        return _read_only_duckdb(path), ref, None
    other = parse_duckdb_uri(predictions_uri).path
    if Path(other).resolve() == Path(path).resolve():
        return _read_only_duckdb(path), ref, predictions
    if not Path(other).is_file():
        raise PipelineInputError(f"DuckDB file {other} does not exist ({predictions_uri})")
    import duckdb

    warehouse = _read_only_duckdb(path)
    view = predictions.table if predictions.table != ref.table else f"{ref.table}_predictions"
    try:
        warehouse.con.execute(f"ATTACH ? AS {PREDICTIONS_CATALOG} (READ_ONLY)", [str(other)])
        warehouse.con.execute(
            f'CREATE TEMP VIEW "{view}" AS SELECT * FROM {PREDICTIONS_CATALOG}.'
            f'"{predictions.dataset or "main"}"."{predictions.table}"'
        )
    except duckdb.CatalogException as err:
        warehouse.close()
        raise PipelineInputError(
            f"predictions table {predictions} does not exist in {other} ({predictions_uri})"
        ) from err
    except BaseException:
        warehouse.close()
        raise
    return warehouse, ref, TableRef(None, None, view)


@dataclasses.dataclass(frozen=True)
class MonitoringResult:
    """What a monitoring run found and wrote."""

    report: dict[str, Any]
    json_path: Path
    html_path: Path

    @property
    def alerts(self) -> list[str]:
        """One line per alert."""
        return list(self.report["alerts"])


def run_monitoring(
    features_uri: str,
    training_statistics: Mapping[str, Any],
    output_dir: str | Path,
    *,
    predictions_uri: str | None = None,
    class_id_column: str = "class_id",
    probabilities_column: str = "probabilities",
    store: StatisticsStore | None = None,
    series: str | None = None,
    run_id: str = "",
    config: MonitorConfig | None = None,
    warehouse: Warehouse | None = None,
) -> MonitoringResult:
    """Monitor one scored table against the training statistics (and the previous run).

    Args:
        features_uri: the scored input table (its feature columns), ``bq://`` or ``duckdb://``.
        training_statistics: the dict stored with the model (``feature_statistics.json``).
        output_dir: where ``monitoring.json`` and ``monitoring_report.html`` go.
        predictions_uri: the predictions table for prediction drift (None: off); same engine,
            on DuckDB possibly another file (attached read-only, see :func:`open_scored_tables`).
        class_id_column: predicted class id column of the predictions table.
        probabilities_column: probabilities column (ARRAY<FLOAT64>, class-id order).
        store: statistics store for drift across runs (None: no run-to-run drift).
        series: what is compared across runs (default: the features table).
        run_id: this run's id (a rerun replaces its own stored statistics).
        config: thresholds and options.
        warehouse: runner to use instead of one opened from ``features_uri`` (it must reach
            both tables).

    Returns:
        The report dict and the paths written.

    Raises:
        PipelineInputError / SchemaError: bad tables, columns, thresholds or statistics
            (nothing written).
        MonitoringAlertError: ``config.fail_on_alert`` and an alert fired (outputs written).
    """
    config = config or MonitorConfig()
    spec = spec_from_statistics(training_statistics)
    thresholds = resolve_thresholds(
        list(spec.features), config.thresholds, config.default_threshold
    )
    if not 0 < config.prior_threshold <= 1:
        raise PipelineInputError(f"prior_threshold must be in (0, 1], got {config.prior_threshold}")
    owned = warehouse is None
    if warehouse is None:
        warehouse, ref, predictions_ref = open_scored_tables(features_uri, predictions_uri)
    else:
        ref = source_table(features_uri)
        predictions_ref = source_table(predictions_uri) if predictions_uri else None
    series = series or str(ref)
    try:
        source = TableSource.table(warehouse, ref)
        previous = store.previous(series, run_id) if store is not None else None
        reference = _with_values(training_statistics, previous[1] if previous else None)
        current = feature_statistics(
            warehouse, source, spec, reference=reference, top_k=config.top_k
        )[0]
        current["source"] = str(ref)
        skew = feature_distances(training_statistics, current, thresholds)
        drift = None
        if previous is not None:
            prev_id, prev_stats = previous
            if _same_bins(training_statistics, prev_stats):
                drift = {
                    "previous_run_id": prev_id,
                    "distances": feature_distances(prev_stats, current, thresholds),
                }
            else:
                drift = {"previous_run_id": prev_id, "distances": [], "note": "other bins"}
        windows = _window_drift(warehouse, source, spec, reference, thresholds, config)
        prediction = None
        if predictions_uri:
            classes = list((training_statistics.get("class_prior") or {}).keys())
            if not classes:
                raise PipelineInputError(
                    "the training statistics have no class_prior: cannot read the predictions"
                )
            prediction = prediction_summary(
                warehouse,
                predictions_ref,
                classes,
                training_statistics["class_prior"],
                class_id_column=class_id_column,
                probabilities_column=probabilities_column,
                prior_threshold=config.prior_threshold,
            )
    finally:
        if owned and hasattr(warehouse, "close"):
            warehouse.close()
    alerts = _alerts("skew", skew)
    if drift:
        alerts += _alerts("drift", drift["distances"], f" vs run {drift['previous_run_id']}")
    for w in windows:
        alerts += _alerts("window drift", w["distances"], f" {w['window_start']}")
    if prediction and prediction["alert"]:
        alerts.append(
            f"prior shift: EM serving prior {prediction['em_prior']} moves "
            f"{prediction['distance']:.3f} > {prediction['threshold']:.3f} from the training prior"
        )
    report = {
        "format": 1,
        "run_id": run_id,
        "series": series,
        "features_source": str(ref),
        "predictions_source": predictions_uri,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": current["row_count"],
        "alerts": alerts,
        "skew": [d.to_dict() for d in skew],
        "drift": drift and {**drift, "distances": [d.to_dict() for d in drift["distances"]]},
        "window_drift": [
            {**w, "distances": [d.to_dict() for d in w["distances"]]} for w in windows
        ],
        "prediction": prediction,
        "statistics": current,
    }
    from vertex_imbalanced.monitoring.report import render_monitoring_report

    html = render_monitoring_report(report, training_statistics)
    if store is not None:
        store.put(series, run_id, current)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / MONITORING_FILE, out / MONITORING_REPORT_FILE
    _write_atomic(html_path, html)
    _write_atomic(json_path, json.dumps(report, indent=1, sort_keys=True))
    result = MonitoringResult(report, json_path, html_path)
    if config.fail_on_alert and alerts:
        raise MonitoringAlertError(
            f"{len(alerts)} monitoring alert(s) on {ref}: " + "; ".join(alerts)
        )
    return result


def _window_drift(
    warehouse: Warehouse,
    source: TableSource,
    spec: FeatureSpec,
    reference: Mapping[str, Any],
    thresholds: Mapping[str, float],
    config: MonitorConfig,
) -> list[dict[str, Any]]:
    """Distances between consecutive windows of the table (each window vs the one before)."""
    if config.timestamp_column is None:
        return []
    per_window = feature_statistics(
        warehouse,
        source,
        spec,
        reference=reference,
        top_k=config.top_k,
        timestamp=config.timestamp_column,
        window_seconds=config.window_seconds,
    )
    ids = sorted(per_window)
    out = []
    for before, after in zip(ids, ids[1:], strict=False):
        start = dt.datetime.fromtimestamp(after * config.window_seconds, dt.UTC)
        prev_start = dt.datetime.fromtimestamp(before * config.window_seconds, dt.UTC)
        out.append(
            {
                "window_start": start.isoformat(),
                "previous_window_start": prev_start.isoformat(),
                "rows": per_window[after]["row_count"],
                "previous_rows": per_window[before]["row_count"],
                "distances": feature_distances(per_window[before], per_window[after], thresholds),
            }
        )
    return out
