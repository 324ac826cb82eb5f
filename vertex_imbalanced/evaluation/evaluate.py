"""Evaluate an exported model on the untouched test split; write metrics, Vertex format and HTML.

The test split is read as it is (never downsampled, no weights) through
:func:`vertex_imbalanced.reading.datasets.make_dataset` and the model's ``serving_default`` signature on the raw
feature dict; only O(classes²) state is kept (see :mod:`vertex_imbalanced.evaluation.metrics`). For a binary
problem the decision threshold maximising F1 is chosen on the **validation** split and the test
metrics at that threshold are reported next to the argmax ones.

Outputs in ``output_dir`` (written only once everything has been computed, ``metrics.json``
last, so a failed evaluation never leaves a complete-looking artifact):

* ``metrics.json`` — the schema of docs/ARCHITECTURE.md (gate and registries read it);
* ``vertex_evaluation.json`` — Vertex AI ModelEvaluation for the classification schema
  (``metricsSchemaUri`` + ``metrics``) and the same as ``slicedMetrics`` (overall slice + one
  slice per class), the file format GCPC's model-evaluation importer reads
  (:func:`vertex_imbalanced.evaluation.vertex_schema.to_vertex_evaluation`, checked before writing);
* ``report.html`` — self-contained report (:mod:`vertex_imbalanced.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vertex_imbalanced.artifacts import (
    METRICS_FILE,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PROTO,
    VERTEX_EVALUATION_FILE,
    model_metadata_path,
)
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import EvaluationError, LabelError, PipelineInputError
from vertex_imbalanced.evaluation.metrics import ClassificationAccumulator, ScoreCurve
from vertex_imbalanced.evaluation.report import render_report
from vertex_imbalanced.evaluation.vertex_schema import check_vertex_evaluation, to_vertex_evaluation
from vertex_imbalanced.reading.sources.base import RecordBatchSource

_OUTPUT_FILES = (METRICS_FILE, VERTEX_EVALUATION_FILE, REPORT_FILE)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_model` computed and where it wrote it."""

    metrics: dict[str, Any]
    metrics_path: Path
    vertex_evaluation_path: Path
    report_path: Path


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """The serving signature of an exported model and its metadata."""

    model_dir: Path
    serve: Any
    input_names: tuple[str, ...]
    classes: tuple[str, ...]
    metadata: dict[str, Any]
    handle: Any = dataclasses.field(default=None, repr=False)
    """The loaded SavedModel object; keeps the variables the signature uses alive."""


def load_model(model_dir: str | Path) -> LoadedModel:
    """Load ``<model_dir>/saved_model`` (signature ``serving_default``) and its metadata.

    Raises:
        PipelineInputError: the directory, SavedModel or metadata is missing or unreadable.
    """
    model_dir = Path(model_dir)
    saved = model_dir / SAVED_MODEL_DIR
    meta_path = model_metadata_path(model_dir)
    if not (saved / SAVED_MODEL_PROTO).is_file():
        raise PipelineInputError(
            f"model artifact {model_dir} has no {SAVED_MODEL_DIR}/{SAVED_MODEL_PROTO} "
            "(expected the output directory of the train step)"
        )
    try:
        metadata = json.loads(meta_path.read_text())
        classes = tuple(str(c) for c in metadata["classes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineInputError(
            f"model artifact {model_dir}: cannot read 'classes' from {meta_path.name}: {exc}"
        ) from exc
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(saved))
        serve = loaded.signatures["serving_default"]
    except KeyError as exc:
        raise PipelineInputError(
            f"SavedModel {saved} has no 'serving_default' signature "
            f"(has {sorted(loaded.signatures)})"
        ) from exc
    except Exception as exc:  # protobuf/TF raise many types for a corrupt file
        raise PipelineInputError(f"cannot load the SavedModel at {saved}: {exc}") from exc
    inputs = tuple(sorted(serve.structured_input_signature[1]))
    return LoadedModel(model_dir, serve, inputs, classes, metadata, loaded)


def _open(source: RecordBatchSource | str, spec: FeatureSpec) -> RecordBatchSource:
    if not isinstance(source, str):
        return source
    from vertex_imbalanced.reading.sources.open import open_source

    return open_source(source, list(spec.read_columns))


