"""The batch prediction pipeline: compiles offline, and runs locally as ``predict_local.py``.

One module fixture does what the README's local commands do, once: ``run_local.py`` trains the
demo table into a registry (the session's shared demo run, tests/pipelines/conftest.py: 20k
rows, 10 epochs; this module works on a copy of its registry), then ``predict_local.py`` scores

- a fresh sample of the training distribution, written by the test into a user's DuckDB file
  (``--input``): no alert, and the file is byte-identical afterwards;
- ``--demo-shift --adjust-probabilities``: the demo sample with ``x1`` and ``color`` shifted on
  purpose: skew alerts on exactly those two features, and the adjusted probabilities of the
  run's EM prior.

Both runs use the same pipeline definition as Vertex AI under kfp.local: resolve the champion,
score with Beam's DirectRunner, publish into the run's work database, monitor.
"""

import contextlib
import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from conftest_models import build_tiny_model

import predict_local
from pipelines.batch_prediction_pipeline import build_pipeline
from pipelines.local_batch_prediction import STEPS, SUMMARY_FILE, WORK_DB, default_model_name
from pipelines.local_resume import tasks_under
from vertex_imbalanced.monitoring.prior_shift import adjust_probabilities
from vertex_imbalanced.registry.local import LocalRegistry
from vertex_imbalanced.warehouse.demo_data import SHIFTED_FEATURES, write_demo_duckdb

SCORE_ROWS = 3000


