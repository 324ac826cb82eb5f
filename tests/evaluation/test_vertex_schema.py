"""The one metrics -> Vertex ModelEvaluation converter against its validator; sklearn as oracle."""

from __future__ import annotations

import base64
import copy
import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from fakes.vertex import classification_metrics_problem
from vertex_imbalanced.errors import UndefinedMetricWarning, VertexSchemaError
from vertex_imbalanced.evaluation.metrics import ClassificationAccumulator
from vertex_imbalanced.evaluation.vertex_schema import (
    CLASSIFICATION_SCHEMA_URI,
    check_classification_metrics,
    check_vertex_evaluation,
    metrics_from_classification,
    overall_classification_metrics,
    to_classification_metrics,
    to_vertex_evaluation,
)


def _metrics(
    classes: list[str], n: int = 600, seed: int = 0
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Our metrics dict of random skewed labels / probabilities, and those labels / probs."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.choice(k, size=n, p=np.linspace(3, 1, k) / np.linspace(3, 1, k).sum())
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    acc = ClassificationAccumulator(classes)
    acc.update(y, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return acc.result(), y, probs


@pytest.fixture(scope="module")
def binary():
    return _metrics(["neg", "pos"], seed=1)


@pytest.fixture(scope="module")
def three():
    return _metrics(["a", "b", "c"], seed=2)


def test_binary_conversion_passes_the_validator_and_matches_sklearn(binary):
    metrics, y, probs = binary
    doc = to_vertex_evaluation(metrics)
    check_vertex_evaluation(doc)
    check_vertex_evaluation(json.loads(json.dumps(doc)))  # what the file holds
    assert doc["metricsSchemaUri"] == CLASSIFICATION_SCHEMA_URI
    overall = doc["metrics"]
    matrix = overall["confusionMatrix"]
    assert matrix["annotationSpecs"] == [
        {"id": "0", "displayName": "neg"},
        {"id": "1", "displayName": "pos"},
    ]
    assert matrix["rows"] == skm.confusion_matrix(y, probs.argmax(axis=1)).tolist()
    assert all(type(v) is int for row in matrix["rows"] for v in row)
    assert overall["auPrc"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]))
    assert overall["auRoc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert overall["logLoss"] == pytest.approx(skm.log_loss(y, probs), rel=1e-6)
    entry = next(e for e in overall["confidenceMetrics"] if e["confidenceThreshold"] == 0.5)
    predicted = probs[:, 1] >= 0.5
    assert entry["truePositiveCount"] == int((predicted & (y == 1)).sum())
    assert entry["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert entry["precision"] == pytest.approx(skm.precision_score(y, predicted))
    # overall slice first, then one slice per class named by its base64 bytes
    names = [s["singleOutputSlicingSpec"].get("bytesValue") for s in doc["slicedMetrics"]]
    assert names == [None, *(base64.b64encode(c.encode()).decode() for c in ("neg", "pos"))]
    assert doc["slicedMetrics"][0]["metrics"]["classification"] == overall
    assert classification_metrics_problem(overall) is None  # the fake service accepts it


def test_multiclass_conversion_is_micro_averaged(three):
    metrics, y, probs = three
    overall = to_classification_metrics(metrics)
    check_classification_metrics(overall)
    onehot = np.eye(3)[y]
    assert overall["auPrc"] == pytest.approx(
        skm.average_precision_score(onehot, probs, average="micro")
    )
    assert overall["auRoc"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="micro"))
    assert [s["id"] for s in overall["confusionMatrix"]["annotationSpecs"]] == ["0", "1", "2"]
    top = next(e for e in overall["confidenceMetrics"] if e["confidenceThreshold"] == 0.0)
    assert top["precisionAt1"] == pytest.approx(skm.accuracy_score(y, probs.argmax(axis=1)))


def test_compact_metrics_convert_without_confidence_metrics():
    # the registry's copy of metrics.json without threshold_counts, read back from Vertex:
    # integral floats become counts, null / NaN scalars are left out
    compact = {
        "classes": ["neg", "pos"],
        "confusion_matrix": [[90.0, 5.0], [5.0, 10.0]],
        "roc_auc": 0.9,
        "pr_auc": None,
        "log_loss": float("nan"),
    }
    overall = to_classification_metrics(compact)
    check_classification_metrics(overall)
    assert overall == {
        "confusionMatrix": {
            "annotationSpecs": [
                {"id": "0", "displayName": "neg"},
                {"id": "1", "displayName": "pos"},
            ],
            "rows": [[90, 5], [5, 10]],
        },
        "auRoc": 0.9,
    }
    assert [type(v) for v in overall["confusionMatrix"]["rows"][0]] == [int, int]
    assert [
        s["singleOutputSlicingSpec"] for s in to_vertex_evaluation(compact)["slicedMetrics"]
    ] == [{}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"confusion_matrix": [[1, 2, 3], [4, 5, 6]]}, r"'confusion_matrix' must be 2x2"),
        ({"confusion_matrix": [[1, 2], [3]]}, r"must be 2x2"),
        ({"confusion_matrix": [[1, 2.5], [3, 4]]}, r"'confusion_matrix'\[0\]\[1\] is 2.5"),
        ({"confusion_matrix": [[1, -2], [3, 4]]}, r"\[0\]\[1\] is -2; it must be a count"),
        ({"classes": []}, r"non-empty 'classes'"),
        ({"classes": None}, r"non-empty 'classes'"),
    ],
)
def test_converter_refuses_bad_metrics(change, message):
    metrics = {"classes": ["neg", "pos"], "confusion_matrix": [[3, 1], [0, 2]]} | change
    with pytest.raises(VertexSchemaError, match=message):
        to_classification_metrics(metrics)


