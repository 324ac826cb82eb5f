"""Record-batch sources -> ``tf.data.Dataset`` of ``(features, label, weight)`` batches.

Two feeds share one reading scheme: each stream of the source becomes a ``from_generator``
dataset, the streams are read concurrently by ``interleave`` (sharded by worker, fixed order).

* :func:`make_dataset` yields the raw feature dict (the exported model's input; statistics,
  evaluation): each record batch is packed into a few tensors (``vertex_imbalanced.reading.record_packing``)
  and split back into the dict in the graph. NULL -> NaN for numeric, "" for categorical.
* :func:`make_encoded_dataset` yields the model's inner input for training: chunks of numeric
  and vocabulary-id matrices (``vertex_imbalanced.reading.training_encoding``), so no per-row string tensor is
  built while training.

Both take one :class:`FeedOptions` (batch size, shuffle, seed, shard, label policy, prefetch,
threads): the same settings mean the same thing in both feeds.

Values are read by one rule (``record_packing.numeric_into``), so training statistics, the
training feed, evaluation and batch scoring see the same numbers: decimals as the nearest
float32, DATE/TIMESTAMP (any unit, any zone) as days since 1970-01-01 UTC, NULL as missing,
and a value that is not a finite float32 (+-inf, beyond +-3.4e38) **as missing, counted** per
column in :attr:`DatasetReport.non_finite` -- pass a ``report`` and surface
``report.non_finite_text()``; nothing is dropped silently. A NaN or infinite weight is refused.

See docs/ARCHITECTURE.md for the element contracts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tensorflow.python.data.ops import dataset_ops, iterator_ops

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.reading.record_packing import (
    BatchPacker,
    DatasetReport,
    categorical_to_string,
    numeric_to_float32,
)
from vertex_imbalanced.reading.schema import (
    bigquery_type_name,
    check_schema,
    is_categorical_type,
    is_numeric_type,
)
from vertex_imbalanced.reading.sources.base import RecordBatchSource, shard_streams
from vertex_imbalanced.reading.training_encoding import (
    CHUNK_ROWS,
    DEFAULT_CACHE_BYTES,
    ENCODED_CATEGORICAL,
    ENCODED_NUMERIC,
    ChunkCache,
    ChunkEncoder,
    stable_streams,
)
from vertex_imbalanced.warehouse.identifiers import require_columns

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LABEL_POLICIES",
    "DatasetReport",
    "FeedOptions",
    "LabelPolicy",
    "encoded_signature",
    "feature_signature",
    "feature_tensors",
    "features_from_pandas",
    "make_dataset",
    "make_encoded_dataset",
    "raise_source_errors",
]

# tf.data turns an exception raised inside a generator into a tf.errors.OpError that only
# carries its text; the original (LabelError, SourceError, ...) is kept here to be re-raised.
_RECENT_ERRORS: collections.deque[Exception] = collections.deque(maxlen=16)
_ERRORS_LOCK = threading.Lock()


@contextlib.contextmanager
def raise_source_errors() -> Iterator[None]:
    """Re-raise the original error of a failed source/packer instead of TF's wrapper.

    Wrap any iteration over a dataset from :func:`make_dataset` (``for`` loops, ``model.fit``)
    so callers get ``LabelError`` / ``SchemaError`` / ``SourceError`` with their message.
    """
    try:
        yield
    except tf.errors.OpError as exc:
        with _ERRORS_LOCK:
            original = next((e for e in reversed(_RECENT_ERRORS) if str(e) in exc.message), None)
        if original is not None:
            raise original from None
        raise


class _OwnErrorsIterator(iterator_ops.OwnedIterator):
    """A dataset iterator whose ``next`` re-raises the original error (see :class:`_OwnErrors`)."""

    def __next__(self):
        with raise_source_errors():
            return super().__next__()


class _OwnErrors(dataset_ops.UnaryUnchangedStructureDataset):
    """The same dataset; iterating it in Python raises our own errors at the call site.

    ``for batch in ds``, ``next(iter(ds))`` and ``ds.as_numpy_iterator()`` raise ``LabelError``
    / ``SchemaError`` / ``SourceError`` themselves instead of the TensorFlow error that wraps
    them, so ``except LabelError`` works in a notebook. Datasets derived from this one
    (``ds.map(...)``, ``ds.take(...)``) and ``model.fit`` iterate through TensorFlow: wrap them in
    :func:`raise_source_errors`.
    """

    def __init__(self, input_dataset: tf.data.Dataset) -> None:
        super().__init__(input_dataset, input_dataset._variant_tensor)

    def __iter__(self):
        iterator = super().__iter__()
        if type(iterator) is iterator_ops.OwnedIterator:  # eager: Python iteration
            iterator.__class__ = _OwnErrorsIterator
        return iterator


def feature_signature(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """TensorSpecs of the raw feature dict (the exported model's serving input)."""
    sig = {name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.numeric}
    sig.update({name: tf.TensorSpec([None], tf.string, name=name) for name in spec.categorical})
    return sig


def encoded_signature(spec: FeatureSpec) -> tuple:
    """Element spec of :func:`make_encoded_dataset`: ``(features, label int32, weight f32)``."""
    features = {}
    if spec.numeric:
        features[ENCODED_NUMERIC] = tf.TensorSpec([None, len(spec.numeric)], tf.float32)
    if spec.categorical:
        features[ENCODED_CATEGORICAL] = tf.TensorSpec([None, len(spec.categorical)], tf.int32)
    return features, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)


