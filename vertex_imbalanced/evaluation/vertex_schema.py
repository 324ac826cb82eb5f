"""Our metrics in Vertex AI's ModelEvaluation classification schema: the one converter and checker.

Vertex AI documents the schema ``classification_metrics_1.0.0.yaml``
(``google.cloud.aiplatform.v1.schema.modelevaluation.metrics.ClassificationEvaluationMetrics``)::

    {"auPrc": float, "auRoc": float, "logLoss": float,
     "confusionMatrix": {"annotationSpecs": [{"id": str, "displayName": str}, ...],
                         "rows": [[count, ...], ...]},      # rows[i][j]: true i, predicted j
     "confidenceMetrics": [{"confidenceThreshold": float, "recall": float, ...,
                            "truePositiveCount": int64, ...}, ...]}

Every field is optional; the service rejects a document whose fields have the wrong shape
("400 Invalid Metrics Format"), e.g. KFP's ``[{"row": [..]}]`` confusion-matrix rows.

* :func:`to_classification_metrics` — our ``metrics.json`` dict to that schema (overall slice);
* :func:`to_vertex_evaluation` — the evaluate step's ``vertex_evaluation.json`` (``metricsSchemaUri``
  + ``metrics`` + ``slicedMetrics``, the file GCPC's model-evaluation importer reads);
* :func:`check_classification_metrics` / :func:`check_vertex_evaluation` — the validators;
* :func:`overall_classification_metrics` — the overall metrics of any of the accepted documents;
* :func:`metrics_from_classification` — back from the schema to our accuracy / P / R / F1 keys.

Our conventions on top of the schema (checked too): every annotation spec has an ``id`` (the
class index as a string) and a non-empty ``displayName``; confusion-matrix cells and the
``*Count`` fields are counts (non-negative integers).
"""

from __future__ import annotations

import base64
import binascii
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from vertex_imbalanced.errors import UndefinedMetricWarning, VertexSchemaError
from vertex_imbalanced.evaluation.metrics import summarize_confusion

CLASSIFICATION_SCHEMA_URI = (
    "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
)

_SCALARS = ("auPrc", "auRoc", "logLoss")
_CONFIDENCE_FLOATS = frozenset(
    {
        "confidenceThreshold",
        "recall",
        "precision",
        "falsePositiveRate",
        "f1Score",
        "f1ScoreMicro",
        "f1ScoreMacro",
        "recallAt1",
        "precisionAt1",
        "falsePositiveRateAt1",
        "f1ScoreAt1",
    }
)
_CONFIDENCE_COUNTS = frozenset(
    {
        "maxPredictions",
        "truePositiveCount",
        "falsePositiveCount",
        "falseNegativeCount",
        "trueNegativeCount",
    }
)
_CLASSIFICATION_FIELDS = frozenset({*_SCALARS, "confidenceMetrics", "confusionMatrix"})
_CONFIDENCE_FIELDS = _CONFIDENCE_FLOATS | _CONFIDENCE_COUNTS | {"confusionMatrix"}
_DOCUMENT_FIELDS = frozenset({"metricsSchemaUri", "metrics", "slicedMetrics"})


# --- our metrics -> the schema -----------------------------------------------------------------


def _counts_matrix(metrics: Mapping[str, Any]) -> tuple[list[str], list[list[int]]]:
    """``(classes, confusion matrix as counts)`` of our metrics dict, checked."""
    classes = metrics.get("classes")
    matrix = metrics.get("confusion_matrix")
    if not isinstance(classes, Sequence) or isinstance(classes, str) or not classes:
        raise VertexSchemaError(f"metrics need a non-empty 'classes' list, got {classes!r}")
    classes = [str(c) for c in classes]
    n = len(classes)
    if (
        not isinstance(matrix, list)
        or len(matrix) != n
        or any(not isinstance(row, list) or len(row) != n for row in matrix)
    ):
        raise VertexSchemaError(
            f"metrics 'confusion_matrix' must be {n}x{n} for classes {classes}, got {matrix!r}"
        )
    rows = []
    for i, row in enumerate(matrix):
        out = []
        for j, value in enumerate(row):
            if not _is_count(value, strict=False):
                raise VertexSchemaError(
                    f"metrics 'confusion_matrix'[{i}][{j}] is {value!r}; it must be a count "
                    "(a non-negative integer)"
                )
            out.append(int(value))
        rows.append(out)
    return classes, rows


