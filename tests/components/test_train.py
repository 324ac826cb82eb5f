"""The train component under kfp.local: real prepare_data on DuckDB, then train."""

import json

import pytest
from kfp import dsl, local
from kfp.dsl import Dataset

from components.train import train
from vertex_imbalanced.artifacts import MODEL_METADATA_FILE
from vertex_imbalanced.config import ImbalanceConfig
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.trainer import backup_dir_for
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb
from vertex_imbalanced.warehouse.prepare import prepare_data

HP = {"hidden_units": [8], "epochs": 2, "batch_size": 128}


@dsl.pipeline
def train_pipeline(prepared_uri: str, hyperparameters: str):
    prepared = dsl.importer(artifact_uri=prepared_uri, artifact_class=Dataset, reimport=False)
    train(prepared_data=prepared.output, hyperparameters=hyperparameters, num_streams=1)


@pytest.fixture
def prepared_uri(tmp_path):
    uri = write_demo_duckdb(tmp_path / "demo.db", 3000, seed=5)
    prepared = prepare_data(
        uri, DEMO_SPEC, output_prefix="run1", imbalance=ImbalanceConfig(mode="downsample_upweight")
    )
    path = tmp_path / "prepared.json"
    path.write_text(prepared.to_json())
    return str(path), prepared


def test_train_component_writes_model_and_metrics(tmp_path, prepared_uri):
    path, prepared = prepared_uri
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    train_pipeline(prepared_uri=path, hyperparameters=json.dumps(HP))
    (meta_file,) = root.rglob(MODEL_METADATA_FILE)
    model_dir = meta_file.parent
    assert (model_dir / "saved_model" / "saved_model.pb").exists()
    assert (model_dir / "model.keras").exists()
    meta = json.loads(meta_file.read_text())
    assert meta["classes"] == ["0", "1", "2"]
    assert meta["training_weight_column"] == "sample_weight"
    assert meta["imbalance"]["mode"] == "downsample_upweight"
    kept = sum(prepared.imbalance["kept_counts"].values())
    assert meta["training_metrics"]["train_rows_per_epoch"] == kept
    assert meta["training_metrics"]["epochs_run"] == 2
    weighted = sum(prepared.imbalance["weighted_counts"].values())
    assert meta["training_metrics"]["train_weighted_rows"] == pytest.approx(weighted, rel=1e-4)
    assert meta["decision_rule"]["chosen_on"] == "validation"
    assert meta["serving_inputs"] == {c: c for c in prepared.spec.features}
    budget = meta["training_budget"]
    assert (budget["batch_size"], budget["epochs_source"]) == (128, "user")
    assert not list(root.rglob("*.partial")) and not list(root.rglob("*.backup"))


def test_train_component_bad_hyperparameters_fail_before_writing(tmp_path, prepared_uri, capfd):
    path, _ = prepared_uri
    root = tmp_path / "root"
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    # kfp.local reports any failed task as a RuntimeError; the task's own error is in its output
    failed = r"Pipeline \S*train-pipeline\S* finished with status \S*FAILURE\S*\. Inner task failed: \S*train\b"
    with pytest.raises(RuntimeError, match=failed):
        train_pipeline(prepared_uri=path, hyperparameters=json.dumps({"hiden_units": [8]}))
    out, err = capfd.readouterr()
    error = "vertex_imbalanced.errors.PipelineInputError: unknown hyperparameters ['hiden_units']"
    assert error in out + err
    assert not list(root.rglob(MODEL_METADATA_FILE))


def test_backup_dir_prefers_vertex_checkpoint_dir():
    assert backup_dir_for("/gcs/b/run/train/model", {}) == "/gcs/b/run/train/model.backup"
    env = {"AIP_CHECKPOINT_DIR": "gs://b/job/checkpoints"}
    assert backup_dir_for("/gcs/b/model", env) == "gs://b/job/checkpoints"
    with pytest.raises(PipelineInputError, match="unknown hyperparameters"):
        from vertex_imbalanced.config import Hyperparameters

        Hyperparameters.from_dict({"hiden_units": [8]})