def _packed_signature(spec: FeatureSpec) -> tuple[tf.TensorSpec, ...]:
    return (
        tf.TensorSpec([None, len(spec.numeric)], tf.float32),
        tf.TensorSpec([], tf.string),
        tf.TensorSpec([len(spec.categorical), None], tf.int64),
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.float32),
    )


def _unpacker(spec: FeatureSpec):
    numeric, categorical = spec.numeric, spec.categorical

    def unpack(values, strings, offsets, label, weight):
        features = {name: values[:, j] for j, name in enumerate(numeric)}
        for j, name in enumerate(categorical):
            starts = offsets[j, :-1]
            features[name] = tf.strings.substr(strings, starts, offsets[j, 1:] - starts)
        return features, label, weight

    return unpack


LabelPolicy = Literal["error", "skip"]
LABEL_POLICIES: tuple[str, ...] = get_args(LabelPolicy)


@dataclasses.dataclass(frozen=True)
class FeedOptions:
    """How a feed batches, shuffles, shards and prefetches (shared by both feeds).

    Attributes:
        batch_size: rows per batch. None keeps the source's record batches (raw feed only;
            the training feed needs a size).
        drop_remainder: with ``batch_size``, drop a final smaller batch.
        shuffle_batches: shuffle buffer in batches (the raw feed: record batches). The order
            is the same every epoch, so a run resumed from a backup sees the same data as an
            uninterrupted one; 0 = off.
        seed: shuffle seed.
        shard_index: this worker's index, for multi-worker training.
        num_shards: number of workers; each reads a disjoint subset of the streams.
        label_policy: ``"error"`` on NULL/unknown labels (default) or ``"skip"`` and count them.
        deterministic: interleave streams in a fixed order (same seed + data -> same batches).
        prefetch: batches to prefetch (fixed, not AUTOTUNE: autotune can stall at the end);
            re-batched feeds keep at least 8.
        threads: size of a private tf.data thread pool (None: the global pool).
        cache_bytes: training feed only: memory budget of its chunk cache
            (:class:`~vertex_imbalanced.reading.training_encoding.ChunkCache`; default
            ``DEFAULT_CACHE_BYTES`` = 128 MiB, a fixed size; 0 = off). When this worker's
            encoded split fits, passes after the first are served from memory; above it a
            source with stable streams keeps the last chunks of each stream that fit and
            reads only the rest again, any other source reads everything again. The batches
            and their order are the same in every case; memory stays within the budget.

    The shuffled order depends on ``seed`` and on TensorFlow's global seed (``tf.data``
    combines them): set the global seed first (``keras.utils.set_random_seed``, as the
    trainer does) for the same batches in two feeds built in one process.

    Raises:
        ValueError: a setting out of range (named with its value).
    """

    batch_size: int | None = None
    drop_remainder: bool = False
    shuffle_batches: int = 0
    seed: int | None = None
    shard_index: int = 0
    num_shards: int = 1
    label_policy: LabelPolicy = "error"
    deterministic: bool = True
    prefetch: int = 2
    threads: int | None = 2
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        checks = (
            (self.batch_size is None or self.batch_size > 0, "batch_size must be > 0 or None"),
            (self.shuffle_batches >= 0, "shuffle_batches must be >= 0"),
            (self.num_shards >= 1, "num_shards must be >= 1"),
            (0 <= self.shard_index < self.num_shards, "shard_index must be in [0, num_shards)"),
            (self.label_policy in LABEL_POLICIES, "label_policy must be 'error' or 'skip'"),
            (self.prefetch >= 0, "prefetch must be >= 0"),
            (self.threads is None or self.threads > 0, "threads must be > 0 or None"),
            (self.cache_bytes >= 0, "cache_bytes must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (got {self})")


def make_dataset(
    source: RecordBatchSource,
    spec: FeatureSpec,
    options: FeedOptions = FeedOptions(),
    *,
    classes: Sequence[str] | None = None,
    report: DatasetReport | None = None,
    labels_only: bool = False,
) -> tf.data.Dataset:
    """Build the dataset of ``(features: dict, label: int64[n], weight: float32[n])`` batches.

    Args:
        source: where the record batches come from.
        spec: feature roles; its columns are checked against the source schema first.
        options: batching, shuffling, sharding, label policy, prefetch (:class:`FeedOptions`).
        classes: class names in id order (default ``spec.classes``); label values are matched
            as strings. Empty: labels must be integer ids >= 0.
        report: counters updated while reading (rows, skipped labels, non-finite values).
        labels_only: read the labels (and weights) only: the feature dict is empty. Without
            it a spec that lists no feature column is an error.

    Returns:
        The dataset. Iterating it in Python (``for``, ``next(iter(ds))``) raises
        ``LabelError`` / ``SchemaError`` / ``SourceError`` for bad data; datasets derived
        from it and ``model.fit`` need :func:`raise_source_errors` for that.

    Raises:
        PipelineInputError: the spec lists no feature column (and ``labels_only`` is False).
        SchemaError: missing or unusable columns (raised here, before any data is read).
        LabelError: a label column of a type that cannot hold class ids.
        ValueError: a worker without streams.
    """
    if labels_only:
        spec = dataclasses.replace(spec, numeric=(), categorical=())
    else:
        _require_features(spec, source)
    check_schema(source.description, source.schema, spec)
    streams = _worker_streams(source, options)
    packer = BatchPacker(
        spec,
        spec.classes if classes is None else classes,
        description=source.description,
        label_policy=options.label_policy,
        report=report,
    )

    def packed(stream_index: int) -> Iterator:
        for batch in source.read_stream(stream_index):
            if batch.num_rows:
                yield packer.pack(batch)

    ds = _read_streams(
        streams, packed, _packed_signature(spec), options.deterministic, unpack=_unpacker(spec)
    )
    if options.shuffle_batches:
        ds = ds.shuffle(options.shuffle_batches, seed=options.seed, reshuffle_each_iteration=False)
    if not options.batch_size:
        return _OwnErrors(_finished(ds, options.prefetch, options))
    ds = _rebatched(ds, options)
    return _OwnErrors(_finished(ds, max(options.prefetch, 8), options))


def make_encoded_dataset(
    source: RecordBatchSource,
    spec: FeatureSpec,
    vocabularies: Mapping[str, Sequence[str]],
    options: FeedOptions,
    *,
    classes: Sequence[str] | None = None,
    weight_scale: float = 1.0,
    chunk_rows: int = CHUNK_ROWS,
    report: DatasetReport | None = None,
    on_cache: Callable[[ChunkCache], None] | None = None,
) -> tf.data.Dataset:
    """Build the training feed: ``({"numeric": [n, k], "categorical": [n, m]}, label, weight)``.

    The element is the input of :func:`vertex_imbalanced.training.model.encoded_model`: numeric
    columns as one float32 matrix (NULL -> NaN), categorical columns as int32 ids of
    ``vocabularies`` (the model's ``StringLookup`` order), int32 label ids and float32 weights.
    Labels, sharding, errors and ``report`` behave as in :func:`make_dataset`. Whole batches,
    not rows, are shuffled (``options.shuffle_batches``): moving a batch costs no copy. Passes
    after the first come from memory as far as ``options.cache_bytes`` allows
    (:class:`~vertex_imbalanced.reading.training_encoding.ChunkCache`; the source's
    ``stable_streams`` lets it cache part of a larger split): the same batches in the same
    order, without reading or encoding again what is kept.

    Args:
        source: where the record batches come from.
        spec: feature roles; its columns are checked against the source schema first.
        vocabularies: categorical column -> tokens
            (:func:`vertex_imbalanced.training.model.model_vocabularies`).
        options: batching (``batch_size`` required), shuffling, sharding, label policy,
            prefetch (:class:`FeedOptions`).
        classes: class names in id order (default ``spec.classes``).
        weight_scale: factor applied to every weight (the trainer scales them to mean 1).
        chunk_rows: rows gathered per chunk before encoding
            (see ``vertex_imbalanced.reading.training_encoding``).
        report: counters updated while reading.
        on_cache: called once with the feed's chunk cache, so that its owner can
            :meth:`~vertex_imbalanced.reading.training_encoding.ChunkCache.release` the memory
            when the feed's passes are over.

    Returns:
        The dataset. Reading raises ``LabelError`` / ``SchemaError`` for bad data.

    Raises:
        PipelineInputError: the spec lists no feature column.
        SchemaError: missing or unusable columns (raised here, before any data is read).
        ValueError: no ``options.batch_size``; a categorical column without a vocabulary; a
            worker without streams.
    """
    if options.batch_size is None:
        raise ValueError("the training feed needs FeedOptions.batch_size (rows per batch)")
    _require_features(spec, source)
    check_schema(source.description, source.schema, spec)
    streams = _worker_streams(source, options)
    encoder = ChunkEncoder(
        spec,
        spec.classes if classes is None else classes,
        vocabularies,
        description=source.description,
        label_policy=options.label_policy,
        weight_scale=weight_scale,
        report=report,
    )

    cache = ChunkCache(streams, options.cache_bytes, partial=stable_streams(source))
    if on_cache is not None:
        on_cache(cache)

    def chunks(stream_index: int) -> Iterator:
        def read() -> Iterator:
            return encoder.counted_chunks(source.read_stream(stream_index), chunk_rows)

        return cache.chunks(stream_index, read, report)

    ds = _read_streams(streams, chunks, encoded_signature(spec), options.deterministic)
    ds = _rebatched(ds, options)
    if options.shuffle_batches:  # whole batches: moving one costs no copy
        ds = ds.shuffle(options.shuffle_batches, seed=options.seed, reshuffle_each_iteration=False)
    return _OwnErrors(_finished(ds, max(options.prefetch, 8), options))


def _require_features(spec: FeatureSpec, source: RecordBatchSource) -> None:
    if not spec.features:
        raise PipelineInputError(
            f"the feature spec for {source.description} lists no feature column: name the "
            "numeric and categorical columns (FeatureSpec(numeric=..., categorical=...), or "
            "reading.schema.infer_feature_spec(source.schema, label) for the defaults)"
        )


def feature_tensors(
    data: pa.RecordBatch | pa.Table,
    spec: FeatureSpec,
    *,
    names: Mapping[str, str] | None = None,
    report: DatasetReport | None = None,
) -> dict[str, tf.Tensor]:
    """The raw feature dict of Arrow rows, with the values the feeds give them.

    Numeric columns become float32 ``[n]`` tensors and categorical ones string ``[n]`` tensors
    by the reading rules of :func:`make_dataset` (NULL -> NaN / ``""``; non-finite numbers read
    as missing and counted in ``report``). This is the input of the exported model:
    ``model.keras`` takes it as is; ``serving_default`` takes it keyed by serving name (pass
    ``names=metadata["serving_inputs"]``).

    Args:
        data: the rows (other columns are ignored).
        spec: feature roles.
        names: column -> key of the returned dict (default: the column name).
        report: counters for non-finite values.

    Returns:
        ``{name: tensor}`` for every feature column of ``spec``, numeric first.

    Raises:
        SchemaError: a feature column is missing or has a type its role cannot use.
    """
    schema = data.schema
    require_columns("the input rows", list(spec.features), list(schema.names))
    out: dict[str, tf.Tensor] = {}
    for name in spec.features:
        column = data.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):  # pandas ``category``
            column = column.dictionary_decode()
        numeric = name in spec.numeric
        if numeric and not is_numeric_type(column.type):
            raise SchemaError(
                f"column {name!r} of the input rows is {bigquery_type_name(column.type)} "
                f"({column.type}) but the model reads it as a number"
            )
        if not numeric and not is_categorical_type(column.type):
            column = _integral_floats(column, name)
        key = names[name] if names else name
        out[key] = (
            tf.constant(numeric_to_float32(column, column=name, report=report))
            if numeric
            else tf.constant(categorical_to_string(column).to_numpy(zero_copy_only=False))
        )
    return out