def test_compiles_and_validates_offline(tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from kfp import compiler

    path = tmp_path / "batch_prediction_pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(), str(path))
    spec = yaml.safe_load(path.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    required = {n for n, p in params.items() if "defaultValue" not in p}
    # model_name is required: training derives it from its table and label
    assert required == {
        "input_uri",
        "registry_uri",
        "output_location",
        "staging_root",
        "model_name",
    }
    assert params["model_alias"]["defaultValue"] == "champion"
    assert params["adjusted_probabilities"]["defaultValue"] is False
    assert sorted(spec["root"]["dag"]["tasks"]) == [
        "batch-predict",
        "importer",
        "monitor",
        "resolve-model",
    ]
    deps = {t: v.get("dependentTasks", []) for t, v in spec["root"]["dag"]["tasks"].items()}
    assert deps == {
        "resolve-model": [],
        "batch-predict": ["resolve-model"],
        "importer": ["resolve-model"],
        "monitor": ["batch-predict", "importer"],
    }
    job = aiplatform.PipelineJob(
        display_name="t",
        template_path=str(path),
        pipeline_root="gs://bucket/root",
        parameter_values={
            "input_uri": "bq://p.d.t",
            "registry_uri": "vertex://p/us-central1",
            "output_location": "bq://p.d",
            "staging_root": "gs://bucket/staging",
            "model_name": "d.t-label",
        },
        project="p",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )
    assert job._gca_resource.runtime_config.parameter_values["input_uri"] == "bq://p.d.t"


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def predict(argv, out_dir, registry, store):
    """(exit status, stdout lines, stderr, summary or None) of one predict_local.py call."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = predict_local.main(
            [
                *argv,
                "--output-dir",
                str(out_dir),
                "--registry",
                str(registry),
                "--statistics-store",
                str(store),
                "--rows",
                str(SCORE_ROWS),
            ]
        )
    path = out_dir / SUMMARY_FILE
    summary = json.loads(path.read_text()) if path.is_file() else None
    return rc, stdout.getvalue().splitlines(), stderr.getvalue(), summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_registry_v1):
    base = tmp_path_factory.mktemp("predict")
    registry, store = base / "registry", base / "statistics.duckdb"
    # what `make run` registers: the demo table's model under the name derived from its table
    # and label, version 1, the champion (copied: this module must not write the shared one)
    shutil.copytree(demo_registry_v1, registry)
    assert (registry / default_model_name() / "1").is_dir()
    user_db = base / "user.duckdb"
    fresh_uri = write_demo_duckdb(user_db, SCORE_ROWS, seed=23, table="fresh")
    before = sha256(user_db)
    fresh = predict(["--input", fresh_uri], base / "fresh", registry, store)
    after = sha256(user_db)
    shifted = predict(["--demo-shift", "--adjust-probabilities"], base / "shifted", registry, store)
    return {
        "base": base,
        "registry": registry,
        "store": store,
        "user_db": user_db,
        "hashes": (before, after),
        "fresh": fresh,
        "shifted": shifted,
    }


def read_predictions(summary):
    from vertex_imbalanced.batch_prediction.output import parse_destination

    _, table, database = parse_destination(summary["predictions"]["output_uri"])
    with duckdb.connect(database, read_only=True) as con:
        return con.sql(f"SELECT * FROM {table.duckdb}").to_arrow_table(), database


@pytest.mark.slow
def test_fresh_sample_is_scored_into_the_work_database_with_no_alert(runs):
    rc, lines, err, summary = runs["fresh"]
    assert rc == 0, err
    assert summary["alerts"] == [] and "monitoring: 0 alert(s)" in lines
    assert summary["model"]["name"] == default_model_name()
    assert summary["model"]["version"] == "1"
    started = [line.split() for line in lines if line.endswith(" ...")]
    assert [words[0] for words in started] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert sorted(words[1] for words in started) == sorted(STEPS)
    predictions, database = read_predictions(summary)
    assert database == str(runs["base"] / "fresh" / WORK_DB)
    assert predictions.num_rows == summary["predictions"]["rows"] == SCORE_ROWS
    assert "adjusted_probabilities" not in predictions.column_names  # only when asked
    monitoring = json.loads(Path(summary["paths"]["monitoring"]).read_text())
    assert {d["feature"] for d in monitoring["skew"]} == {
        "x1", "x2", "x3", "n_items", "is_member", "color", "region"
    }  # fmt: skip
    assert monitoring["prediction"]["rows"] == SCORE_ROWS  # read across the two files


@pytest.mark.slow
def test_the_users_duckdb_file_is_only_read(runs):
    before, after = runs["hashes"]
    assert before == after
    with duckdb.connect(str(runs["user_db"]), read_only=True) as con:
        assert con.sql("SELECT table_name FROM duckdb_tables()").fetchall() == [("fresh",)]


@pytest.mark.slow
def test_shifted_demo_sample_flags_skew_on_the_shifted_features(runs):
    rc, lines, err, summary = runs["shifted"]
    assert rc == 0, err
    skewed = {a.split("'")[1] for a in summary["alerts"] if a.startswith("skew")}
    assert skewed == set(SHIFTED_FEATURES) == {"x1", "color"}
    assert any(line.startswith("  ALERT skew: feature 'x1'") for line in lines)
    assert summary["input"].startswith("shifted demo sample")


@pytest.mark.slow
def test_adjusted_probabilities_use_the_runs_em_prior(runs):
    _, _, _, summary = runs["shifted"]
    predictions, _ = read_predictions(summary)
    classes = summary["predictions"]["classes"]
    em_prior = summary["predictions"]["em_prior"]
    monitoring = json.loads(Path(summary["paths"]["monitoring"]).read_text())["prediction"]
    # the monitor's EM prior of the published table is the one the column was adjusted to
    np.testing.assert_allclose(
        [monitoring["em_prior"][c] for c in classes], [em_prior[c] for c in classes], atol=1e-9
    )
    train = np.array([monitoring["training_prior"][c] for c in classes])
    probs = np.array(predictions.column("probabilities").to_pylist())
    expected = adjust_probabilities(probs, train / train.sum(), [em_prior[c] for c in classes])
    np.testing.assert_allclose(
        np.array(predictions.column("adjusted_probabilities").to_pylist()), expected, atol=1e-9
    )


def test_an_unknown_model_name_lists_the_registry_models(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    model_dir = build_tiny_model(tmp_path / "model", ("a", "b"))
    registry.register("churn-label", str(model_dir), {"macro_f1": 0.9}, {}, "r", True)
    out = tmp_path / "out"
    rc, _, err, _ = predict(["--model-name", "nope"], out, registry.root, tmp_path / "s.db")
    assert rc == 2
    assert "model 'nope' has no alias 'champion'" in err and "models there: churn-label" in err
    assert not out.exists()  # nothing written
    # a model trained before monitoring existed: one line naming its statistics file
    rc, _, err, _ = predict(["--model-name", "churn-label"], out, registry.root, tmp_path / "s.db")
    assert rc == 2 and "cannot read the training feature statistics" in err
    assert "churn-label" in err and "feature_statistics.json" in err  # names the model's file
    assert not out.exists()


def test_a_stopped_predict_local_stops_its_running_task_and_publishes_nothing(runs):
    """SIGTERM while the scoring task runs: exit 143, no task process left, no predictions."""
    out = runs["base"] / "stopped"
    command = [sys.executable, "predict_local.py", "--demo-shift", "--output-dir", str(out)]
    command += ["--registry", str(runs["registry"]), "--statistics-store", str(runs["store"])]
    command += ["--rows", str(SCORE_ROWS)]
    repo = Path(predict_local.__file__).resolve().parent
    process = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in iter(process.stdout.readline, ""):
            lines.append(line)
            if "batch-predict ..." in line:
                time.sleep(3)  # the scoring task's process is running
                process.send_signal(signal.SIGTERM)
                break
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert tasks_under(out / "pipeline_root") == {}  # the task was stopped with its parent
    time.sleep(2)
    assert not (out / SUMMARY_FILE).exists()
    work_db = out / WORK_DB
    if work_db.exists():  # nothing was published into the run's work database
        with duckdb.connect(str(work_db), read_only=True) as con:
            tables = [r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()]
        assert tables == []
