import inspect
import json

import duckdb
import pytest
from kfp import local

from components.prepare_data import prepare_data
from vertex_imbalanced.config import DEFAULT_IMBALANCE_MODE
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb
from vertex_imbalanced.warehouse.prepare import PreparedData


@pytest.fixture()
def local_runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    yield


def test_prepare_data_component_runs_under_kfp_local(tmp_path, local_runner):
    uri = write_demo_duckdb(tmp_path / "demo.db", rows=5000, seed=11)
    task = prepare_data(
        source_uri=uri,
        feature_config=DEMO_SPEC.to_json(),
        output_prefix="job-123",
        max_ratio=4.0,
    )
    prepared_artifact = task.outputs["prepared"]
    with open(prepared_artifact.path) as f:
        prepared = PreparedData.from_json(f.read())
    assert prepared.train_uri.endswith("?table=job_123_train")
    assert prepared.classes == ("0", "1", "2")
    meta = prepared_artifact.metadata
    assert meta["classes"] == ["0", "1", "2"]
    assert meta["imbalance"]["mode"] == "downsample_upweight"
    assert meta["split_counts"] == json.loads(json.dumps(prepared.split_counts))
    metrics = task.outputs["imbalance_metrics"].metadata
    report = prepared.imbalance_report
    for name in prepared.classes:
        assert metrics[f"kept_count_{name}"] == report.kept_counts[name]
        assert metrics[f"keep_rate_{name}"] == pytest.approx(report.keep_rates[name])
    assert metrics["train_rows_kept"] < metrics["train_rows_original"]
    with duckdb.connect(str(tmp_path / "demo.db"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"demo", "job_123_train", "job_123_validation", "job_123_test"}


def test_bad_input_fails_the_task_and_writes_nothing(tmp_path, local_runner, capfd):
    uri = write_demo_duckdb(tmp_path / "demo.db", rows=500, seed=1)
    spec = json.dumps({"label": "label", "key": "id", "numeric": ["x_1"]})
    # kfp.local reports any failed task as a RuntimeError; the task's own error is in its output
    with pytest.raises(
        RuntimeError, match=r"Task \S*prepare-data\S* finished with status \S*FAILURE"
    ):
        prepare_data(source_uri=uri, feature_config=spec, output_prefix="bad")
    out, err = capfd.readouterr()
    error = (
        "vertex_imbalanced.errors.SchemaError: table demo has no column 'x_1'; did you mean 'x1'?"
    )
    assert error in out + err
    with duckdb.connect(str(tmp_path / "demo.db"), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert tables == ["demo"]


def test_component_default_mode_is_the_config_default():
    # a lightweight component's source is re-run in its container: its default is a literal
    default = inspect.signature(prepare_data.python_func).parameters["imbalance_mode"].default
    assert default == DEFAULT_IMBALANCE_MODE
