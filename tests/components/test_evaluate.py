"""The evaluate component under kfp.local: DuckDB splits, a tiny model dir, every output."""

import json
from pathlib import Path

import duckdb
import pytest
from conftest_models import build_tiny_model, make_table
from kfp import dsl, local
from kfp.dsl import Dataset, Model

from components.evaluate import evaluate
from vertex_imbalanced.artifacts import METRICS_FILE, VERTEX_EVALUATION_FILE
from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec
from vertex_imbalanced.evaluation.vertex_schema import check_vertex_evaluation

CLASSES = ["ok", "fraud"]


@dsl.pipeline
def evaluate_pipeline(model_uri: str, prepared_uri: str):
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
    prepared = dsl.importer(artifact_uri=prepared_uri, artifact_class=Dataset, reimport=False)
    evaluate(
        model=model.output,
        prepared_data=prepared.output,
        batch_size=256,
        model_name="fraud-model",
        run_name="run-42",
        dataset="bq://proj.ds.payments",
    )


def _prepared(tmp_path: Path) -> Path:
    db = tmp_path / "warehouse.db"
    con = duckdb.connect(str(db))
    for name, seed in (("test", 1), ("validation", 2), ("train", 3)):
        con.register("t", make_table(CLASSES, [400, 40], seed=seed))
        weight = f", 1.0 AS {WEIGHT_COLUMN}" if name == "train" else ""
        con.execute(f"CREATE TABLE {name} AS SELECT *{weight} FROM t")
        con.unregister("t")
    con.close()
    spec = FeatureSpec(label="label", numeric=("x",), categorical=("color",), key="id")
    path = tmp_path / "prepared.json"
    path.write_text(
        json.dumps(
            {
                "train_uri": f"duckdb://{db}?table=train",
                "validation_uri": f"duckdb://{db}?table=validation",
                "test_uri": f"duckdb://{db}?table=test",
                "classes": CLASSES,
                "spec": spec.to_dict(),
                "split_counts": {"test": {"ok": 400, "fraud": 40}},
                "imbalance": {},
            }
        )
    )
    return path


def test_evaluate_component_writes_all_outputs(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model", CLASSES)
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    evaluate_pipeline(model_uri=str(model_dir), prepared_uri=str(_prepared(tmp_path)))

    (metrics_file,) = root.rglob(METRICS_FILE)
    metrics = json.loads(metrics_file.read_text())
    assert metrics["num_examples"] == 440
    assert metrics["classes"] == CLASSES and metrics["operating_point"]["kind"] == "argmax"
    assert set(metrics["baselines"]) == {"prior", "logistic_regression"}
    assert metrics["baselines"]["logistic_regression"]["train_rows"] == 440
    assert metrics["context"]["model_name"] == "fraud-model"
    assert metrics["context"]["split_counts"] == {"test": {"ok": 400, "fraud": 40}}
    vertex = json.loads((metrics_file.parent / VERTEX_EVALUATION_FILE).read_text())
    check_vertex_evaluation(vertex)
    assert vertex["metrics"]["confusionMatrix"]["rows"] == metrics["confusion_matrix"]
    (html,) = [p for p in root.rglob("report") if p.is_file()]  # Output[HTML] is one file
    assert html.read_text().startswith("<!DOCTYPE html>")
    page = html.read_text()
    assert "<h1>fraud-model on bq://proj.ds.payments, predicting label</h1>" in page
    assert "run run-42" in page
    # The executor output records the metadata logged on Metrics / ClassificationMetrics.
    (executor_output,) = [
        p for p in root.rglob("executor_output.json") if "evaluate" in str(p.parent)
    ]
    artifacts = json.loads(executor_output.read_text())["artifacts"]
    scalars = artifacts["metrics"]["artifacts"][0]["metadata"]
    assert scalars["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert scalars["test_baseline_logistic_regression_macro_f1"] == pytest.approx(
        metrics["baselines"]["logistic_regression"]["macro_f1"]
    )
    assert scalars["test_baseline_prior_macro_f1"] == pytest.approx(
        metrics["baselines"]["prior"]["macro_f1"]
    )
    cm = artifacts["classification_metrics"]["artifacts"][0]["metadata"]
    assert [s["displayName"] for s in cm["confusionMatrix"]["annotationSpecs"]] == CLASSES
    assert [r["row"] for r in cm["confusionMatrix"]["rows"]] == metrics["confusion_matrix"]
    assert len(cm["confidenceMetrics"]) >= 2
