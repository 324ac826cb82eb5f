"""run_local.py end to end: the whole pipeline under kfp.local on the demo table.

Three runs against one registry, on the same rows: the demo source (the session's shared demo
run, tests/pipelines/conftest.py), then the demo's DuckDB file as ``--source`` in both table
forms (``table=demo`` and ``table=main.demo``, module fixtures in that order); the third run's
gate is set out of reach.
"""

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from demo_runs import DEMO_ROWS as ROWS
from demo_runs import DEMO_TRAIN as TRAIN
from demo_runs import run_local_main as run

from pipelines.local_run import STEPS, build_summary
from vertex_imbalanced.errors import PipelineRunError

# The demo run (20k rows, 10 epochs) measured macro F1 0.92. A model that misses the 1 % class
# scores <= 0.65, a majority-class model 0.32: the floor separates them with room for noise.
MACRO_F1_FLOOR = 0.80


def registry_listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def source_argv(table, train, min_metric):
    roles = ["--label", "label", "--key", "id"]
    return ["--source", table, *roles, *train, "--min-metric", min_metric]


# Each run is its own fixture, so that a test's setup holds only the runs it reads (a test's
# timeout covers its setup: the three runs in one fixture came near it on a loaded machine).
@pytest.fixture(scope="module")
def plain(demo_run):
    """The demo's DuckDB file as ``--source ...?table=demo``, into the demo's registry."""
    db = demo_run["out_dir"] / "demo.duckdb"
    hash_before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = run(
        source_argv(f"duckdb://{db}?table=demo", TRAIN, "0.5"),
        demo_run["base"] / "plain",
        demo_run["registry"],  # this module goes on registering into the demo's registry
    )
    return {"result": result, "hash_before": hash_before, "listing": listing(demo_run)}


@pytest.fixture(scope="module")
def qualified(demo_run, plain):
    """``--source ...?table=main.demo`` after ``plain``, with the gate out of reach."""
    db = demo_run["out_dir"] / "demo.duckdb"
    # what this run proves (the schema-qualified source, the same rows, a rejecting gate) does
    # not depend on how long it trains: one epoch
    one_epoch = ["--epochs", "1", *TRAIN[2:]]
    result = run(
        source_argv(f"duckdb://{db}?table=main.demo", one_epoch, "0.9999"),
        demo_run["base"] / "qualified",
        demo_run["registry"],
    )
    return {"result": result, "hash_after": hashlib.sha256(db.read_bytes()).hexdigest()}


def listing(demo_run):
    return registry_listing(demo_run["registry"])


def assert_step_lines(lines, skipped=()):
    """One ``[i/6] task ...`` line and one ``task: success in N s`` line per step that ran."""
    for i, task in enumerate(STEPS, start=1):
        if task in skipped:
            assert f"      {task} skipped: the gate did not pass, nothing registered" in lines
            assert not any(task in line and "success" in line for line in lines)
            continue
        start = lines.index(f"[{i}/{len(STEPS)}] {task} ...")
        done = next(
            n
            for n, line in enumerate(lines)
            if re.fullmatch(rf"      {task}: success in \d+\.\d s", line)
        )
        assert start < done


@pytest.mark.slow
def test_demo_run_learns_and_prints_the_promised_lines(demo_run):
    rc, lines, summary = demo_run["result"]
    assert rc == 0, lines
    assert lines[0].startswith("output: ") and "   registry: " in lines[0]
    assert_step_lines(lines)
    metrics = summary["metrics"]
    assert metrics["macro_f1"] >= MACRO_F1_FLOOR
    assert min(row["recall"] for row in metrics["per_class"].values()) > 0.5  # every class found
    splits = summary["data"]["split_counts"]
    assert (
        f"data: demo data ({ROWS} rows); splits "
        + ", ".join(f"{k}={sum(splits[k].values())}" for k in ("train", "validation", "test"))
        in lines
    )
    assert (
        f"test: macro F1 {metrics['macro_f1']:.4f}  weighted F1 {metrics['weighted_f1']:.4f}  "
        f"accuracy {metrics['accuracy']:.4f}"
    ) in lines
    for name in ("0", "1", "2"):
        assert any(
            re.fullmatch(rf" +{name}: precision [\d.]+ recall [\d.]+ f1 [\d.]+ support \d+", line)
            for line in lines
        )
    assert f"gate: PASSED - {summary['gate']['reason']}" in lines
    reg = summary["registered"]
    assert f"registered: {reg['name']} version 1 {reg['aliases']} at {reg['path']}" in lines
    assert f"report: {summary['paths']['report']}" in lines
    assert re.fullmatch(r"summary: .*/demo/summary\.json  \(\d+\.\d s\)", lines[-1])
    assert set(summary["step_seconds"]) == set(STEPS)


