"""A monitoring run end to end: no alert on a fresh sample, alerts on shifted features, drift vs the
previous run (DuckDB file store and BigQuery table store), windows, prediction drift, bad input."""

import json

import numpy as np
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import MonitoringAlertError, PipelineInputError, SchemaError
from vertex_imbalanced.monitoring.monitor import MonitorConfig, run_monitoring
from vertex_imbalanced.monitoring.statistics import training_statistics
from vertex_imbalanced.monitoring.store import BigQueryStatisticsStore, DuckDBStatisticsStore

SPEC = FeatureSpec(label="label", numeric=("x", "y"), categorical=("color",), key="id")
COLORS = ["red", "green", "blue"]


def _rows(n, seed, *, x_shift=0.0, colors=(0.6, 0.3, 0.1), start_id=0):
    rng = np.random.default_rng(seed)
    day = 86_400_000_000
    return pa.table(
        {
            "id": np.arange(start_id, start_id + n),
            "x": rng.normal(x_shift, 1.0, n),
            "y": rng.exponential(2.0, n),
            "color": rng.choice(COLORS, n, p=colors).tolist(),
            "label": (rng.random(n) < 0.1).astype(np.int64),
            "at": pa.array(
                1_700_000_000_000_000 + np.sort(rng.integers(0, 2 * day, n)),
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def _training(duck):
    ref = duck.load("train", _rows(20_000, 1))
    return training_statistics(
        duck.uri(ref),
        SPEC,
        split_ratios=(0.8, 0.1, 0.1),
        class_counts={"0": 900, "1": 100},
        warehouse=duck.warehouse,
    )


def test_fresh_sample_no_alert_shifted_sample_alerts_and_drift_vs_previous_run(duck, tmp_path):
    stats = _training(duck)
    store = DuckDBStatisticsStore(tmp_path / "registry" / "monitoring.db")
    fresh = duck.load("fresh", _rows(4000, 2, start_id=10**6))
    shifted = duck.load("shifted", _rows(4000, 3, x_shift=2.0, colors=(0.1, 0.2, 0.7)))
    run = dict(store=store, series="demo", config=MonitorConfig(timestamp_column="at"))
    first = run_monitoring(duck.uri(fresh), stats, tmp_path / "r1", run_id="r1", **run)
    assert first.alerts == []
    assert first.report["drift"] is None  # nothing stored before
    assert {d["feature"] for d in first.report["skew"]} == {"x", "y", "color"}
    assert all(d["distance"] < 0.05 for d in first.report["skew"])
    assert len(first.report["window_drift"]) >= 1

    second = run_monitoring(duck.uri(shifted), stats, tmp_path / "r2", run_id="r2", **run)
    skewed = {a.split("'")[1] for a in second.alerts if a.startswith("skew")}
    assert skewed == {"x", "color"}  # y was not shifted
    assert second.report["drift"]["previous_run_id"] == "r1"
    drifted = {a.split("'")[1] for a in second.alerts if a.startswith("drift")}
    assert drifted == {"x", "color"}
    written = json.loads(second.json_path.read_text())
    assert written["alerts"] == second.alerts
    html = second.html_path.read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    assert "x" in html and "0.300" in html

    # a rerun of r2 compares with r1 again (not with itself) and keeps one row per run
    again = run_monitoring(duck.uri(shifted), stats, tmp_path / "r2b", run_id="r2", **run)
    assert again.report["drift"]["previous_run_id"] == "r1"


def test_per_feature_threshold_override_and_fail_on_alert(duck, tmp_path):
    stats = _training(duck)
    fresh = duck.load("fresh", _rows(4000, 2, start_id=10**6))
    config = MonitorConfig(thresholds={"y": 0.001}, fail_on_alert=True)
    with pytest.raises(MonitoringAlertError, match="feature 'y' jensen_shannon"):
        run_monitoring(duck.uri(fresh), stats, tmp_path / "out", run_id="r", config=config)
    assert (tmp_path / "out" / "monitoring.json").exists()  # outputs written before failing


def test_prediction_drift_matches_numpy_and_em(duck, tmp_path):
    stats = _training(duck)
    rng = np.random.default_rng(5)
    n = 5000
    y = rng.random(n) < 0.3  # serving prior 30 % vs 10 % in training
    x = rng.normal(np.where(y, 2.0, 0.0), 1.0)
    p1 = 0.1 * np.exp(-0.5 * (x - 2) ** 2)
    p0 = 0.9 * np.exp(-0.5 * x**2)
    probs = np.stack([p0, p1], axis=1) / (p0 + p1)[:, None]
    preds = pa.table(
        {"id": np.arange(n), "class_id": probs.argmax(1), "probabilities": list(probs)}
    )
    pref = duck.load("preds", preds)
    fresh = duck.load("fresh", _rows(n, 2))
    result = run_monitoring(
        duck.uri(fresh), stats, tmp_path / "out", predictions_uri=duck.uri(pref), run_id="r"
    )
    pred = result.report["prediction"]
    assert pred["predicted_share"]["1"] == pytest.approx(float((probs.argmax(1) == 1).mean()))
    assert pred["mean_probability"]["1"] == pytest.approx(float(probs[:, 1].mean()), abs=1e-12)
    assert pred["em_prior"]["1"] == pytest.approx(y.mean(), abs=0.03)
    assert pred["alert"] and any(a.startswith("prior shift") for a in result.alerts)


def test_bad_input_names_the_problem_and_writes_nothing(duck, tmp_path):
    stats = _training(duck)
    store_path = tmp_path / "store.db"
    store = DuckDBStatisticsStore(store_path)
    no_x = duck.load("no_x", _rows(100, 2).drop_columns(["x"]))
    with pytest.raises(SchemaError, match="no column 'x'"):
        run_monitoring(duck.uri(no_x), stats, tmp_path / "a", store=store, run_id="r")
    empty = duck.load("empty", _rows(10, 2).slice(0, 0))
    with pytest.raises(PipelineInputError, match="has no rows"):
        run_monitoring(duck.uri(empty), stats, tmp_path / "b", store=store, run_id="r")
    wrong = duck.load("wrong", _rows(100, 2).set_column(1, "x", pa.array(["a"] * 100)))
    with pytest.raises(SchemaError, match="'x'.*STRING"):
        run_monitoring(duck.uri(wrong), stats, tmp_path / "c", store=store, run_id="r")
    fresh = duck.load("fresh", _rows(100, 2))
    with pytest.raises(PipelineInputError, match="unknown feature"):
        run_monitoring(
            duck.uri(fresh),
            stats,
            tmp_path / "d",
            run_id="r",
            config=MonitorConfig(thresholds={"nope": 0.2}),
        )
    with pytest.raises(PipelineInputError, match="does not exist"):
        run_monitoring(
            duck.uri(fresh),
            stats,
            tmp_path / "e",
            run_id="r",
            predictions_uri=duck.uri(fresh.with_table("missing_preds")),
        )
    assert not any((tmp_path / d).exists() for d in "abcde")
    assert store.previous("no_x", "other") is None and store.previous("empty", "x") is None


def test_bigquery_skew_and_statistics_table_store(bq, duck, tmp_path):
    # Training statistics from DuckDB (the fake returns no ARRAY results, which the quantile
    # query needs); BigQuery counts the scored tables over those bins.
    engine = bq
    stats = _training(duck)
    engine._con.execute("CREATE SCHEMA stats")
    store = BigQueryStatisticsStore("test-project.stats.feature_statistics", engine.warehouse)
    fresh = engine.load("fresh", _rows(3000, 2))
    shifted = engine.load("shifted", _rows(3000, 3, x_shift=2.0, colors=(0.1, 0.2, 0.7)))
    first = run_monitoring(
        engine.uri(fresh),
        stats,
        tmp_path / "a",
        store=store,
        series="s",
        run_id="r1",
        warehouse=engine.warehouse,
    )
    assert first.alerts == []
    second = run_monitoring(
        engine.uri(shifted),
        stats,
        tmp_path / "b",
        store=store,
        series="s",
        run_id="r2",
        warehouse=engine.warehouse,
    )
    assert second.report["drift"]["previous_run_id"] == "r1"
    assert {a.split("'")[1] for a in second.alerts} == {"x", "color"}
    rows = engine._con.execute("SELECT run_id FROM stats.feature_statistics ORDER BY 1").fetchall()
    assert rows == [("r1",), ("r2",)]


def test_predictions_in_another_duckdb_file_are_read_there_and_the_input_is_untouched(
    duck, tmp_path
):
    """Locally the predictions live in the run's work database, the scored rows in the user's
    file: the monitor attaches the work database read-only; the user's file stays byte-identical
    and the figures equal those of one file holding both tables."""
    import hashlib

    import duckdb

    stats = _training(duck)
    rng = np.random.default_rng(8)
    probs = rng.dirichlet([4.0, 1.0], 3000)
    preds = pa.table(
        {"id": np.arange(3000), "class_id": probs.argmax(1), "probabilities": list(probs)}
    )
    rows = _rows(3000, 4)
    together = run_monitoring(
        duck.uri(duck.load("scored", rows)),
        stats,
        tmp_path / "one",
        predictions_uri=duck.uri(duck.load("predictions_run", preds)),
    )
    user, work = tmp_path / "user.duckdb", tmp_path / "work.duckdb"
    for path, name, table in ((user, "scored", rows), (work, "predictions_run", preds)):
        with duckdb.connect(str(path)) as con:
            con.register("t", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM t")
    before = hashlib.sha256(user.read_bytes()).hexdigest()
    apart = run_monitoring(
        f"duckdb://{user}?table=scored",
        stats,
        tmp_path / "two",
        predictions_uri=f"duckdb://{work}?table=predictions_run",
    )
    assert hashlib.sha256(user.read_bytes()).hexdigest() == before
    # equal to rounding: DuckDB's parallel aggregates sum in a varying order
    assert_close(apart.report["prediction"], together.report["prediction"])
    assert_close(apart.report["skew"], together.report["skew"])
    with pytest.raises(
        PipelineInputError, match=r"predictions table nope does not exist in .*work"
    ):
        run_monitoring(
            f"duckdb://{user}?table=scored",
            stats,
            tmp_path / "three",
            predictions_uri=f"duckdb://{work}?table=nope",
        )
    with pytest.raises(PipelineInputError, match="must be in the same warehouse"):
        run_monitoring(
            f"duckdb://{user}?table=scored",
            stats,
            tmp_path / "four",
            predictions_uri="bq://p.d.predictions",
        )
    assert not (tmp_path / "three").exists() and not (tmp_path / "four").exists()
    assert hashlib.sha256(user.read_bytes()).hexdigest() == before


def assert_close(got, want, path="report"):
    """Nested dicts/lists equal, floats to 1e-9 relative (summation order varies)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), path
    else:
        assert got == want, path
