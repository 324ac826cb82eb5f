"""The chunk cache under ``keras.Model.fit``: the batches the model sees, epoch by epoch.

Cause of the run-to-run difference the trainer saw with the cache on (issue 12 item 7):
``from_generator`` adopts a numpy array whose data lies on a 64-byte boundary without a copy,
and Keras writes into its input tensors in place (the weighted accuracy metric multiplies the
sample weights into their buffer). A cached chunk handed to tf.data that way was overwritten
during an epoch, and the next epoch served the changed weights. Whether a cached copy landed on
such a boundary depended on the allocator, so two runs with the same seed could differ. These
tests record every batch at the start of ``train_step`` and compare the arrays themselves.
"""

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.reading.datasets import FeedOptions, make_encoded_dataset
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource

SPEC = FeatureSpec(
    label="label", numeric=("x", "y"), categorical=("c",), weight="w", classes=("0", "1", "2")
)
VOCABULARIES = {"c": ["a", "b", ""]}
ROWS = 3000
BATCH = 64
EPOCHS = 3


def table() -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table(
        {
            "x": pa.array(rng.normal(size=ROWS), mask=rng.random(ROWS) < 0.1),
            "y": pa.array(rng.normal(size=ROWS)),
            "c": pa.array(rng.choice(["a", "b", "z"], ROWS).tolist()),
            "label": pa.array(rng.integers(0, 3, ROWS), pa.int64()),
            "w": pa.array(rng.choice([1.0, 2.0], ROWS)),
        }
    )


class StableSource(ArrowTableSource):
    """In-memory slices: every pass of a stream yields the same record batches."""

    stable_streams = True


def seen_by_fit(source, cache_bytes: int) -> list[list[np.ndarray]]:
    """Every batch (numeric, categorical, label, weight) ``train_step`` received, in order."""
    keras.utils.set_random_seed(0)  # the shuffle's order depends on TF's global seed too
    options = FeedOptions(batch_size=BATCH, shuffle_batches=8, seed=3, cache_bytes=cache_bytes)
    # many chunks of two whole batches each (a batch within one chunk is a slice of it, not a
    # copy): the cache before the fix exposed some of them on a 64-byte boundary
    ds = make_encoded_dataset(source, SPEC, VOCABULARIES, options, chunk_rows=128)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-ROWS // BATCH)))
    seen: list[list[np.ndarray]] = []

    def record(*arrays):
        seen.append([np.array(a, copy=True) for a in arrays])
        return np.int32(0)

    numeric = keras.Input((2,), name="numeric")
    categorical = keras.Input((1,), name="categorical", dtype="int32")
    hidden = keras.layers.Concatenate()(
        [
            keras.ops.where(keras.ops.isnan(numeric), 0.0, numeric),
            keras.ops.cast(categorical, "float32"),
        ]
    )
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model({"numeric": numeric, "categorical": categorical}, outputs)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    train_step = model.train_step

    def recording_step(data):
        x, y, w = data
        done = tf.numpy_function(
            record, [x["numeric"], x["categorical"], y, w], tf.int32, stateful=True
        )
        with tf.control_dependencies([done]):
            x = {k: tf.identity(v) for k, v in x.items()}
        return train_step((x, y, w))

    model.train_step = recording_step
    model.fit(ds, epochs=EPOCHS, verbose=0, shuffle=False)
    return seen


def assert_same_batches(actual, expected):
    assert len(actual) == len(expected) == EPOCHS * -(-ROWS // BATCH)
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for name, a, b in zip(
            ("numeric", "categorical", "label", "weight"), got, want, strict=True
        ):
            np.testing.assert_array_equal(a, b, err_msg=f"step {step} ({name})")


@pytest.fixture(scope="module")
def without_cache():
    return seen_by_fit(StableSource(table(), num_streams=3, batch_rows=128), 0)


def test_without_cache_every_epoch_sees_the_first_epochs_batches(without_cache):
    steps = -(-ROWS // BATCH)
    assert_same_batches(without_cache, without_cache[:steps] * EPOCHS)


@pytest.mark.parametrize(
    "cache_bytes",
    [1 << 20, 30_000],  # the split (~60 kB encoded) fits / a budget smaller than the split
    ids=["split-fits", "budget-below-split"],
)
def test_fit_sees_the_same_batches_with_the_cache_as_without(without_cache, cache_bytes):
    cached = seen_by_fit(StableSource(table(), num_streams=3, batch_rows=128), cache_bytes)
    assert_same_batches(cached, without_cache)