@pytest.mark.slow
def test_summary_holds_data_metrics_gate_registration_and_paths(demo_run):
    _, _, first = demo_run["result"]
    registry = demo_run["registry"]
    data = first["data"]
    assert sum(sum(c.values()) for c in data["split_counts"].values()) == ROWS
    assert set(data["keep_rates"]) == set(data["class_counts"]) == {"0", "1", "2"}
    assert data["keep_rates"]["0"] < 1.0  # the majority class was downsampled
    assert data["kept_counts"]["0"] < data["class_counts"]["0"]
    # upweighting restores the majority's mass
    assert data["weighted_counts"]["0"] == pytest.approx(data["class_counts"]["0"], rel=0.05)
    assert data["imbalance_mode"] == "downsample_upweight"
    # the demo key is unique and never NULL: counted, and nothing to warn about
    key = data["data_checks"]["key"]
    assert key["row_count"] == key["distinct_keys"] == ROWS
    assert key["null_keys"] == key["shared_key_rows"] == 0
    assert data["data_checks"]["warnings"] == [] and data["data_checks"]["id_like"] == {}
    metrics = first["metrics"]
    assert set(metrics["per_class"]) == {"0", "1", "2"}
    assert set(metrics["per_class"]["2"]) >= {"precision", "recall", "f1", "support"}
    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == sum(data["split_counts"]["test"].values())
    assert set(metrics["calibration"]) == {"0", "1", "2"}
    assert first["gate"]["passed"] is True
    assert "no champion" in first["gate"]["reason"]
    assert first["registered"]["version"] == "1"
    assert first["registered"]["path"].startswith(str(registry))
    for key in ("report", "model", "metrics", "run_dir"):
        assert Path(first["paths"][key]).exists(), key
    assert "<html" in Path(first["paths"]["report"]).read_text().lower()


@pytest.mark.slow
def test_duckdb_source_repeats_the_split_and_is_gated_against_the_first_champion(demo_run, plain):
    _, _, first = demo_run["result"]
    rc, lines, second = plain["result"]
    assert rc == 0, lines
    assert (
        second["source"]
        == f"duckdb://{Path(first['paths']['run_dir']).parents[1]}/demo.duckdb?table=demo"
    )
    assert second["data"] == first["data"]  # same rows, same deterministic split
    assert second["metrics"]["macro_f1"] == pytest.approx(first["metrics"]["macro_f1"], abs=1e-6)
    assert second["metrics"]["confusion_matrix"] == first["metrics"]["confusion_matrix"]
    assert "champion" in second["gate"]["reason"]
    assert "no champion" not in second["gate"]["reason"]
    assert second["registered"]["version"] == "2"
    assert "champion" in second["registered"]["aliases"]
    # no --model-name: the name is derived from the table and label, the same for both runs
    assert second["registered"]["name"] == first["registered"]["name"] == "demo-label"
    versions = sorted(
        p.name for p in (demo_run["registry"] / "demo-label").iterdir() if p.name.isdigit()
    )
    assert versions == ["1", "2"]


@pytest.mark.slow
def test_the_users_duckdb_file_is_byte_identical_after_two_runs_read_it(plain, qualified):
    assert qualified["hash_after"] == plain["hash_before"]
    rc, lines, second = plain["result"]
    work = Path(second["paths"]["run_dir"]).parents[1] / "source.duckdb"
    assert work.is_file()  # the run's own work database got the copy and the splits


@pytest.mark.slow
def test_schema_qualified_duckdb_source_and_a_rejecting_gate_register_nothing(
    demo_run, plain, qualified
):
    _, _, first = demo_run["result"]
    rc, lines, third = qualified["result"]
    assert rc == 0, lines
    assert third["source"].endswith("?table=main.demo")
    assert third["data"] == first["data"]
    assert third["gate"]["passed"] is False
    assert third["registered"] is None
    assert_step_lines(lines, skipped=("register",))
    assert f"gate: REJECTED - {third['gate']['reason']}" in lines
    assert "registered: nothing" in lines
    assert not (Path(third["paths"]["run_dir"]) / "register").exists()  # kfp.local's skip
    assert listing(demo_run) == plain["listing"]  # as the run before it left it


@pytest.mark.slow
def test_gate_passed_but_nothing_registered_is_an_error(plain, tmp_path):
    """The guard behind the kfp.local ``dsl.If`` patch: a skipped register after a pass fails."""
    _, _, second = plain["result"]
    run_dir = Path(second["paths"]["run_dir"])
    assert build_summary(run_dir, "x")["registered"]["version"] == "2"
    # The same run as kfp.local leaves it when it skips the branch (see the rejected run):
    # every task's output, no register directory.
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("register"))
    with pytest.raises(
        PipelineRunError, match=r"the gate passed but the register task did not run"
    ):
        build_summary(copy, "x")


@pytest.mark.slow
def test_failing_task_stops_the_run_names_it_and_leaves_the_registry_alone(demo_run, tmp_path):
    from pipelines.local_run import run_pipeline
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb

    registry = demo_run["registry"]
    before = registry_listing(registry)
    uri = write_demo_duckdb(tmp_path / "demo.duckdb", rows=500, seed=1, table="demo")
    arguments = {
        "source_uri": uri,
        "feature_config": DEMO_SPEC.to_json(),
        "hyperparameters": json.dumps({"epochs": 1, "no_such_setting": 3}),
        "registry_uri": f"local://{registry}",
    }
    (tmp_path / "out").mkdir()
    with pytest.raises(PipelineRunError) as info:
        run_pipeline(arguments, tmp_path / "out", echo=io.StringIO())
    message = str(info.value)
    assert "task 'train' failed" in message
    assert "no_such_setting" in message
    assert registry_listing(registry) == before