def _integral_floats(column: pa.Array, name: str) -> pa.Array:
    """A categorical INT64 column that pandas turned into floats (for its NaN) -> int64."""
    if pa.types.is_floating(column.type):
        valid = pc.drop_null(column)
        if pc.all(pc.equal(pc.floor(valid), valid)).as_py() in (True, None):
            return column.cast(pa.int64())
    raise SchemaError(
        f"column {name!r} of the input rows is {bigquery_type_name(column.type)} "
        f"({column.type}) and cannot be a categorical feature; use STRING, INT64 or BOOL"
    )


def features_from_pandas(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    *,
    names: Mapping[str, str] | None = None,
    report: DatasetReport | None = None,
) -> dict[str, tf.Tensor]:
    """The exported model's input for a pandas DataFrame (one tensor per feature column).

    Predict from a notebook with the model directory of a run::

        meta = json.loads((model_dir / "model_metadata.json").read_text())
        spec = FeatureSpec.from_dict(meta["feature_spec"])
        # Keras model (keyed by column name) -> probabilities [n, C]
        keras.saving.load_model(model_dir / "model.keras")(features_from_pandas(df, spec))
        # SavedModel -> probabilities, class_id, class_name (the decision rule applied)
        tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"](
            **features_from_pandas(df, spec, names=meta["serving_inputs"]))

    Each column is converted on its own (errors name it) by the feeds' rules
    (:func:`feature_tensors`): pandas ``object`` / ``string`` / ``category`` columns, nullable
    ``Int64`` / ``boolean``, ``datetime64`` of any unit and zone, ``NaN`` / ``None`` / ``NaT`` as
    missing. Columns not in ``spec`` (label, key) are ignored.

    Args:
        frame: the rows.
        spec: feature roles (the model metadata's ``feature_spec``).
        names: column -> key of the returned dict (``serving_inputs`` for the SavedModel).
        report: counters for non-finite values.

    Returns:
        ``{name: tensor}`` of ``[len(frame)]`` float32 / string tensors.

    Raises:
        SchemaError: a feature column is missing, or pandas values Arrow cannot type (named).
    """
    require_columns("the DataFrame", list(spec.features), [str(c) for c in frame.columns])
    arrays = {}
    for name in spec.features:
        try:
            arrays[name] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(
                f"column {name!r} of the DataFrame ({frame[name].dtype}) cannot be read: {exc}"
            ) from exc
    return feature_tensors(pa.table(arrays), spec, names=names, report=report)


