"""Train the classifier on weighted training data and export it (see docs/ARCHITECTURE.md).

``train_model`` reads the training split once for the preprocessing statistics
(:mod:`vertex_imbalanced.training.statistics`), checks the labels of both splits, fits the
batch size, epochs, patience and learning-rate schedule to the number of training rows
(:mod:`vertex_imbalanced.training.budget`; the user's values win), builds the model under the
strategy of :mod:`vertex_imbalanced.training.strategy`, fits it with
``SparseCategoricalCrossentropy`` and the dataset's per-example weights as ``sample_weight``
(weighted metrics), early stopping on ``val_loss`` with the best weights restored,
reduce-on-plateau, preemption-safe checkpoints
(:class:`vertex_imbalanced.training.checkpoint.TrainingCheckpoint`: two slots and a manifest
written last; only the chief writes the real one), TensorBoard logs; then scores the
validation split and chooses the decision rule there
(:func:`vertex_imbalanced.evaluation.decision_rule.choose_decision_rule`), and has
:mod:`vertex_imbalanced.training.export` write the model directory (layout in
:mod:`vertex_imbalanced.artifacts`; the served signature applies the rule) plus
``<output_dir>/logs/`` (TensorBoard, unless AIP_TENSORBOARD_LOG_DIR is set).

The model directory is written in place and marked complete last (``_COMPLETE``; no directory
rename, which gcsfuse refuses; see :mod:`vertex_imbalanced.training.export`): a failed run
removes what it wrote, a killed one leaves a directory without the marker, which readers
refuse and a rerun clears. Only the chief worker writes it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import LabelError, PipelineInputError
from vertex_imbalanced.evaluation.baselines import BoundedSample
from vertex_imbalanced.evaluation.decision_rule import DecisionRule, choose_decision_rule
from vertex_imbalanced.evaluation.evaluate import DECISION_RULE_KEY
from vertex_imbalanced.reading.datasets import (
    FeedOptions,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.base import RecordBatchSource, worker_shard
from vertex_imbalanced.reading.training_encoding import (
    CHUNK_ROWS,
    DEFAULT_CACHE_BYTES,
    ChunkCache,
)
from vertex_imbalanced.training.budget import TrainingBudget, auto_batch_size, training_budget
from vertex_imbalanced.training.checkpoint import TrainingCheckpoint
from vertex_imbalanced.training.early_stopping import ResumableEarlyStopping
from vertex_imbalanced.training.export import check_output_dir, export_model, model_dir_in_place
from vertex_imbalanced.training.model import (
    build_model,
    constant_columns,
    encoded_model,
    model_vocabularies,
)
from vertex_imbalanced.training.multiworker_fit import patch_multi_worker_fit
from vertex_imbalanced.training.progress import EpochLines
from vertex_imbalanced.training.serving_names import serving_names
from vertex_imbalanced.training.statistics import (
    FeatureStats,
    class_counts_text,
    compute_feature_stats,
)
from vertex_imbalanced.training.strategy import (
    DistributionContext,
    choose_strategy,
    set_mixed_precision,
)
from vertex_imbalanced.training.tensorboard import EpochScalars

if TYPE_CHECKING:
    from vertex_imbalanced.warehouse.prepare import PreparedData

_LOG = logging.getLogger(__name__)
SHUFFLE_BATCHES = 256
SHUFFLE_ROWS = 131_072
"""The training feed's shuffle buffer: whole batches, at most :data:`SHUFFLE_BATCHES` and at most
``SHUFFLE_ROWS`` rows (2 encoded chunks; at least 2 batches): a fixed bound (~5 MB
at 36 bytes per row of the demo shape). A bound in batches only grew with the batch size the
budget picks for a larger table (256 batches of 4,096 rows held ~38 MB at 10M rows)."""
TRAIN_CACHE_BYTES = DEFAULT_CACHE_BYTES
"""Chunk cache of the training feed (``FeedOptions.cache_bytes``): 128 MiB, a fixed bound (about
3.7M rows of the demo shape, 36 bytes per row; above it the rest is read again each epoch). The
validation feed has no cache (read from the table every epoch). Measured at 1M rows with
``bench/training.py`` (a split of ~60 MB encoded), one quiet run each: later-epoch input
overhead -0.4 % (best) / 5.0 % (median) with 128 MiB, 14.0 % / 9.9 % with 32 MiB, which streamed
half of every epoch again; on the demo table at 10M rows (3 epochs) the 128 MiB training cache
held ~57 MB and a validation cache ~32 MB."""
VALIDATION_CHUNK_ROWS = 16_384
"""Rows per encoded chunk of the validation feed (the training feed's: ``CHUNK_ROWS``, 65,536).

The validation feed streams the whole split every epoch while the training feed's cache is
full, which made it the train step's peak; smaller chunks hold less per stream (train step at
10M demo rows: peak RSS about 25 MB lower) for little CPU on a split a ninth of the size."""
RULE_MAX_ROWS = 100_000
"""Most validation rows the decision rule is chosen on (a uniform sample above it, the same
bounded sampling as the evaluate step's baseline rule), so the train step's memory does not
grow with the validation split. 100k rows (about 1,000 of a class with a 1 % prior) is the
size of the demo's validation split at 1M rows; a 250k bound held ~40 MB more at 10M rows (the
sample keeps up to twice the bound while it streams; the search works on float64 copies)."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` produced.

    Attributes:
        model_dir: the written model directory (None on non-chief workers).
        metrics: final metrics (validation metrics of the restored best weights, training
            metrics of the best epoch, epochs run, rows per epoch).
        history: per-epoch logs of the whole run (across restarts from a backup).
        stats: the training statistics the preprocessing was built from.
        metadata: the content of ``model_metadata.json``.
        model: the trained in-memory Keras model (probabilities; feature dict by column name).
        decision_rule: the rule chosen on the validation split (applied by the signature).
        budget: the training budget the run followed.
    """

    model_dir: Path | None
    metrics: dict[str, float]
    history: dict[str, list[float]]
    stats: FeatureStats
    metadata: dict[str, Any]
    model: Any = dataclasses.field(repr=False, default=None)
    decision_rule: DecisionRule | None = None
    budget: TrainingBudget | None = None


def train_model(
    train_source: RecordBatchSource,
    validation_source: RecordBatchSource,
    spec: FeatureSpec,
    classes: Sequence[str],
    hp: Hyperparameters,
    output_dir: str | Path,
    *,
    backup_dir: str | None = None,
    tensorboard_dir: str | None = None,
    imbalance_report: Mapping[str, Any] | Any | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    environ: Mapping[str, str] | None = None,
    verbose: int = 0,
    feature_statistics: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train, export and describe the model.

    Args:
        train_source: the (downsampled) training split; its weight column is ``spec.weight``.
        validation_source: the untouched validation split (no weight column needed).
        spec: feature roles; ``spec.weight`` names the training weight column (None: ones).
        classes: class names in id order (label value ``classes[i]`` -> id ``i``).
        hp: hyperparameters; ``batch_size``, ``epochs``, ``early_stopping_patience`` left None
            are fitted to the training rows (:mod:`vertex_imbalanced.training.budget`).
        output_dir: the model directory to create (must not exist, be empty or be the
            incomplete leftover of a killed run, which is cleared).
        backup_dir: checkpoint directory (local, ``/gcs`` or ``gs://``;
            :class:`~vertex_imbalanced.training.checkpoint.TrainingCheckpoint`); a restarted run
            with the same directory resumes after the last finished epoch and ends with the
            same model. Removed once the model is written. None: no checkpoints.
        tensorboard_dir: TensorBoard log dir (default ``AIP_TENSORBOARD_LOG_DIR``, else
            ``<output_dir>/logs``).
        imbalance_report: what the imbalance step did (dict or object with ``to_dict()``),
            stored in the metadata.
        callbacks: extra Keras callbacks (run after ours).
        environ: environment for the strategy / TensorBoard choice (default ``os.environ``).
        verbose: Keras ``fit`` verbosity.
        feature_statistics: the prepare step's statistics of the un-downsampled train split
            (``PreparedData.feature_statistics``), written beside the model for monitoring
            (``feature_statistics.json``); None: not written.

    Returns:
        The result (model directory, metrics, history, statistics, metadata, model).

    Raises:
        LabelError: fewer than two classes; only one class present in training; label values
            outside the classes; a non-integer label column.
        SchemaError: a configured column is missing or has an unusable type.
        PipelineInputError: zero training rows, an all-NULL feature, an output_dir holding a
            complete model or files the train step does not write, feature names equal
            ignoring case, a cost matrix not C x C.
    """
    environ = os.environ if environ is None else environ
    classes = tuple(str(c) for c in (classes or spec.classes))
    if len(classes) < 2:
        raise LabelError(f"need at least two classes to train a classifier, got {list(classes)}")
    if hp.cost_matrix is not None and len(hp.cost_matrix) != len(classes):
        raise PipelineInputError(
            f"cost_matrix is {len(hp.cost_matrix)} x {len(hp.cost_matrix)} but there are "
            f"{len(classes)} classes {list(classes)}"
        )
    inputs = _serving_inputs(spec)
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    ctx = choose_strategy(environ)
    if ctx.kind == "multi_worker":
        patch_multi_worker_fit()  # Keras 3 fit fails with several workers (see keras_compat)
    previous_policy = set_mixed_precision(hp.mixed_precision)
    try:
        keras.utils.set_random_seed(hp.seed)
        feeds = _feeds(train_source, validation_source, spec, classes, hp, ctx)
        hp = feeds.hp  # the budget's batch size, epochs and patience
        constant = _warn_constant(spec, feeds.stats)
        with ctx.strategy.scope():
            model = _compiled_model(spec, feeds.stats, classes, hp)
        tensorboard_dir = tensorboard_dir or environ.get("AIP_TENSORBOARD_LOG_DIR") or None
        with model_dir_in_place(output_dir, ctx.worker) as staging:
            logs = tensorboard_dir if ctx.worker.is_chief and tensorboard_dir else staging / "logs"
            early_stopping = _early_stopping(feeds.budget, hp)
            checkpoint = _checkpoint(backup_dir, early_stopping, ctx)
            lines = EpochLines(feeds.budget.epoch_cap, feeds.stats.rows, ctx.worker.is_chief)
            fit_callbacks = _callbacks(early_stopping, checkpoint, str(logs), [lines, *callbacks])
            final = _fit(model, feeds, fit_callbacks, verbose)
            for cache in feeds.caches:  # the rule and the export need not run beside it
                cache.release()
            metrics = _final_metrics(early_stopping, final, feeds.stats)
            outcome = _budget_outcome(early_stopping, feeds.budget, model)
            rule = _decision_rule(model, feeds.validation, hp)
            metadata = _metadata(spec, classes, hp, feeds.stats, metrics, imbalance_report, ctx)
            metadata.update(
                {
                    DECISION_RULE_KEY: rule.to_dict(),
                    "serving_inputs": inputs,
                    "training_budget": {**feeds.budget.to_dict(), **outcome},
                }
            )
            metadata["training_data"]["constant_features"] = constant
            export_model(model, spec.with_weight(None), metadata, staging)
            if feature_statistics is not None:
                from vertex_imbalanced.monitoring.statistics import write_training_statistics

                write_training_statistics(staging, feature_statistics)
            if checkpoint is not None:  # before the marker: a kill in between retrains
                checkpoint.discard()
        model_dir = output_dir if ctx.worker.is_chief else None
        return TrainResult(
            model_dir,
            metrics,
            early_stopping.history,
            feeds.stats,
            metadata,
            model,
            rule,
            feeds.budget,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _serving_inputs(spec: FeatureSpec) -> dict[str, str]:
    """The serving input names (checked before any work); renamed columns are logged."""
    names = serving_names(spec.features)
    renamed = {c: s for c, s in names.items() if c != s}
    if renamed:
        _LOG.warning(
            "serving input names: %s (these column names cannot be SavedModel signature "
            "arguments; serving callers send the new names, stored as 'serving_inputs' in "
            "model_metadata.json)",
            ", ".join(f"{c!r} -> {s!r}" for c, s in renamed.items()),
        )
    return names


def _warn_constant(spec: FeatureSpec, stats: FeatureStats) -> list[str]:
    """Warn about (and return) the numeric columns left out because constant in training."""
    constant = constant_columns(spec, stats)
    if constant:
        values = ", ".join(f"{c!r} (= {stats.numeric[c].mean:g})" for c in constant)
        message = (
            f"numeric feature(s) {values} are constant over the {stats.rows} training rows: "
            "left out of the model (other values at serving cannot change the prediction)"
        )
        _LOG.warning(message)
        warnings.warn(message, stacklevel=3)
    return constant


def _early_stopping(budget: TrainingBudget, hp: Hyperparameters) -> ResumableEarlyStopping:
    """Early stopping with the budget's patience, plateau schedule and planned epochs."""
    return ResumableEarlyStopping(
        budget.patience,
        lr_patience=budget.lr_patience,
        lr_factor=budget.lr_factor,
        min_lr=hp.learning_rate * budget.min_lr_fraction,
        planned_epochs=budget.planned_epochs if budget.epoch_cap > budget.planned_epochs else None,
    )


def _budget_outcome(
    early_stopping: ResumableEarlyStopping, budget: TrainingBudget, model: keras.Model
) -> dict[str, Any]:
    """What the run did with its budget; warns when the best epoch is the last allowed one."""
    run, best = early_stopping.epochs_done, early_stopping.best_epoch + 1
    last = best == run == budget.epoch_cap
    warning = None
    if last:
        warning = (
            f"the best epoch is the last allowed one ({best} of {budget.epoch_cap}, "
            f"{budget.epochs_source} epochs): the validation loss was still improving; more "
            "epochs (--epochs) may give a better model"
        )
        _LOG.warning(warning)
        warnings.warn(warning, stacklevel=3)
    optimizer = encoded_model(model).optimizer
    return {
        "epochs_run": run,
        "best_epoch": best,
        "best_epoch_is_last": last,
        "extended": run > budget.planned_epochs,
        "stop_reason": early_stopping.stop_reason or "epoch_cap",
        "final_learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        "warning": warning,
    }


def _decision_rule(
    model: keras.Model, validation: tf.data.Dataset, hp: Hyperparameters
) -> DecisionRule:
    """Score the validation split with the (restored best) weights and choose the rule there.

    The rule is chosen on a uniform sample of at most :data:`RULE_MAX_ROWS` validation rows
    (all of them in a smaller split), so the step's memory does not grow with the split.

    Raises:
        ValueError: the validation split is empty.
    """
    trainable = encoded_model(model)
    # one traced function, not eager Keras per batch (25 batches of 4,096 rows, measured by
    # H2: 0.67 s with the first trace, 0.10 s after, vs 1.75 s eager; same values to 3e-7)
    predict = tf.function(lambda f: trainable(f, training=False), reduce_retracing=True)
    sample = BoundedSample(RULE_MAX_ROWS)
    with raise_source_errors():
        for features, label, _ in validation:
            sample.add(np.asarray(predict(features), np.float64), label.numpy())
    kept = sample.arrays()
    if kept is None:
        raise ValueError("the validation split is empty: no decision rule can be chosen")
    probabilities, labels = kept
    rule = choose_decision_rule(probabilities, labels.astype(np.int64), cost_matrix=hp.cost_matrix)
    _LOG.info("decision rule: %s", rule.method)
    return rule


def backup_dir_for(model_path: str | Path, environ: Mapping[str, str] | None = None) -> str:
    """Where the training checkpoint is kept for a model output path.

    On Vertex AI custom training ``AIP_CHECKPOINT_DIR`` (under the job's base output directory);
    otherwise ``<model_path>.backup`` beside the output (under the pipeline root, ``/gcs/...`` on
    Vertex Pipelines), so a retried task resumes from the same place.
    """
    environ = os.environ if environ is None else environ
    return environ.get("AIP_CHECKPOINT_DIR") or f"{str(model_path).rstrip('/')}.backup"


def train_prepared(
    prepared: PreparedData,
    hp: Hyperparameters,
    output_dir: str | Path,
    *,
    feature_config: FeatureSpec | None = None,
    backup_dir: str | None = None,
    num_streams: int = 2,
) -> TrainResult:
    """Train from the prepare step's output.

    Args:
        prepared: the prepare step's tables, classes, spec and imbalance report.
        hp: hyperparameters.
        output_dir: model directory to create.
        feature_config: feature roles overriding ``prepared.spec`` (same label column).
        backup_dir: checkpoint directory (see :func:`backup_dir_for`).
        num_streams: read streams per split.

    Returns:
        The result of :func:`train_model`.
    """
    from vertex_imbalanced.reading.sources.open import open_source

    spec = feature_config or prepared.spec
    # The prepare step always writes the weight column into the train table (all modes).
    train_spec = spec.with_weight(WEIGHT_COLUMN)
    train_source = open_source(prepared.train_uri, train_spec.read_columns, num_streams=num_streams)
    validation = open_source(
        prepared.validation_uri, spec.with_weight(None).read_columns, num_streams=num_streams
    )
    return train_model(
        train_source,
        validation,
        train_spec,
        prepared.classes,
        hp,
        output_dir,
        backup_dir=backup_dir,
        imbalance_report=prepared.imbalance,
        feature_statistics=prepared.feature_statistics,
    )


def _training_stats(
    source: RecordBatchSource, spec: FeatureSpec, classes: Sequence[str], workers: int
) -> tuple[FeatureStats, list[int]]:
    """Statistics over the whole training split (identical on every worker) and shard sizes.

    With several workers the split is read shard by shard (:func:`worker_shard`: disjoint
    shards that together hold every row, for any number of streams the source returns), which
    gives each shard's row count: every worker then runs the same number of steps (the largest
    shard's; smaller shards are padded with zero-weight batches), as collective training
    requires.
    """
    shard_rows: list[int] = []

    def batches() -> Iterator[Any]:
        for shard in range(workers):
            shard_rows.append(0)
            part = worker_shard(source, shard, workers, spec.key)
            ds = make_dataset(part, spec, FeedOptions(), classes=classes)
            for batch in ds:
                shard_rows[-1] += int(batch[1].shape[0])
                yield batch

    with raise_source_errors():
        stats = compute_feature_stats(batches(), spec, len(classes), description=source.description)
    present = [c for c, n in zip(classes, stats.class_counts, strict=True) if n]
    if len(present) < 2:
        raise LabelError(
            f"training data {source.description} holds only class {present} "
            f"({class_counts_text(classes, stats.class_counts)}); a classifier needs >= 2 classes"
        )
    absent = [c for c, n in zip(classes, stats.class_counts, strict=True) if not n]
    if absent:
        warnings.warn(
            f"classes {absent} have no training rows in {source.description}", stacklevel=3
        )
    return stats, shard_rows


def _check_validation(
    source: RecordBatchSource, spec: FeatureSpec, classes: Sequence[str], stats: FeatureStats
) -> int:
    """Check the validation labels, warn about classes never validated; return the row count."""
    # the serving spec (features too: a feed must read at least one feature column)
    label_only = spec.with_weight(None)
    counts = np.zeros(len(classes), np.int64)
    with raise_source_errors():
        for _, label, _ in make_dataset(source, label_only, classes=classes):
            counts += np.bincount(label.numpy(), minlength=len(classes))
    counts = [int(n) for n in counts]
    if sum(counts) == 0:
        raise PipelineInputError(f"validation data {source.description} has zero rows")
    missing = [
        c for c, t, v in zip(classes, stats.class_counts, counts, strict=True) if t and not v
    ]
    if missing:
        message = (
            f"classes {missing} are in the training data but absent from the validation data "
            f"{source.description} ({class_counts_text(classes, counts)}); validation loss "
            "cannot measure them"
        )
        _LOG.warning(message)
        warnings.warn(message, stacklevel=3)
    return sum(counts)


def weight_scale(stats: FeatureStats) -> float:
    """Factor that gives the training weights mean 1 (rows / sum of weights)."""
    total = sum(stats.weighted_class_counts)
    return stats.rows / total if total > 0 else 1.0


def training_dataset(
    source: RecordBatchSource,
    spec: FeatureSpec,
    classes: Sequence[str],
    stats: FeatureStats,
    hp: Hyperparameters,
    ctx: DistributionContext,
    *,
    rows: int | None = None,
    training: bool = False,
    repeat: bool = False,
    steps: int | None = None,
    on_cache: Callable[[ChunkCache], None] | None = None,
) -> tf.data.Dataset:
    """Encoded batches for the inner model; training data: this worker's shard, batches shuffled.

    The shuffle order is the same every epoch, so a run resumed from a checkpoint sees the same
    batches as an uninterrupted one. The training feed keeps the encoded chunks of its first
    pass in memory up to a fixed budget (:data:`TRAIN_CACHE_BYTES`; above it only the rest is
    read again each epoch), with the very same batches; its shuffle buffer holds at most
    :data:`SHUFFLE_ROWS` rows. The validation feed is read from the table every pass (no
    cache), so the feeds' memory does not grow with the table. Training weights are
    scaled to mean 1 over the split (:func:`weight_scale`): their ratios, which restore the
    class prior, are unchanged, and the training loss stays on the scale of the (unweighted)
    validation loss.

    Args:
        source: the split to read.
        spec: feature roles (with the weight column for training data).
        classes: class names in id order.
        stats: training statistics (the vocabularies come from them).
        hp: batch size (None: the budget's for ``rows``) and seed.
        ctx: the distribution context (worker shard).
        rows: rows read (default ``stats.rows``): the known length on one worker, this
            worker's shard with several.
        training: read this worker's shard and shuffle.
        repeat: repeat forever (several workers run a fixed number of steps).
        steps: with several workers, the training batches of one epoch on this worker (the
            largest shard's, rounded up to a multiple of the local replicas): each epoch is one
            pass over this worker's shard padded with zero-weight batches.
        on_cache: receives the feed's chunk cache (to release it when training is over).
    """
    rows = stats.rows if rows is None else rows
    batch_size = hp.batch_size or auto_batch_size(stats.rows)
    if training and ctx.worker.count > 1:  # this worker's rows: disjoint, all together cover all
        source = worker_shard(source, ctx.worker.index, ctx.worker.count, spec.key)
    options = FeedOptions(
        batch_size=batch_size,
        shuffle_batches=_shuffle_batches(batch_size) if training else 0,
        seed=hp.seed,
        cache_bytes=TRAIN_CACHE_BYTES if training else 0,
    )
    ds = make_encoded_dataset(
        source,
        spec,
        model_vocabularies(spec, stats),
        options,
        classes=classes,
        weight_scale=weight_scale(stats) if training else 1.0,
        chunk_rows=CHUNK_ROWS if training else VALIDATION_CHUNK_ROWS,
        on_cache=on_cache,
    )
    if ctx.worker.count == 1:  # known length: Keras shows progress and does not warn at the end
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))
    else:
        options = tf.data.Options()
        # The source is this worker's shard already; Keras must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
        if training and steps:
            ds = _epoch_of_steps(ds, steps, -(-rows // batch_size))
    return ds.repeat() if repeat else ds


def _shuffle_batches(batch_size: int) -> int:
    """Batches in the shuffle buffer: ``SHUFFLE_BATCHES``, fewer above ``SHUFFLE_ROWS`` rows."""
    return max(2, min(SHUFFLE_BATCHES, SHUFFLE_ROWS // batch_size))


def _epoch_of_steps(ds: tf.data.Dataset, steps: int, batches: int) -> tf.data.Dataset:
    """One pass over this worker's shard, padded to ``steps`` batches with zero-weight batches.

    Collective training needs the same number of steps on every worker, but the shards differ
    in size. Every worker runs the largest shard's number of batches; a smaller shard's pass
    (``batches`` batches, read to its end) is followed by ``steps - batches`` one-row batches
    of weight 0 (no loss, no gradient). Each epoch is thus exactly one complete pass over every
    shard (every row once), and it starts at the shard's first batch, so a run resumed from a
    checkpoint sees the batches of an uninterrupted one.
    """

    def zeros(spec: tf.TensorSpec) -> tf.Tensor:
        return tf.zeros([1, *spec.shape[1:]], spec.dtype)

    padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(zeros, ds.element_spec))
    return ds.concatenate(padding.repeat(max(steps - batches, 0)))


def _local_replicas(ctx: DistributionContext) -> int:
    """Replicas on this worker (1 per CPU worker; its GPUs with several)."""
    return max(1, ctx.num_replicas // max(ctx.worker.count, 1))


def _per_replica_batches(ds: tf.data.Dataset, ctx: DistributionContext) -> Any:
    """This worker's training feed, its batches handed whole to its replicas (several workers).

    ``strategy.experimental_distribute_dataset`` (what Keras does with a plain dataset) takes
    each worker's batches as *global* batches and splits every one into ``num_replicas_in_sync``
    pieces, each replica taking one piece per step: a step then consumed half a batch with two
    workers, an epoch of ``steps`` steps was half a pass over the shard, and a run resumed from
    a checkpoint (whose epoch starts at the shard's first batch) saw other batches than the
    uninterrupted run. ``distribute_datasets_from_function`` hands this worker's batches to its
    replicas as they are (one batch per local replica and step), so an epoch of ``steps``
    steps is exactly one pass over the shard (padded, :func:`_epoch_of_steps`).
    """
    return ctx.strategy.distribute_datasets_from_function(lambda _: ds)


@dataclasses.dataclass(frozen=True)
class _Feeds:
    """The two encoded feeds of a run, its statistics, budget and effective hyperparameters."""

    stats: FeatureStats
    train: Any  # tf.data.Dataset; several workers: a distributed dataset (per-replica batches)
    validation: tf.data.Dataset
    steps: int | None  # None: one worker, one pass over the split per epoch
    budget: TrainingBudget
    hp: Hyperparameters  # batch size, epochs, patience: the budget's
    caches: tuple[ChunkCache, ...] = ()  # the training feed's, released after the fit


def _feeds(
    train_source: RecordBatchSource,
    validation_source: RecordBatchSource,
    spec: FeatureSpec,
    classes: tuple[str, ...],
    hp: Hyperparameters,
    ctx: DistributionContext,
) -> _Feeds:
    """Read the statistics, check the validation labels, fit the budget, build both feeds."""
    stats, shard_rows = _training_stats(train_source, spec, classes, ctx.worker.count)
    validation_rows = _check_validation(validation_source, spec, classes, stats)
    budget = training_budget(
        max(shard_rows) if ctx.worker.count > 1 else stats.rows,
        batch_size=hp.batch_size,
        epochs=hp.epochs,
        patience=hp.early_stopping_patience,
    )
    hp = dataclasses.replace(
        hp,
        batch_size=budget.batch_size,
        epochs=budget.planned_epochs,
        early_stopping_patience=budget.patience,
    )
    steps, local = None, 1
    if ctx.worker.count > 1:  # equal steps on every worker: the largest shard's batches
        local = _local_replicas(ctx)  # each step takes one batch per local replica
        batches = -(-max(shard_rows) // hp.batch_size)
        steps = max(1, -(-batches // local))
    own_rows = shard_rows[ctx.worker.index] if ctx.worker.count > 1 else stats.rows
    caches: list[ChunkCache] = []
    train_ds = training_dataset(
        train_source,
        spec,
        classes,
        stats,
        hp,
        ctx,
        rows=own_rows,
        training=True,
        repeat=bool(steps),
        steps=steps * local if steps else None,
        on_cache=caches.append,
    )
    if steps:
        train_ds = _per_replica_batches(train_ds, ctx)
    val_ds = training_dataset(
        validation_source, spec.with_weight(None), classes, stats, hp, ctx, rows=validation_rows
    )
    return _Feeds(stats, train_ds, val_ds, steps, budget, hp, tuple(caches))


def _compiled_model(
    spec: FeatureSpec, stats: FeatureStats, classes: tuple[str, ...], hp: Hyperparameters
) -> keras.Model:
    """The exported model; its inner model (the one fitted) compiled for weighted training."""
    model = build_model(spec, stats, classes, hp)
    encoded_model(model).compile(
        optimizer=keras.optimizers.Adam(hp.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=hp.steps_per_execution,
    )
    return model


def _checkpoint(
    backup_dir: str | None, early_stopping: ResumableEarlyStopping, ctx: DistributionContext
) -> TrainingCheckpoint | None:
    """The run's checkpoint (None without ``backup_dir``).

    Only the chief writes into ``backup_dir``; other workers write the same saves into a
    temporary directory of their own (concurrent writers of one gcsfuse object get ESTALE)
    and all restore from the chief's.
    """
    if not backup_dir:
        return None
    write_dir = None
    if not ctx.worker.is_chief:
        write_dir = tempfile.mkdtemp(prefix=f"checkpoint-worker{ctx.worker.index}-")
    return TrainingCheckpoint(backup_dir, early_stopping, write_dir=write_dir)


def _callbacks(
    early_stopping: ResumableEarlyStopping,
    checkpoint: TrainingCheckpoint | None,
    logs: str,
    extra: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """Early stopping, the checkpoint, TensorBoard, extra (in this order).

    The checkpoint comes after early stopping: it restores into it and saves its decision.
    """
    callbacks: list[keras.callbacks.Callback] = [early_stopping]
    if checkpoint is not None:
        callbacks.append(checkpoint)
    callbacks += [EpochScalars(logs), *extra]
    return callbacks


def _fit(
    model: keras.Model,
    feeds: _Feeds,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> dict[str, float]:
    """Fit the inner model (weights shared with ``model``); return the final validation logs."""
    trainable = encoded_model(model)
    with raise_source_errors():
        trainable.fit(
            feeds.train,
            validation_data=feeds.validation,
            epochs=feeds.budget.epoch_cap,  # early stopping ends most runs sooner
            steps_per_epoch=feeds.steps,
            callbacks=list(callbacks),
            shuffle=False,  # the feed shuffles batches, same order every epoch
            verbose=verbose,
        )
        return trainable.evaluate(feeds.validation, return_dict=True, verbose=0)


def _final_metrics(
    early_stopping: ResumableEarlyStopping, final: Mapping[str, float], stats: FeatureStats
) -> dict[str, float]:
    """Validation metrics of the restored weights plus the best epoch's training metrics."""
    history, best = early_stopping.history, max(early_stopping.best_epoch, 0)
    metrics = {f"val_{k}": float(v) for k, v in final.items()}
    for key in ("loss", "accuracy"):
        if history.get(key):
            metrics[f"train_{key}"] = history[key][best]
    metrics.update(
        epochs_run=early_stopping.epochs_done,
        best_epoch=best + 1,
        train_rows_per_epoch=stats.rows,
        train_weighted_rows=float(sum(stats.weighted_class_counts)),
    )
    return metrics


def _metadata(
    spec: FeatureSpec,
    classes: tuple[str, ...],
    hp: Hyperparameters,
    stats: FeatureStats,
    metrics: Mapping[str, float],
    imbalance_report: Any,
    ctx: DistributionContext,
) -> dict[str, Any]:
    """The ``model_metadata.json`` content (layout in docs/ARCHITECTURE.md)."""
    if imbalance_report is not None and hasattr(imbalance_report, "to_dict"):
        imbalance_report = imbalance_report.to_dict()
    data = stats.to_dict()
    return {
        "framework": "tensorflow",
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "classes": list(classes),
        "feature_spec": dataclasses.replace(spec.with_weight(None), classes=classes).to_dict(),
        "training_weight_column": spec.weight,
        "training_weight_scale": weight_scale(stats),
        "hyperparameters": hp.to_dict(),
        "imbalance": dict(imbalance_report or {}),
        "training_metrics": dict(metrics),
        "training_data": {
            "rows": stats.rows,
            "class_counts": dict(zip(classes, stats.class_counts, strict=True)),
            "weighted_class_counts": dict(zip(classes, stats.weighted_class_counts, strict=True)),
            "numeric": data["numeric"],
            "vocabulary_sizes": data["vocabulary_sizes"],
        },
        "distribution": {"strategy": ctx.kind, "workers": ctx.worker.count},
    }
