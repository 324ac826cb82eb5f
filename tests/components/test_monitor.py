"""The monitor component under kfp.local: outputs (alerts parameter, Metrics, HTML, JSON)."""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Metrics, Model, Output

from components.monitor import monitor
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.monitoring.statistics import training_statistics
from vertex_imbalanced.warehouse.engines import DuckDBWarehouse


@dsl.component
def model_with_statistics(statistics: str, model: Output[Model]):
    import json

    from vertex_imbalanced.monitoring.statistics import write_training_statistics

    write_training_statistics(model.path, json.loads(statistics))


class Out(NamedTuple):
    alerts: list
    metrics: Metrics
    report: HTML
    monitoring: Artifact


@dsl.pipeline
def monitored(statistics: str, features_uri: str, store: str, run_id: str) -> Out:
    model = model_with_statistics(statistics=statistics)
    checked = monitor(
        model=model.outputs["model"],
        features_uri=features_uri,
        statistics_store=store,
        series="scored-demo",
        run_id=run_id,
        thresholds=json.dumps({"y": 0.25}),
    )
    return Out(
        checked.outputs["alerts"],
        checked.outputs["metrics"],
        checked.outputs["report"],
        checked.outputs["monitoring"],
    )


def _rows(n, seed, shift=0.0, p=(0.7, 0.3)):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(n),
            "y": rng.normal(shift, 1, n),
            "kind": rng.choice(["a", "b"], n, p=p).tolist(),
            "label": rng.integers(0, 2, n),
        }
    )


@pytest.fixture()
def tables(tmp_path):
    path = tmp_path / "wh.db"
    with DuckDBWarehouse(path) as wh:
        for name, t in {
            "train": _rows(5000, 1),
            "fresh": _rows(2000, 2),
            "shifted": _rows(2000, 3, 2.0, (0.2, 0.8)),
        }.items():
            wh.con.register("t_in", t)
            wh.con.execute(f"CREATE TABLE {name} AS SELECT * FROM t_in")
            wh.con.unregister("t_in")
    spec = FeatureSpec(label="label", numeric=("y",), categorical=("kind",), key="id")
    stats = training_statistics(f"duckdb://{path}?table=train", spec, split_ratios=(0.8, 0.1, 0.1))
    return path, stats


def test_monitor_component_lists_alerts_and_writes_outputs(tables, tmp_path):
    path, stats = tables
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    common = dict(statistics=json.dumps(stats), store=str(tmp_path / "registry" / "monitoring.db"))
    fresh = monitored(features_uri=f"duckdb://{path}?table=fresh", run_id="r1", **common)
    assert fresh.outputs["alerts"] == []
    shifted = monitored(features_uri=f"duckdb://{path}?table=shifted", run_id="r2", **common)
    alerts = shifted.outputs["alerts"]
    assert any("skew: feature 'y' jensen_shannon" in a and "> 0.250" in a for a in alerts)
    assert any("skew: feature 'kind' l_infinity" in a for a in alerts)
    assert any("drift vs run r1: feature 'y'" in a for a in alerts)
    metrics = shifted.outputs["metrics"].metadata
    assert metrics["alert_count"] == len(alerts) and metrics["skew_y"] > 0.25
    assert metrics["drift_kind"] > 0.3 and metrics["skew_kind"] > 0.3
    html = Path(shifted.outputs["report"].path).read_text()
    assert "Skew and drift monitoring" in html and "data:image/png;base64," in html
    report = json.loads((Path(shifted.outputs["monitoring"].path) / "monitoring.json").read_text())
    assert report["alerts"] == alerts
