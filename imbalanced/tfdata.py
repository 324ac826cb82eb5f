"""Record-batch sources -> ``tf.data.Dataset`` of ``(features, label, weight)`` batches.

Each stream of the source becomes a ``from_generator`` dataset of packed batches
(``imbalanced.batch_packing``); the streams are read concurrently by ``interleave`` and the
packed tensors are split back into a feature dict in the graph. See docs/ARCHITECTURE.md for
the element contract (NULL -> NaN for numeric, "" for categorical).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator, Sequence

import tensorflow as tf

from imbalanced.batch_packing import MISSING_CATEGORY, BatchPacker, DatasetReport
from imbalanced.config import FeatureSpec
from imbalanced.schema import check_schema
from imbalanced.sources.base import RecordBatchSource, shard_streams

__all__ = [
    "MISSING_CATEGORY",
    "DatasetReport",
    "feature_signature",
    "make_dataset",
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


def feature_signature(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """TensorSpecs of the raw feature dict (the exported model's serving input)."""
    sig = {name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.numeric}
    sig.update({name: tf.TensorSpec([None], tf.string, name=name) for name in spec.categorical})
    return sig


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


def make_dataset(
    source: RecordBatchSource,
    spec: FeatureSpec,
    *,
    classes: Sequence[str] | None = None,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    label_policy: str = "error",
    shuffle_batches: int = 0,
    seed: int | None = None,
    deterministic: bool = True,
    prefetch: int = 2,
    threads: int | None = 2,
    report: DatasetReport | None = None,
) -> tf.data.Dataset:
    """Build the dataset of ``(features: dict, label: int64[n], weight: float32[n])`` batches.

    Args:
        source: where the record batches come from.
        spec: feature roles; its columns are checked against the source schema first.
        classes: class names in id order (default ``spec.classes``); label values are matched
            as strings. Empty: labels must be integer ids >= 0.
        batch_size: re-batch to this size; None keeps the source's record batches.
        drop_remainder: with ``batch_size``, drop a final smaller batch.
        shard_index: this worker's index, for multi-worker training.
        num_shards: number of workers; each reads a disjoint subset of the streams.
        label_policy: ``"error"`` on NULL/unknown labels (default) or ``"skip"`` and count them.
        shuffle_batches: shuffle buffer in record batches (same order every epoch, so a run
            resumed from a backup sees the same data as an uninterrupted one); 0 = off.
        seed: shuffle seed.
        deterministic: interleave streams in a fixed order (same seed + data -> same batches).
        prefetch: batches to prefetch (fixed, not AUTOTUNE: autotune can stall at the end).
        threads: size of a private tf.data thread pool (None: the global pool).
        report: counters updated while reading (rows, skipped labels).

    Returns:
        The dataset. Reading raises ``LabelError`` / ``SchemaError`` for bad data.

    Raises:
        SchemaError: missing or unusable columns (raised here, before any data is read).
        LabelError: a label column of a type that cannot hold class ids.
    """
    check_schema(source.description, source.schema, spec)
    streams = shard_streams(source.num_streams, shard_index, num_shards)
    if not streams:
        raise ValueError(
            f"worker {shard_index} of {num_shards} gets no stream of {source.description} "
            f"({source.num_streams} streams); create the read session with >= {num_shards} streams"
        )
    packer = BatchPacker(
        spec,
        spec.classes if classes is None else classes,
        description=source.description,
        label_policy=label_policy,
        report=report,
    )
    signature = _packed_signature(spec)
    unpack = _unpacker(spec)

    def generate(stream_index):
        try:
            for batch in source.read_stream(int(stream_index)):
                if batch.num_rows:
                    yield packer.pack(batch)
        except Exception as exc:
            with _ERRORS_LOCK:
                _RECENT_ERRORS.append(exc)
            raise

    def stream_dataset(stream_index):
        ds = tf.data.Dataset.from_generator(
            generate, args=(stream_index,), output_signature=signature
        )
        return ds.map(unpack)

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(streams, dtype=tf.int64))
    ds = ds.interleave(
        stream_dataset,
        cycle_length=len(streams),
        num_parallel_calls=len(streams),
        deterministic=deterministic,
    )
    if shuffle_batches:
        ds = ds.shuffle(shuffle_batches, seed=seed, reshuffle_each_iteration=False)
    if batch_size:
        # Keep whole record batches ready so the trainer never waits on a pack at a boundary.
        ds = ds.prefetch(prefetch).rebatch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(prefetch if not batch_size else max(prefetch, 8))
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    if threads:
        options.threading.private_threadpool_size = threads
    return ds.with_options(options)