def _worker_streams(source: RecordBatchSource, options: FeedOptions) -> list[int]:
    shard_index, num_shards = options.shard_index, options.num_shards
    streams = shard_streams(source.num_streams, shard_index, num_shards)
    if not streams:
        raise ValueError(
            f"worker {shard_index} of {num_shards} gets no stream of {source.description} "
            f"({source.num_streams} streams); create the read session with >= {num_shards} streams"
        )
    return streams


def _read_streams(
    streams: Sequence[int],
    elements: Callable[[int], Iterator],
    signature: object,
    deterministic: bool,
    unpack: Callable | None = None,
) -> tf.data.Dataset:
    """Interleave one ``from_generator`` dataset per stream, keeping errors for re-raising."""

    def generate(stream_index):
        try:
            yield from elements(int(stream_index))
        except Exception as exc:
            with _ERRORS_LOCK:
                _RECENT_ERRORS.append(exc)
            raise

    def stream_dataset(stream_index):
        ds = tf.data.Dataset.from_generator(
            generate, args=(stream_index,), output_signature=signature
        )
        return ds.map(unpack) if unpack else ds

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(streams, dtype=tf.int64))
    return ds.interleave(
        stream_dataset,
        cycle_length=len(streams),
        num_parallel_calls=len(streams),
        deterministic=deterministic,
    )


def _rebatched(ds: tf.data.Dataset, options: FeedOptions) -> tf.data.Dataset:
    # Keep whole source elements ready so the trainer never waits at a boundary.
    return ds.prefetch(options.prefetch).rebatch(
        options.batch_size, drop_remainder=options.drop_remainder
    )


def _finished(ds: tf.data.Dataset, prefetch: int, options: FeedOptions) -> tf.data.Dataset:
    """Prefetch and set the tf.data options shared by both feeds (no autotune stalls)."""
    tf_options = tf.data.Options()
    tf_options.deterministic = options.deterministic
    tf_options.autotune.enabled = False
    if options.threads:
        tf_options.threading.private_threadpool_size = options.threads
    return ds.prefetch(prefetch).with_options(tf_options)
