"""The training feed's chunk cache (issue 12 item 7): later passes from memory, same batches.

The proof that the cache changes nothing the model sees: the SHA-256 of every batch of the
shuffled training feed, over several passes, is the same with the cache as without it
(``cache_bytes=0``, the feed before the cache existed). Over the budget nothing is kept and
every pass reads the source.
"""

import hashlib

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.reading.datasets import (
    DatasetReport,
    FeedOptions,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.training_encoding import ChunkCache

SPEC = FeatureSpec(
    label="label", numeric=("x", "y"), categorical=("c",), weight="w", classes=("0", "1", "2")
)
VOCABULARIES = {"c": ["a", "b", ""]}
ROWS = 5000


class CountingSource(ArrowTableSource):
    """An in-memory source that counts how often each stream is read."""

    def __init__(self, table: pa.Table, **kwargs) -> None:
        super().__init__(table, **kwargs)
        self.reads: list[int] = []

    def read_stream(self, index: int):
        self.reads.append(index)
        yield from super().read_stream(index)


def table() -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(size=ROWS)
    x[::50] = np.inf  # counted as non-finite in every pass
    return pa.table(
        {
            "x": pa.array(x, mask=rng.random(ROWS) < 0.1),
            "y": pa.array(rng.integers(0, 100, ROWS), pa.int64()),
            "c": pa.array(rng.choice(["a", "b", "z"], ROWS).tolist(), mask=rng.random(ROWS) < 0.1),
            "label": pa.array(rng.integers(0, 3, ROWS), pa.int64()),
            "w": pa.array(rng.choice([1.0, 3.0], ROWS)),
        }
    )


def feed(source, cache_bytes, report=None, **options):
    settings = {"batch_size": 64, "shuffle_batches": 16, "seed": 7, "cache_bytes": cache_bytes}
    return make_encoded_dataset(
        source,
        SPEC,
        VOCABULARIES,
        FeedOptions(**(settings | options)),
        chunk_rows=700,
        report=report,
    )


def pass_digest(ds) -> str:
    """SHA-256 of one pass: every tensor of every batch, in order."""
    digest = hashlib.sha256()
    with raise_source_errors():
        for features, label, weight in ds:
            for tensor in (*(features[k] for k in sorted(features)), label, weight):
                digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_later_passes_come_from_memory_with_the_same_batches_for_a_seed():
    plain_source = CountingSource(table(), num_streams=3, batch_rows=256)
    cached_source = CountingSource(table(), num_streams=3, batch_rows=256)
    plain_report, cached_report = DatasetReport(), DatasetReport()
    plain = feed(plain_source, 0, plain_report)
    cached = feed(cached_source, 1 << 20, cached_report)
    before = [pass_digest(plain) for _ in range(3)]
    after = [pass_digest(cached) for _ in range(3)]
    assert before == after  # the batches the model sees are unchanged
    assert len(set(before)) == 1  # the same order every pass (resumable runs)
    assert sorted(plain_source.reads) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(cached_source.reads) == [0, 1, 2]  # passes 2 and 3 read nothing
    assert cached_report.to_dict() == plain_report.to_dict()  # counters replayed
    infinite = int(np.isinf(table().column("x").drop_null().to_numpy()).sum())
    assert infinite > 0 and cached_report.non_finite == {"x": 3 * infinite}


def test_over_the_budget_nothing_is_kept_and_every_pass_reads_the_source():
    source = CountingSource(table(), num_streams=2, batch_rows=256)
    small = feed(source, 50_000)  # the split encodes to ~100 kB
    reference = pass_digest(feed(ArrowTableSource(table(), num_streams=2, batch_rows=256), 0))
    assert [pass_digest(small) for _ in range(2)] == [reference, reference]
    assert sorted(source.reads) == [0, 0, 1, 1]


def test_budget_is_a_fixed_size_whatever_the_table():
    cache = ChunkCache([0], 1000)
    chunk = ({"numeric": np.zeros((100, 2), np.float32)}, np.zeros(100, np.int32), np.ones(100))
    counts = DatasetReport()
    out = list(cache.chunks(0, lambda: iter([(chunk, counts)] * 5)))
    assert len(out) == 5 and cache.state == "off" and cache.nbytes == 0
    fits = ChunkCache([0], 10_000)
    list(fits.chunks(0, lambda: iter([(chunk, counts)] * 5)))
    assert fits.state == "full" and fits.nbytes == 5 * (800 + 400 + 800)
    with pytest.raises(ValueError, match="budget"):
        ChunkCache([0], -1)


def test_an_abandoned_first_pass_turns_the_cache_off_and_stays_correct():
    source = CountingSource(table(), num_streams=2, batch_rows=256)
    ds = feed(source, 1 << 20)
    with raise_source_errors():
        next(iter(ds))  # a first pass stopped early
    reference = pass_digest(feed(ArrowTableSource(table(), num_streams=2, batch_rows=256), 0))
    assert [pass_digest(ds) for _ in range(2)] == [reference, reference]


def test_keras_fit_fills_the_cache_in_its_first_epoch():
    source = CountingSource(table(), num_streams=2, batch_rows=256)
    ds = feed(source, 1 << 20).map(lambda f, y, w: (f["numeric"], y, w))
    ds = ds.map(lambda x, y, w: (tf.where(tf.math.is_nan(x), 0.0, x), y, w))
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-ROWS // 64)))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(ds, epochs=3, verbose=0)
    assert sorted(source.reads) == [0, 1]
