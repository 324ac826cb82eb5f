"""evaluate_model on a tiny exported model and in-memory Arrow tables; sklearn as the oracle."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest_models import build_tiny_model, make_table
from sklearn import metrics as skm

from vertex_imbalanced.artifacts import METRICS_FILE, REPORT_FILE
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import EvaluationError, LabelError, PipelineInputError
from vertex_imbalanced.evaluation.evaluate import evaluate_model, load_model, scalar_metrics
from vertex_imbalanced.evaluation.vertex_schema import (
    CLASSIFICATION_SCHEMA_URI,
    check_vertex_evaluation,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource

BINARY = ["neg", "pos"]
THREE = ["a", "b", "c"]


def _spec(classes):
    return FeatureSpec(
        label="label", numeric=("x",), categorical=("color",), key="id", classes=tuple(classes)
    )


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "binary", BINARY)


@pytest.fixture(scope="module")
def three_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "three", THREE)


def _predict(model_dir, table):
    """Oracle predictions: the model's own signature on the whole table at once."""
    import tensorflow as tf

    serve = load_model(model_dir).serve
    out = serve(
        x=tf.constant(table["x"].to_numpy(), tf.float32),
        color=tf.constant(table["color"].to_pylist()),
    )
    return out["probabilities"].numpy()


def test_binary_metrics_threshold_and_files_match_sklearn(binary_model, tmp_path):
    test = make_table(BINARY, [900, 100], seed=1)
    val = make_table(BINARY, [450, 50], seed=2)
    res = evaluate_model(
        binary_model,
        ArrowTableSource(test, batch_rows=128, name="test_tbl"),
        ArrowTableSource(val, batch_rows=128, name="val_tbl"),
        _spec(BINARY),
        BINARY,
        tmp_path / "out",
        batch_size=300,
    )
    m = res.metrics
    y = np.array([BINARY.index(v) for v in test["label"].to_pylist()])
    p = _predict(binary_model, test)
    pred = p.argmax(1)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-6)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p[:, 1]), abs=1e-6)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p), abs=1e-6)
    # The threshold comes from the validation split, never from the test split.
    yv = np.array([BINARY.index(v) for v in val["label"].to_pylist()])
    pv = _predict(binary_model, val)[:, 1]
    prec, rec, thr = skm.precision_recall_curve(yv, pv)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    assert m["validation"]["best_f1"] == pytest.approx(f1.max(), abs=1e-6)
    t = m["best_threshold"]
    assert skm.f1_score(yv, pv >= t) == pytest.approx(f1.max(), abs=1e-6)
    at = m["test_at_best_threshold"]
    assert at["f1"] == pytest.approx(skm.f1_score(y, p[:, 1] >= t), abs=1e-6)
    # Files: metrics.json round-trips, Vertex file is well-formed, report is there.
    on_disk = json.loads(res.metrics_path.read_text())
    assert on_disk["macro_f1"] == m["macro_f1"] and on_disk["classes"] == BINARY
    assert res.report_path.read_text().startswith("<!DOCTYPE html>")
    vertex = json.loads(res.vertex_evaluation_path.read_text())
    check_vertex_evaluation(vertex)
    assert vertex["metrics"]["auRoc"] == pytest.approx(m["roc_auc"])
    scalars = scalar_metrics(m)
    assert scalars["test_macro_f1"] == m["macro_f1"]
    assert scalars["test_class_pos_recall"] == m["per_class"]["pos"]["recall"]
    assert "test_at_threshold_f1" in scalars


def test_vertex_file_is_read_by_gcpc_importer_and_parses_as_model_evaluation(three_model, tmp_path):
    from google.cloud.aiplatform_v1.types import ModelEvaluation
    from google_cloud_pipeline_components.container._implementation.model_evaluation import (
        import_model_evaluation as importer,
    )

    res = evaluate_model(
        three_model,
        ArrowTableSource(make_table(THREE, [300, 120, 40], seed=3)),
        None,
        _spec(THREE),
        THREE,
        tmp_path,
    )
    overall, slices = importer.read_metrics_from_file(
        str(res.vertex_evaluation_path), "classification"
    )
    assert [importer.to_slice(s["singleOutputSlicingSpec"])["value"] for s in slices] == THREE
    doc = json.loads(res.vertex_evaluation_path.read_text())
    ev = ModelEvaluation.from_json(
        json.dumps({"metricsSchemaUri": doc["metricsSchemaUri"], "metrics": doc["metrics"]})
    )
    assert ev.metrics_schema_uri == CLASSIFICATION_SCHEMA_URI
    rows = [list(r) for r in ev.metrics["confusionMatrix"]["rows"]]
    assert rows == res.metrics["confusion_matrix"]
    assert [s["displayName"] for s in ev.metrics["confusionMatrix"]["annotationSpecs"]] == THREE
    assert len(ev.metrics["confidenceMetrics"]) == 25
    assert overall["metrics"].struct_value["logLoss"] == pytest.approx(res.metrics["log_loss"])