def _good() -> dict:
    return to_vertex_evaluation(
        {"classes": ["neg", "pos"], "confusion_matrix": [[3, 1], [0, 2]], "roc_auc": 0.75}
    )


def _set(doc: dict, path: str, value) -> dict:
    """``doc`` with the value at a dotted path (list indices as numbers) replaced."""
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()
_MATRIX = "metrics.confusionMatrix"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # the two ways the old converters disagreed, and KFP's UI format
        (
            f"{_MATRIX}.annotationSpecs.0.id",
            _DELETE,
            r"annotationSpecs\[0\]\.id must be a non-empty",
        ),
        (f"{_MATRIX}.rows.1.0", 0.0, r"rows\[1\]\[0\] is 0\.0; it must be a count"),
        (f"{_MATRIX}.rows.0", {"row": [3, 1]}, r"rows\[0\] must be a list of 2 counts"),
        (f"{_MATRIX}.rows.0.1", -1, r"rows\[0\]\[1\] is -1"),
        (f"{_MATRIX}.rows.0.1", True, r"rows\[0\]\[1\] is True"),
        (f"{_MATRIX}.rows", [[3, 1]], r"rows must be 2 lists"),
        (f"{_MATRIX}.annotationSpecs.1.id", "0", r"ids must be distinct"),
        (f"{_MATRIX}.annotationSpecs.0.displayName", "", r"displayName must be a non-empty"),
        (f"{_MATRIX}.annotationSpecs.0.name", "x", r"annotationSpecs\[0\] has fields \['name'\]"),
        (f"{_MATRIX}.annotationSpecs", [], r"annotationSpecs must be a non-empty list"),
        ("metrics.auRoc", float("nan"), r"metrics\.auRoc is nan; Vertex needs a finite number"),
        ("metrics.auRoc", "0.7", r"metrics\.auRoc is '0.7'"),
        ("metrics.accuracy", 0.9, r"metrics has fields \['accuracy'\]"),
        ("metrics.confidenceMetrics", {}, r"confidenceMetrics must be a list"),
        ("metrics.confidenceMetrics", [{"recall": 0.5, "tp": 3}], r"\[0\] has fields \['tp'\]"),
        (
            "metrics.confidenceMetrics",
            [{"truePositiveCount": 2.5}],
            r"confidenceMetrics\[0\]\.truePositiveCount is 2\.5; it must be a count",
        ),
        ("metricsSchemaUri", "gs://x/regression.yaml", r"metricsSchemaUri is 'gs://x/regression"),
        (
            "slicedMetrics.0.singleOutputSlicingSpec",
            {"bytesValue": "bmVn"},
            r"exactly for the first",
        ),
        (
            "slicedMetrics.0.metrics.classification",
            {"auPrc": "high"},
            r"slicedMetrics\[0\]\.metrics\.classification\.auPrc is 'high'",
        ),
        ("rows", [], r"vertex evaluation has fields \['rows'\]"),
    ],
)
def test_validator_names_the_field_at_fault(path, value, message):
    check_vertex_evaluation(_good())
    with pytest.raises(VertexSchemaError, match=message):
        check_vertex_evaluation(_set(_good(), path, value))


def test_validator_checks_later_slices_and_their_names():
    doc = _good()
    doc["slicedMetrics"].append(
        {
            "singleOutputSlicingSpec": {"bytesValue": "not base64!"},
            "metrics": {"classification": {}},
        }
    )
    with pytest.raises(VertexSchemaError, match=r"slicedMetrics\[1\].*not base64"):
        check_vertex_evaluation(doc)
    doc["slicedMetrics"][1]["singleOutputSlicingSpec"] = {}
    with pytest.raises(VertexSchemaError, match=r"slicedMetrics\[1\].*exactly for the first"):
        check_vertex_evaluation(doc)


def test_overall_metrics_of_each_accepted_document():
    overall = _good()["metrics"]
    sliced = {"slicedMetrics": _good()["slicedMetrics"]}
    for doc in (_good(), sliced, overall):
        assert overall_classification_metrics(doc) == overall
    with pytest.raises(VertexSchemaError, match="empty slicedMetrics"):
        overall_classification_metrics({"slicedMetrics": []})


def test_metrics_from_classification_match_sklearn(three):
    metrics, y, probs = three
    # as Vertex hands it back: protobuf Value numbers are doubles
    stored = to_classification_metrics(metrics)
    stored["confusionMatrix"]["rows"] = [[float(v) for v in r] for r in metrics["confusion_matrix"]]
    back = metrics_from_classification(stored)
    pred = probs.argmax(axis=1)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert back["classes"] == ["a", "b", "c"]
    assert back["confusion_matrix"] == metrics["confusion_matrix"]
    assert (back["macro_precision"], back["macro_recall"], back["macro_f1"]) == pytest.approx(
        (p, r, f)
    )
    assert back["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for key in ("macro_f1", "weighted_f1", "accuracy"):
        assert back[key] == pytest.approx(metrics[key])
    assert metrics_from_classification({"auPrc": 0.5}) == {}