def _confidence_metrics(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Schema ``confidenceMetrics`` from our threshold rows (``threshold``, ``tp`` ... ``tn``)."""
    out = []
    for r in rows:
        tp, fp, fn, tn = (int(r[k]) for k in ("tp", "fp", "fn", "tn"))
        out.append(
            {
                "confidenceThreshold": float(r["threshold"]),
                "precision": tp / (tp + fp) if tp + fp else 1.0,  # nothing predicted: PR's (0, 1)
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "falsePositiveRate": fp / (fp + tn) if fp + tn else 0.0,
                "f1Score": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
                "truePositiveCount": tp,
                "falsePositiveCount": fp,
                "falseNegativeCount": fn,
                "trueNegativeCount": tn,
            }
        )
    return out


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def to_classification_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The overall classification metrics (Vertex schema) of our ``metrics.json`` dict.

    Binary: ``auPrc`` / ``auRoc`` / ``confidenceMetrics`` are those of the positive class
    (``classes[1]``, the same numbers as ``pr_auc`` / ``roc_auc``); multiclass: micro-averaged
    one-vs-rest (``micro_pr_auc`` / ``micro_roc_auc``), as the schema defines them for the
    overall evaluation, plus the top-1 ``precisionAt1`` / ``recallAt1`` / ``f1ScoreAt1``.
    ``confidenceMetrics`` need ``threshold_counts`` (absent from compact copies: then left out);
    null / NaN / infinite scalars are left out.

    Args:
        metrics: needs ``classes`` (n names) and ``confusion_matrix`` (n x n counts, rows =
            true class); uses ``log_loss``, ``pr_auc``, ``roc_auc``, ``micro_pr_auc``,
            ``micro_roc_auc`` and ``threshold_counts`` when present.

    Returns:
        A dict that passes :func:`check_classification_metrics`.

    Raises:
        VertexSchemaError: ``classes`` or ``confusion_matrix`` missing, misshapen or not counts.
    """
    classes, rows = _counts_matrix(metrics)
    binary = len(classes) == 2
    out: dict[str, Any] = {
        "confusionMatrix": {
            "annotationSpecs": [{"id": str(i), "displayName": c} for i, c in enumerate(classes)],
            "rows": rows,
        }
    }
    counts = metrics.get("threshold_counts")
    if counts:
        if binary:
            confidence = _confidence_metrics(counts["per_class"][classes[1]])
        else:
            confidence = _confidence_metrics(counts["overall"])
            n = int(metrics["num_examples"])
            for entry, top in zip(confidence, counts["top1"], strict=True):
                made = top["correct"] + top["wrong"]
                p1 = top["correct"] / made if made else 1.0
                r1 = top["correct"] / n if n else 0.0
                entry["precisionAt1"], entry["recallAt1"] = p1, r1
                entry["f1ScoreAt1"] = 2 * p1 * r1 / (p1 + r1) if p1 + r1 else 0.0
        out["confidenceMetrics"] = confidence
    sources = {
        "auPrc": "pr_auc" if binary else "micro_pr_auc",
        "auRoc": "roc_auc" if binary else "micro_roc_auc",
        "logLoss": "log_loss",
    }
    for theirs, ours in sources.items():
        value = _finite_number(metrics.get(ours))
        if value is not None:
            out[theirs] = value
    return out


def _slice_name(name: str) -> dict[str, str]:
    return {"bytesValue": base64.b64encode(name.encode()).decode("ascii")}


def to_vertex_evaluation(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluate step's ``vertex_evaluation.json`` document from our metrics dict.

    ``metricsSchemaUri`` and ``metrics`` (:func:`to_classification_metrics`) make it a
    ModelEvaluation; ``slicedMetrics`` repeats the overall metrics (slicing spec ``{}``) and adds
    one slice per class (``bytesValue`` = base64 of the class name) with that class's
    one-vs-rest ``confidenceMetrics`` when ``threshold_counts`` is present.

    Raises:
        VertexSchemaError: as :func:`to_classification_metrics`.
    """
    overall = to_classification_metrics(metrics)
    sliced = [{"singleOutputSlicingSpec": {}, "metrics": {"classification": overall}}]
    per_class = (metrics.get("threshold_counts") or {}).get("per_class") or {}
    for name, rows in per_class.items():
        sliced.append(
            {
                "singleOutputSlicingSpec": _slice_name(str(name)),
                "metrics": {"classification": {"confidenceMetrics": _confidence_metrics(rows)}},
            }
        )
    return {
        "metricsSchemaUri": CLASSIFICATION_SCHEMA_URI,
        "metrics": overall,
        "slicedMetrics": sliced,
    }


# --- validators --------------------------------------------------------------------------------


def _is_count(value: Any, *, strict: bool = True) -> bool:
    """Whether ``value`` is a non-negative integer (unless ``strict``: or an integral float).

    Non-strict is for metrics read back from Vertex, whose protobuf ``Value`` numbers are doubles.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return not strict and isinstance(value, float) and value.is_integer() and value >= 0


def _check_number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VertexSchemaError(f"{where} is {value!r}; Vertex needs a finite number")


def _check_fields(doc: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(doc, Mapping):
        raise VertexSchemaError(f"{where} must be an object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise VertexSchemaError(
            f"{where} has fields {unknown} that the schema does not define "
            f"(allowed: {sorted(allowed)})"
        )


def _check_confusion_matrix(matrix: Any, where: str) -> None:
    _check_fields(matrix, frozenset({"annotationSpecs", "rows"}), where)
    specs = matrix.get("annotationSpecs")
    if not isinstance(specs, list) or not specs:
        raise VertexSchemaError(f"{where}.annotationSpecs must be a non-empty list")
    for i, spec in enumerate(specs):
        _check_fields(spec, frozenset({"id", "displayName"}), f"{where}.annotationSpecs[{i}]")
        for key in ("id", "displayName"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise VertexSchemaError(
                    f"{where}.annotationSpecs[{i}].{key} must be a non-empty string, "
                    f"got {spec.get(key)!r}"
                )
    ids = [spec["id"] for spec in specs]
    if len(set(ids)) != len(ids):
        raise VertexSchemaError(f"{where}.annotationSpecs ids must be distinct, got {ids}")
    rows, n = matrix.get("rows"), len(specs)
    if not isinstance(rows, list) or len(rows) != n:
        raise VertexSchemaError(f"{where}.rows must be {n} lists, one per annotation spec")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n:
            raise VertexSchemaError(
                f"{where}.rows[{i}] must be a list of {n} counts, got {row!r} "
                "(not KFP's [{'row': [...]}] format)"
            )
        for j, value in enumerate(row):
            if not _is_count(value):
                raise VertexSchemaError(
                    f"{where}.rows[{i}][{j}] is {value!r}; it must be a count "
                    "(a non-negative integer)"
                )


def check_classification_metrics(metrics: Any, where: str = "metrics") -> None:
    """Check a dict against the classification schema and our conventions (module docstring).

    Args:
        metrics: the classification metrics (a ModelEvaluation's ``metrics``).
        where: how to name ``metrics`` in errors.

    Raises:
        VertexSchemaError: naming the first field that does not fit (e.g.
            ``metrics.confusionMatrix.rows[1][0]``).
    """
    _check_fields(metrics, _CLASSIFICATION_FIELDS, where)
    for key in _SCALARS:
        if key in metrics:
            _check_number(metrics[key], f"{where}.{key}")
    if "confusionMatrix" in metrics:
        _check_confusion_matrix(metrics["confusionMatrix"], f"{where}.confusionMatrix")
    entries = metrics.get("confidenceMetrics", [])
    if not isinstance(entries, list):
        raise VertexSchemaError(f"{where}.confidenceMetrics must be a list")
    for i, entry in enumerate(entries):
        at = f"{where}.confidenceMetrics[{i}]"
        _check_fields(entry, _CONFIDENCE_FIELDS, at)
        for key, value in entry.items():
            if key in _CONFIDENCE_FLOATS:
                _check_number(value, f"{at}.{key}")
            elif key in _CONFIDENCE_COUNTS and not _is_count(value):
                raise VertexSchemaError(
                    f"{at}.{key} is {value!r}; it must be a count (a non-negative integer)"
                )
        if "confusionMatrix" in entry:
            _check_confusion_matrix(entry["confusionMatrix"], f"{at}.confusionMatrix")


def check_vertex_evaluation(doc: Any) -> None:
    """Check a ``vertex_evaluation.json`` document (what :func:`to_vertex_evaluation` writes).

    ``metricsSchemaUri`` must be the classification schema's; ``metrics`` and every slice's
    ``metrics.classification`` must pass :func:`check_classification_metrics`; a slicing spec is
    ``{}`` (the overall slice, which must come first) or ``{"bytesValue": <base64>}``.

    Raises:
        VertexSchemaError: naming the field that does not fit.
    """
    _check_fields(doc, _DOCUMENT_FIELDS, "vertex evaluation")
    if doc.get("metricsSchemaUri") != CLASSIFICATION_SCHEMA_URI:
        raise VertexSchemaError(
            f"metricsSchemaUri is {doc.get('metricsSchemaUri')!r}; it must be "
            f"{CLASSIFICATION_SCHEMA_URI}"
        )
    check_classification_metrics(doc.get("metrics"), "metrics")
    slices = doc.get("slicedMetrics", [])
    if not isinstance(slices, list):
        raise VertexSchemaError("slicedMetrics must be a list")
    for i, item in enumerate(slices):
        at = f"slicedMetrics[{i}]"
        _check_fields(item, frozenset({"singleOutputSlicingSpec", "metrics"}), at)
        spec = item.get("singleOutputSlicingSpec")
        _check_fields(spec, frozenset({"bytesValue"}), f"{at}.singleOutputSlicingSpec")
        if (i == 0) != (not spec):
            raise VertexSchemaError(
                f"{at}.singleOutputSlicingSpec must be {{}} exactly for the first (overall) slice"
            )
        if spec:
            try:
                base64.b64decode(spec["bytesValue"], validate=True)
            except (binascii.Error, TypeError, ValueError) as err:
                raise VertexSchemaError(
                    f"{at}.singleOutputSlicingSpec.bytesValue is not base64: {err}"
                ) from err
        _check_fields(item.get("metrics"), frozenset({"classification"}), f"{at}.metrics")
        check_classification_metrics(
            item["metrics"].get("classification"), f"{at}.metrics.classification"
        )


# --- reading the schema back -------------------------------------------------------------------


def overall_classification_metrics(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The overall classification metrics of a Vertex evaluation document (not checked).

    Args:
        evaluation: a ModelEvaluation-shaped dict (``{"metricsSchemaUri": ..., "metrics":
            {...}}``), the model-evaluation output format (``{"slicedMetrics":
            [{"singleOutputSlicingSpec": {}, "metrics": {"classification": {...}}}, ...]}``,
            overall slice first, as GCPC's importer reads it), or the classification metrics.

    Returns:
        A copy of the overall classification metrics.

    Raises:
        VertexSchemaError: ``slicedMetrics`` is empty.
    """
    if "metricsSchemaUri" in evaluation and isinstance(evaluation.get("metrics"), Mapping):
        return dict(evaluation["metrics"])
    if "slicedMetrics" in evaluation:
        slices = evaluation["slicedMetrics"]
        if not slices:
            raise VertexSchemaError("vertex evaluation JSON has an empty slicedMetrics")
        metrics = slices[0].get("metrics", {})
        return dict(metrics.get("classification") or next(iter(metrics.values()), {}))
    return dict(evaluation)


def metrics_from_classification(classification: Mapping[str, Any]) -> dict[str, Any]:
    """Our metric keys from a classification schema's confusion matrix ({} without one).

    Used for a registered version whose evaluation carries no copy of our metrics. The numbers
    come from :func:`vertex_imbalanced.evaluation.metrics.summarize_confusion` (accuracy,
    macro / weighted / micro precision, recall, F1, ``per_class``), so they equal those of the
    ``metrics.json`` the matrix came from.

    Returns:
        ``classes``, ``confusion_matrix`` (counts) and the keys of ``summarize_confusion``, or
        ``{}`` when there is no non-empty confusion matrix.
    """
    matrix = classification.get("confusionMatrix") or {}
    rows = matrix.get("rows") or []
    if not rows or not sum(sum(row) for row in rows):
        return {}
    names = [
        str(spec.get("displayName", i)) for i, spec in enumerate(matrix.get("annotationSpecs", []))
    ]
    counts = [[int(v) for v in row] for row in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        summary = summarize_confusion(counts, names)
    return {"classes": names, "confusion_matrix": counts, **summary}