def test_class_absent_from_test_split_is_reported(three_model, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_model(
            three_model,
            ArrowTableSource(make_table(THREE, [200, 80, 0], seed=4)),
            None,
            _spec(THREE),
            THREE,
            tmp_path,
        )
    assert res.metrics["per_class"]["c"]["support"] == 0
    assert any("'c' is absent" in n for n in res.metrics["notes"])
    assert any("'c' is absent" in str(w.message) for w in caught)
    assert "is absent" in res.report_path.read_text()


def test_nan_predictions_name_the_batch_and_write_nothing(binary_model, tmp_path):
    table = make_table(BINARY, [300, 100], seed=5)
    x = table["x"].to_numpy().copy()
    x[600 - 300] = np.nan  # row 300 -> batch 1 of 256-row batches
    table = table.set_column(1, "x", pa.array(x))
    out = tmp_path / "out"
    out.mkdir()
    (out / METRICS_FILE).write_text("{}")  # a stale file from an earlier run
    with pytest.raises(EvaluationError, match=r"batch 1 \(rows 256-399\) of test split nan_tbl"):
        evaluate_model(
            binary_model,
            ArrowTableSource(table, name="nan_tbl"),
            None,
            _spec(BINARY),
            BINARY,
            out,
            batch_size=256,
        )
    assert not (out / METRICS_FILE).exists()
    assert not (out / REPORT_FILE).exists()


def test_model_classes_differ_from_prepared_classes(binary_model, tmp_path):
    with pytest.raises(
        LabelError, match=r"trained for classes \['neg', 'pos'\].*\['a', 'b', 'c'\]"
    ):
        evaluate_model(
            binary_model,
            ArrowTableSource(make_table(THREE, [5, 5, 5])),
            None,
            _spec(THREE),
            THREE,
            tmp_path,
        )


def test_test_label_outside_model_classes(binary_model, tmp_path):
    table = make_table(["neg", "maybe"], [20, 3], seed=6)
    with pytest.raises(LabelError, match="maybe"):
        evaluate_model(binary_model, ArrowTableSource(table), None, _spec(BINARY), BINARY, tmp_path)


def test_empty_test_split(binary_model, tmp_path):
    empty = make_table(BINARY, [0, 0])
    with pytest.raises(PipelineInputError, match="test split empty_tbl is empty"):
        evaluate_model(
            binary_model,
            ArrowTableSource(empty, name="empty_tbl"),
            None,
            _spec(BINARY),
            BINARY,
            tmp_path,
        )


def test_missing_and_corrupt_model(tmp_path, binary_model):
    source = ArrowTableSource(make_table(BINARY, [5, 5]))
    with pytest.raises(PipelineInputError, match="has no saved_model/saved_model.pb"):
        evaluate_model(tmp_path / "nope", source, None, _spec(BINARY), BINARY, tmp_path / "o")
    corrupt = tmp_path / "corrupt"
    (corrupt / "saved_model").mkdir(parents=True)
    (corrupt / "saved_model" / "saved_model.pb").write_bytes(b"not a protobuf")
    (corrupt / "model_metadata.json").write_text(json.dumps({"classes": BINARY}))
    with pytest.raises(PipelineInputError, match="cannot load the SavedModel"):
        evaluate_model(corrupt, source, None, _spec(BINARY), BINARY, tmp_path / "o")
    no_meta = tmp_path / "no_meta"
    (no_meta / "saved_model").mkdir(parents=True)
    (no_meta / "saved_model" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(PipelineInputError, match="cannot read 'classes' from model_metadata.json"):
        evaluate_model(no_meta, source, None, _spec(BINARY), BINARY, tmp_path / "o")
    assert not (tmp_path / "o" / METRICS_FILE).exists()