def _predict_batches(
    model: LoadedModel, source: RecordBatchSource, spec: FeatureSpec, batch_size: int, split: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(labels, probabilities)`` per batch; checks inputs, shapes and NaN."""
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset, raise_source_errors

    missing = [name for name in model.input_names if name not in spec.features]
    if missing:
        raise PipelineInputError(
            f"model {model.model_dir} needs inputs {missing} that the feature spec does not read "
            f"from {source.description}"
        )
    ds = make_dataset(source, spec, FeedOptions(batch_size=batch_size), classes=model.classes)
    row = 0
    with raise_source_errors():
        for index, (features, labels, _weight) in enumerate(ds):
            outputs = model.serve(**{name: features[name] for name in model.input_names})
            if "probabilities" not in outputs:
                raise EvaluationError(
                    f"serving_default of {model.model_dir} returns {sorted(outputs)}, "
                    "not 'probabilities'"
                )
            probs = outputs["probabilities"].numpy()
            y = labels.numpy()
            end = row + len(y) - 1
            if probs.shape != (len(y), len(model.classes)):
                raise EvaluationError(
                    f"batch {index} (rows {row}-{end}) of {split} split {source.description}: "
                    f"probabilities of shape {probs.shape}, expected ({len(y)}, "
                    f"{len(model.classes)}) for classes {list(model.classes)}"
                )
            bad = ~np.isfinite(probs).all(axis=1)
            if bad.any():
                first = row + int(np.argmax(bad))
                raise EvaluationError(
                    f"batch {index} (rows {row}-{end}) of {split} split {source.description}: "
                    f"the model returned NaN/inf probabilities for {int(bad.sum())} rows "
                    f"(first at row {first}); check the inputs of those rows"
                )
            row += len(y)
            yield y, probs


def _best_threshold(
    model: LoadedModel, source: RecordBatchSource, spec: FeatureSpec, batch_size: int
) -> tuple[dict[str, Any], list[str]]:
    curve = ScoreCurve()
    n = 0
    for y, probs in _predict_batches(model, source, spec, batch_size, "validation"):
        curve.update(probs[:, 1], y == 1)
        n += len(y)
    best = curve.best_f1_threshold() if n else None
    info = {"num_examples": n, "best_threshold": None, "best_f1": None, "exact": curve.exact}
    if best is None:
        return info, [
            f"validation split {source.description} has no positive examples: no best threshold"
        ]
    info["best_threshold"], info["best_f1"] = best
    return info, []


def compute_metrics(
    model: LoadedModel,
    test_source: RecordBatchSource,
    validation_source: RecordBatchSource | None,
    spec: FeatureSpec,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Stream the splits through the model and return the metrics dict (no files written).

    Raises:
        PipelineInputError: the test split is empty.
        EvaluationError: NaN / infinite / mis-shaped predictions (names the batch).
        LabelError: a label outside the model's classes (names the value and row key).
    """
    notes: list[str] = []
    validation: dict[str, Any] | None = None
    threshold = None
    if len(model.classes) == 2 and validation_source is not None:
        validation, notes = _best_threshold(model, validation_source, spec, batch_size)
        threshold = validation["best_threshold"]
    acc = ClassificationAccumulator(model.classes, threshold=threshold)
    for y, probs in _predict_batches(model, test_source, spec, batch_size, "test"):
        acc.update(y, probs)
    if acc.num_examples == 0:
        raise PipelineInputError(
            f"test split {test_source.description} is empty: nothing to evaluate"
        )
    metrics = acc.result()
    metrics["notes"] = [*metrics["notes"], *notes]
    if acc.binary:
        metrics["best_threshold"] = threshold
        metrics["validation"] = validation
    metrics["test_source"] = test_source.description
    metrics["model_dir"] = str(model.model_dir)
    return metrics


def evaluate_model(
    model_dir: str | Path,
    test_source: RecordBatchSource | str,
    validation_source: RecordBatchSource | str | None,
    spec: FeatureSpec,
    classes: Sequence[str],
    output_dir: str | Path,
    batch_size: int = 4096,
) -> EvaluationResult:
    """Evaluate the exported model and write ``metrics.json``, Vertex JSON and ``report.html``.

    Args:
        model_dir: the train step's model directory (``saved_model/``, ``model_metadata.json``).
        test_source: test split, a source or a URI for ``open_source``.
        validation_source: validation split (binary best-F1 threshold), or None.
        spec: feature spec of the source columns (no weight column is read).
        classes: class names in id order, as prepared; must equal the model's classes.
        output_dir: directory for the three files (created).
        batch_size: rows per prediction batch.

    Returns:
        The metrics and the paths written.

    Raises:
        PipelineInputError: missing/corrupt model, empty test split, bad inputs.
        LabelError: the model's classes differ from ``classes`` or from the test labels.
        EvaluationError: NaN predictions (the error names the batch and rows).
    """
    out = Path(output_dir)
    _clear(out)  # a stale metrics.json must not outlive a failed rerun
    model = load_model(model_dir)
    classes = tuple(str(c) for c in classes)
    if model.classes != classes:
        raise LabelError(
            f"model {model.model_dir} was trained for classes {list(model.classes)} but the "
            f"prepared data declares {list(classes)}; evaluate with the matching model"
        )
    spec = dataclasses.replace(spec.with_weight(None), classes=classes)
    test = _open(test_source, spec)
    validation = None if validation_source is None else _open(validation_source, spec)
    metrics = compute_metrics(model, test, validation, spec, batch_size)
    vertex = to_vertex_evaluation(metrics)
    check_vertex_evaluation(vertex)
    html = render_report(metrics, title=f"Evaluation of {model.model_dir.name}")
    paths = _write_all(
        out,
        {
            VERTEX_EVALUATION_FILE: json.dumps(vertex, indent=1),
            REPORT_FILE: html,
            METRICS_FILE: json.dumps(_json_safe(metrics), indent=1, sort_keys=True),
        },
    )
    return EvaluationResult(
        metrics, paths[METRICS_FILE], paths[VERTEX_EVALUATION_FILE], paths[REPORT_FILE]
    )


def _clear(out: Path) -> None:
    for name in _OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)


