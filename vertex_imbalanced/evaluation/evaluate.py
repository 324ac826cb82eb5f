"""Evaluate an exported model on the untouched test split; write metrics, Vertex format and HTML.

The test split is read as it is (never downsampled, no weights) through
:func:`vertex_imbalanced.reading.datasets.make_dataset` and the model's ``serving_default``
signature on the raw feature dict; only O(classes²) state is kept (see
:mod:`vertex_imbalanced.evaluation.metrics`).

**Operating point.** The model carries its decision rule in ``model_metadata.json`` under
:data:`DECISION_RULE_KEY` (chosen on the validation split by the train step, see
:mod:`vertex_imbalanced.evaluation.decision_rule`); without one the rule is argmax. The headline
keys of ``metrics.json`` (``macro_f1``, ``macro_precision``, ``accuracy``, ``weighted_*``,
``per_class``, ``confusion_matrix``) are computed at that rule; the argmax figures stay beside
them under ``argmax``, and ``operating_point`` says what the rule is and how it was chosen.
When the signature returns ``class_id`` it must equal the rule's decision on every test row
(up to float32 near-ties), so the figures describe what the served model decides.

**Baselines** (:mod:`vertex_imbalanced.evaluation.baselines`), on the same test rows, under
``baselines``: the class prior and a logistic regression on the model's preprocessed features,
fitted on a bounded sample of the training split and deciding with the same kind of rule chosen
on the validation split.

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
import datetime
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vertex_imbalanced.artifacts import (
    KERAS_FILE,
    METRICS_FILE,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PROTO,
    VERTEX_EVALUATION_FILE,
    check_model_complete,
    model_metadata_path,
)
from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec
from vertex_imbalanced.errors import (
    EvaluationError,
    LabelError,
    PipelineInputError,
    UndefinedMetricWarning,
)
from vertex_imbalanced.evaluation import baselines as bl
from vertex_imbalanced.evaluation.decision_rule import DecisionRule
from vertex_imbalanced.evaluation.metrics import ClassificationAccumulator
from vertex_imbalanced.evaluation.report import render_report
from vertex_imbalanced.evaluation.vertex_schema import check_vertex_evaluation, to_vertex_evaluation
from vertex_imbalanced.reading.sources.base import RecordBatchSource

_LOG = logging.getLogger(__name__)
_OUTPUT_FILES = (METRICS_FILE, VERTEX_EVALUATION_FILE, REPORT_FILE)
DECISION_RULE_KEY = "decision_rule"
"""The key of ``model_metadata.json`` holding the model's decision rule (``DecisionRule.to_dict``)."""
SERVED_CLASS_ID = "class_id"
"""The serving signature's output with the decided class id (checked against the rule)."""
_NEAR_TIE = 1e-5
"""Relative score gap below which the served float32 decision may differ from numpy's."""


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_model` computed and where it wrote it."""

    metrics: dict[str, Any]
    metrics_path: Path
    vertex_evaluation_path: Path
    report_path: Path


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """The serving signature of an exported model, its metadata and decision rule."""

    model_dir: Path
    serve: Any
    input_names: tuple[str, ...]
    classes: tuple[str, ...]
    metadata: dict[str, Any]
    handle: Any = dataclasses.field(default=None, repr=False)
    """The loaded SavedModel object; keeps the variables the signature uses alive."""
    rule: DecisionRule | None = None
    """The decision rule from the metadata (argmax, not chosen, when the model carries none)."""

    @property
    def serving_inputs(self) -> dict[str, str]:
        """Feature column -> signature argument (``model_metadata.json["serving_inputs"]``).

        The column name itself for a model without that key.
        """
        names = self.metadata.get("serving_inputs") or {}
        return {str(k): str(v) for k, v in names.items()} or {n: n for n in self.input_names}

    @property
    def decision_rule(self) -> DecisionRule:
        """:attr:`rule`, or argmax for a model that carries none."""
        return self.rule or DecisionRule.argmax(
            len(self.classes), "argmax: the model carries no decision rule"
        )


def load_model(model_dir: str | Path) -> LoadedModel:
    """Load ``<model_dir>/saved_model`` (signature ``serving_default``), metadata and rule.

    Raises:
        PipelineInputError: the directory, SavedModel or metadata is missing or unreadable, or
            the metadata's decision rule is malformed or does not fit the classes.
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
    rule = _metadata_rule(metadata, classes, meta_path)
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
    return LoadedModel(model_dir, serve, inputs, classes, metadata, loaded, rule)


def _metadata_rule(
    metadata: Mapping[str, Any], classes: Sequence[str], path: Path
) -> DecisionRule | None:
    data = metadata.get(DECISION_RULE_KEY)
    if data is None:
        return None
    try:
        rule = DecisionRule.from_dict(data)
    except PipelineInputError as exc:
        raise PipelineInputError(f"{path}: {DECISION_RULE_KEY!r}: {exc}") from exc
    if rule.num_classes != len(classes):
        raise PipelineInputError(
            f"{path}: {DECISION_RULE_KEY!r} is a rule for {rule.num_classes} classes but the "
            f"model has {len(classes)}: {list(classes)}"
        )
    return rule


def _open(source: RecordBatchSource | str, spec: FeatureSpec) -> RecordBatchSource:
    if not isinstance(source, str):
        return source
    from vertex_imbalanced.reading.sources.open import open_source

    return open_source(source, list(spec.read_columns))


@dataclasses.dataclass(frozen=True)
class _Batch:
    features: Mapping[str, Any]
    labels: np.ndarray
    probabilities: np.ndarray


def _predict_batches(
    model: LoadedModel, source: RecordBatchSource, spec: FeatureSpec, batch_size: int, split: str
) -> Iterator[_Batch]:
    """Yield the raw features, labels and probabilities per batch; checks shapes, NaN, decision."""
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset, raise_source_errors

    served = model.serving_inputs
    missing = [column for column in served if column not in spec.features]
    if missing:
        raise PipelineInputError(
            f"model {model.model_dir} needs inputs {missing} that the feature spec does not read "
            f"from {source.description}"
        )
    unfed = sorted(set(model.input_names) - set(served.values()))
    if unfed:
        raise PipelineInputError(
            f"serving_default of {model.model_dir} takes {unfed}, which no column maps to in "
            "model_metadata.json 'serving_inputs'"
        )
    ds = make_dataset(source, spec, FeedOptions(batch_size=batch_size), classes=model.classes)
    rule = model.decision_rule
    row = 0
    with raise_source_errors():
        for index, (features, labels, _weight) in enumerate(ds):
            outputs = model.serve(**{name: features[column] for column, name in served.items()})
            if "probabilities" not in outputs:
                raise EvaluationError(
                    f"serving_default of {model.model_dir} returns {sorted(outputs)}, "
                    "not 'probabilities'"
                )
            probs = outputs["probabilities"].numpy()
            y = labels.numpy()
            where = f"batch {index} (rows {row}-{row + len(y) - 1}) of {split} split {source.description}"
            if probs.shape != (len(y), len(model.classes)):
                raise EvaluationError(
                    f"{where}: probabilities of shape {probs.shape}, expected ({len(y)}, "
                    f"{len(model.classes)}) for classes {list(model.classes)}"
                )
            bad = ~np.isfinite(probs).all(axis=1)
            if bad.any():
                first = row + int(np.argmax(bad))
                raise EvaluationError(
                    f"{where}: the model returned NaN/inf probabilities for {int(bad.sum())} rows "
                    f"(first at row {first}); check the inputs of those rows"
                )
            if SERVED_CLASS_ID in outputs:
                _check_served_decision(model, rule, probs, outputs[SERVED_CLASS_ID].numpy(), where)
            row += len(y)
            yield _Batch(features, y, probs)


def _check_served_decision(
    model: LoadedModel, rule: DecisionRule, probs: np.ndarray, served: np.ndarray, where: str
) -> None:
    """The served class ids must be the rule's, except at float32 near-ties of the scores."""
    decided = rule.apply(probs)
    served = np.asarray(served).astype(np.int64).ravel()
    differ = np.flatnonzero(decided != served)
    if not differ.size:
        return
    scores = probs[differ].astype(np.float64) @ rule.as_array()
    top = scores[np.arange(differ.size), decided[differ]]
    got = scores[np.arange(differ.size), np.clip(served[differ], 0, scores.shape[1] - 1)]
    real = np.abs(top - got) > _NEAR_TIE * np.maximum(np.abs(top), 1.0)
    real |= (served[differ] < 0) | (served[differ] >= scores.shape[1])
    if real.any():
        i = int(differ[np.argmax(real)])
        raise EvaluationError(
            f"{where}: serving_default of {model.model_dir} returns class_id {served[i]} for "
            f"row {i} of the batch, but the decision rule in {DECISION_RULE_KEY!r} of the model "
            f"metadata ({rule.kind}) decides {decided[i]} ({int(real.sum())} such rows): the "
            "exported signature must apply the rule the model carries"
        )


@dataclasses.dataclass
class _Baselines:
    """The fitted baselines and the notes of what could not be done."""

    prior: np.ndarray | None = None
    featurize: Any = None
    logistic: bl.LogisticBaseline | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def _featurizer(model: LoadedModel) -> tuple[Any, str | None]:
    """``raw feature dict -> [n, d] numpy`` via the model's preprocessed-features sub-model."""
    path = model.model_dir / KERAS_FILE
    if not path.is_file():
        return None, f"no {KERAS_FILE} in {model.model_dir}: no logistic-regression baseline"
    import keras

    try:
        keras_model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for an unreadable file
        return None, f"cannot load {path} ({exc}): no logistic-regression baseline"
    sub = bl.features_model(keras_model)
    if sub is None:
        return None, (
            f"{path} has no preprocessed-features tensor (a layer named "
            f"{' or '.join(bl.FEATURE_LAYERS)}, or a Dense layer's input): no logistic baseline"
        )
    structure = sub.input
    inputs = list(structure) if isinstance(structure, dict) else list(model.serving_inputs)
    import tensorflow as tf

    # One traced graph instead of an eager call per layer per batch (measured on the 1M demo's
    # validation split, 25 batches of 4,096 rows, loaded 2-core machine: eager 1.29 s, traced
    # 0.12 s after a 0.6 s first trace; features equal to 2e-7, float32 rounding).
    # reduce_retracing: the batch dimension becomes None after the second batch size seen.
    compiled = tf.function(lambda batch: sub(batch, training=False), reduce_retracing=True)

    def featurize(features: Mapping[str, Any], rows: np.ndarray | None = None) -> np.ndarray:
        batch = {name: features[name] for name in inputs}
        if rows is not None:
            batch = {name: tf.gather(value, rows) for name, value in batch.items()}
        return np.asarray(compiled(batch), dtype=np.float32)

    return featurize, None


def _train_batches(
    source: RecordBatchSource, spec: FeatureSpec, classes: Sequence[str], batch_size: int
) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset, raise_source_errors

    ds = make_dataset(source, spec, FeedOptions(batch_size=batch_size), classes=classes)
    with raise_source_errors():
        for features, labels, weights in ds:
            yield features, labels.numpy(), weights.numpy().astype(np.float64)


def _fit_baselines(
    model: LoadedModel,
    train: RecordBatchSource | None,
    spec: FeatureSpec,
    batch_size: int,
    max_rows: int,
) -> _Baselines:
    """Read the training split once: the prior, and the logistic regression on a sample."""
    out = _Baselines()
    c = len(model.classes)
    training_data = model.metadata.get("training_data") or {}
    if train is None:
        weighted = training_data.get("weighted_class_counts") or {}
        if weighted:
            out.prior = bl.prior_probabilities(
                np.array([float(weighted.get(name, 0.0)) for name in model.classes])
            )
        out.notes.append("no training split given: no logistic-regression baseline")
        return out
    out.featurize, note = _featurizer(model)
    if note:
        out.notes.append(note)
    names = set(train.schema.names)
    train_spec = spec.with_weight(WEIGHT_COLUMN if WEIGHT_COLUMN in names else None)
    if train_spec.weight is None:
        out.notes.append(f"training split has no {WEIGHT_COLUMN!r} column: baselines unweighted")
    started = time.monotonic()
    featurize = out.featurize or (lambda raw, rows: np.zeros((len(rows), 0), np.float32))
    sample = bl.sample_training_rows(
        _train_batches(train, train_spec, model.classes, batch_size),
        featurize,
        c,
        training_data.get("rows"),
        max_rows=max_rows,
    )
    out.prior = bl.prior_probabilities(sample.class_weight_sums)
    out.info = {
        "train_rows": sample.rows,
        "sampled_rows": int(sample.labels.size),
        "sample_rate": sample.rate,
        "max_rows": max_rows,
        "features": int(sample.features.shape[1]) if sample.features.ndim == 2 else 0,
    }
    if out.featurize is not None and sample.labels.size:
        try:
            out.logistic = bl.fit_logistic(sample, c)
        except ValueError as exc:
            out.notes.append(f"logistic-regression baseline not fitted: {exc}")
    out.info["fit_seconds"] = round(time.monotonic() - started, 3)
    return out


def _baseline_rule(
    model: LoadedModel,
    base: _Baselines,
    validation: RecordBatchSource | None,
    spec: FeatureSpec,
    batch_size: int,
    max_rows: int,
) -> None:
    """Choose the logistic baseline's rule on validation rows, like the model's.

    On a uniform sample of at most ``max_rows`` validation rows (:class:`bl.BoundedSample`):
    only the sample's probabilities and labels are held, whatever the split's size.
    """
    if base.logistic is None:
        return
    rule = model.decision_rule
    if rule.chosen_on != "validation" or validation is None:
        base.logistic.rule = bl.same_kind_rule(rule, np.zeros((0, rule.num_classes)), np.zeros(0))
        return
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset, raise_source_errors

    sample = bl.BoundedSample(max_rows)
    ds = make_dataset(validation, spec, FeedOptions(batch_size=batch_size), classes=model.classes)
    with raise_source_errors():
        for features, y, _ in ds:
            sample.add(base.logistic.predict_proba(base.featurize(features)), y.numpy())
    kept = sample.arrays() or (np.zeros((0, rule.num_classes)), np.zeros(0, np.int64))
    base.logistic.rule = bl.same_kind_rule(rule, *kept)
    base.info["validation_rows_read"] = sample.rows


def compute_metrics(
    model: LoadedModel,
    test_source: RecordBatchSource,
    validation_source: RecordBatchSource | None,
    spec: FeatureSpec,
    batch_size: int = 4096,
    *,
    train_source: RecordBatchSource | None = None,
    baselines: bool = True,
    baseline_max_rows: int = bl.MAX_TRAIN_ROWS,
) -> dict[str, Any]:
    """Stream the splits through the model (and the baselines); return the metrics dict.

    Args:
        model: the loaded model.
        test_source: the test split.
        validation_source: the validation split (the logistic baseline's rule), or None.
        spec: feature roles (no weight column).
        batch_size: rows per batch.
        train_source: the training split (with its weight column) for the baselines, or None.
        baselines: score the prior and logistic-regression baselines.
        baseline_max_rows: most training rows the logistic regression is fitted on, and most
            validation rows its decision rule is chosen on (uniform samples above it).

    Raises:
        PipelineInputError: the test split is empty.
        EvaluationError: NaN / infinite / mis-shaped predictions (names the batch), or a served
            class id that the model's decision rule does not give.
        LabelError: a label outside the model's classes (names the value and row key).
    """
    base = _Baselines()
    started = time.monotonic()
    if baselines:
        base = _fit_baselines(model, train_source, spec, batch_size, baseline_max_rows)
        _baseline_rule(model, base, validation_source, spec, batch_size, baseline_max_rows)
    acc = ClassificationAccumulator(model.classes, rule=model.decision_rule)
    lr_acc = prior_acc = None
    if base.logistic is not None:
        lr_acc = ClassificationAccumulator(model.classes, rule=base.logistic.rule)
    if base.prior is not None:
        prior_acc = ClassificationAccumulator(model.classes)
    for batch in _predict_batches(model, test_source, spec, batch_size, "test"):
        acc.update(batch.labels, batch.probabilities)
        if lr_acc is not None:
            lr_probs = base.logistic.predict_proba(base.featurize(batch.features))
            lr_acc.update(batch.labels, lr_probs)
        if prior_acc is not None:
            prior_acc.update(batch.labels, np.tile(base.prior, (len(batch.labels), 1)))
    if acc.num_examples == 0:
        raise PipelineInputError(
            f"test split {test_source.description} is empty: nothing to evaluate"
        )
    metrics = acc.result()
    if baselines:
        metrics["baselines"] = _baseline_results(prior_acc, lr_acc, base)
        _LOG.info("baselines scored in %.1f s", time.monotonic() - started)
    metrics["notes"] = [*metrics["notes"], *base.notes]
    metrics["test_source"] = test_source.description
    metrics["model_dir"] = str(model.model_dir)
    return metrics


def _baseline_results(
    prior_acc: ClassificationAccumulator | None,
    lr_acc: ClassificationAccumulator | None,
    base: _Baselines,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with warnings.catch_warnings():  # a constant predictor never predicts most classes
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if prior_acc is not None:
            block = bl.baseline_summary(prior_acc.result(), prior_acc.binary)
            block["operating_point"]["method"] = "the majority class of the training prior"
            block["description"] = "training class prior as probabilities; majority class"
            block["prior"] = [float(p) for p in base.prior]
            out[bl.PRIOR] = block
        if lr_acc is not None:
            block = bl.baseline_summary(lr_acc.result(), lr_acc.binary)
            block["description"] = (
                "scikit-learn LogisticRegression (lbfgs, L2 C=1) on the model's preprocessed "
                "features, weighted like the model"
            )
            block.update(base.info)
            out[bl.LOGISTIC] = block
    return out


def model_context(
    model: LoadedModel, spec: FeatureSpec, context: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ``context`` block of ``metrics.json``: what the report's title and data section say.

    Args:
        model: the loaded model (its metadata gives the training facts).
        spec: the evaluated feature spec (label, features and their roles).
        context: what the caller knows: ``dataset``, ``model_name``, ``model_version``,
            ``run``, ``split_counts`` (split -> class -> rows), ``skipped_labels`` (split ->
            rows left out by the label policy); all optional.
    """
    meta = model.metadata
    hp = meta.get("hyperparameters") or {}
    tm = meta.get("training_metrics") or {}
    td = meta.get("training_data") or {}
    out: dict[str, Any] = {
        "dataset": None,
        "model_name": None,
        "model_version": None,
        "run": None,
        "split_counts": None,
    }
    out.update({k: v for k, v in (context or {}).items() if v not in (None, "")})
    out.update(
        label=spec.label,
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        features={
            "numeric": list(spec.numeric),
            "categorical": list(spec.categorical),
            "key": spec.key,
        },
        imbalance=meta.get("imbalance") or {},
        training={
            "rows": td.get("rows"),
            "class_counts": td.get("class_counts"),
            "weighted_class_counts": td.get("weighted_class_counts"),
            "epochs_run": tm.get("epochs_run"),
            "best_epoch": tm.get("best_epoch"),
            "max_epochs": hp.get("epochs"),
            "batch_size": hp.get("batch_size"),
            "learning_rate": hp.get("learning_rate"),
            "budget": meta.get("training_budget"),
        },
    )
    return out


def evaluate_model(
    model_dir: str | Path,
    test_source: RecordBatchSource | str,
    validation_source: RecordBatchSource | str | None,
    spec: FeatureSpec,
    classes: Sequence[str],
    output_dir: str | Path,
    batch_size: int = 4096,
    *,
    train_source: RecordBatchSource | str | None = None,
    baselines: bool = True,
    baseline_max_rows: int = bl.MAX_TRAIN_ROWS,
    context: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Evaluate the exported model and write ``metrics.json``, Vertex JSON and ``report.html``.

    Args:
        model_dir: the train step's model directory (``saved_model/``, ``model.keras``,
            ``model_metadata.json`` with the optional ``decision_rule``).
        test_source: test split, a source or a URI for ``open_source``.
        validation_source: validation split (the logistic baseline's decision rule), or None.
        spec: feature spec of the source columns (no weight column is read from test).
        classes: class names in id order, as prepared; must equal the model's classes.
        output_dir: directory for the three files (created).
        batch_size: rows per prediction batch.
        train_source: training split (its ``sample_weight`` column is read) for the baselines.
        baselines: score the prior and logistic-regression baselines.
        baseline_max_rows: most training rows the logistic regression is fitted on, and most
            validation rows its decision rule is chosen on.
        context: dataset, model name/version, run, split counts for the report
            (see :func:`model_context`).

    Returns:
        The metrics and the paths written.

    Raises:
        PipelineInputError: missing/corrupt/incomplete model or rule, empty test split, bad
            inputs.
        LabelError: the model's classes differ from ``classes`` or from the test labels.
        EvaluationError: NaN predictions (the error names the batch and rows), or a served
            decision that differs from the model's rule.
    """
    if baseline_max_rows < 1:
        raise PipelineInputError(f"baseline_max_rows must be >= 1, got {baseline_max_rows}")
    out = Path(output_dir)
    _clear(out)  # a stale metrics.json must not outlive a failed rerun
    model = load_model(model_dir)
    check_model_complete(model_dir)  # a killed train step's leftover is never evaluated
    classes = tuple(str(c) for c in classes)
    if model.classes != classes:
        raise LabelError(
            f"model {model.model_dir} was trained for classes {list(model.classes)} but the "
            f"prepared data declares {list(classes)}; evaluate with the matching model"
        )
    spec = dataclasses.replace(spec.with_weight(None), classes=classes)
    test = _open(test_source, spec)
    validation = None if validation_source is None else _open(validation_source, spec)
    train = None
    if train_source is not None and baselines:
        train = _open(train_source, spec.with_weight(WEIGHT_COLUMN))
    metrics = compute_metrics(
        model,
        test,
        validation,
        spec,
        batch_size,
        train_source=train,
        baselines=baselines,
        baseline_max_rows=baseline_max_rows,
    )
    metrics["context"] = model_context(model, spec, context)
    vertex = to_vertex_evaluation(metrics)
    check_vertex_evaluation(vertex)
    html = render_report(metrics)
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
)
_BASELINE_SCALARS = (
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "accuracy",
    "log_loss",
    "roc_auc",
)


def _put(out: dict[str, float], name: str, value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        out[name] = float(value)


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """Flat scalars for ``Output[Metrics]``, named to sort together in the Vertex run compare.

    At the operating point: ``test_macro_f1``, ``test_accuracy``, ... and per class
    ``test_class_<name>_{f1,precision,recall}`` (name reduced to ``[A-Za-z0-9_]``); beside them
    ``test_argmax_{macro_f1,accuracy}``, the rule's ``test_operating_threshold`` (binary
    threshold rules) and per baseline ``test_baseline_<name>_<metric>``.
    """
    out: dict[str, float] = {}
    for key in _SCALARS:
        _put(out, f"{prefix}{key}", metrics.get(key))
    argmax = metrics.get("argmax") or {}
    for key in ("macro_f1", "accuracy"):
        _put(out, f"{prefix}argmax_{key}", argmax.get(key))
    _put(
        out, f"{prefix}operating_threshold", (metrics.get("operating_point") or {}).get("threshold")
    )
    for name, block in (metrics.get("baselines") or {}).items():
        for key in _BASELINE_SCALARS:
            _put(out, f"{prefix}baseline_{name}_{key}", block.get(key))
    for name, row in metrics["per_class"].items():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
        for key in ("f1", "precision", "recall"):
            out[f"{prefix}class_{safe}_{key}"] = float(row[key])
    return out