def _write_all(out: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Write every file to a temporary name first, then rename them (``metrics.json`` last)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: out / f".{name}.tmp" for name in files}
    for name, text in files.items():
        tmp[name].write_text(text, encoding="utf-8")
    for name in files:
        os.replace(tmp[name], out / name)
    return {name: out / name for name in files}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --- Helpers for the KFP component -----------------------------------------------------------


def roc_points(metrics: Mapping[str, Any]) -> tuple[list[float], list[float], list[float]]:
    """Thinned ROC curve ``(fpr, tpr, thresholds)`` of a binary evaluation for KFP's UI.

    The curve's first point has threshold +inf (nothing predicted positive); it is given as 1.0.
    """
    roc = metrics["curves"]["roc"]
    thresholds = [1.0 if t is None else min(float(t), 1.0) for t in roc["thresholds"]]
    return list(roc["fpr"]), list(roc["tpr"]), thresholds


# --- KFP scalar metrics ----------------------------------------------------------------------

_SCALARS = (
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "weighted_f1",
    "weighted_precision",
    "weighted_recall",
    "accuracy",
    "log_loss",
    "roc_auc",
    "pr_auc",
    "micro_roc_auc",
    "micro_pr_auc",
    "best_threshold",
)


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """Flat scalars for ``Output[Metrics]``, named to sort together in the Vertex run compare.

    ``test_macro_f1``, ``test_accuracy``, ..., ``test_at_threshold_f1`` and per class
    ``test_class_<name>_{f1,precision,recall}`` (name reduced to ``[A-Za-z0-9_]``).
    """
    out: dict[str, float] = {}
    for key in _SCALARS:
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    at = metrics.get("test_at_best_threshold")
    if at:
        for key in ("f1", "precision", "recall", "macro_f1"):
            out[f"{prefix}at_threshold_{key}"] = float(at[key])
    for name, row in metrics["per_class"].items():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
        for key in ("f1", "precision", "recall"):
            out[f"{prefix}class_{safe}_{key}"] = float(row[key])
    return out
