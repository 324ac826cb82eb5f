"""The training feed's chunk cache (issue 12 item 7): later passes from memory, same batches.

The proof that the cache changes nothing the model sees: the SHA-256 of every batch of the
shuffled training feed, over several passes, is the same with the cache as without it
(``cache_bytes=0``, the feed before the cache existed), whatever the budget. Over the budget a
source with stable streams keeps the last chunks of each stream and reads only the rest again;
any other source keeps nothing and every pass reads it. (What ``model.fit`` sees, epoch by
epoch: test_chunk_cache_training.py.)
"""

import hashlib

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import SourceError
from vertex_imbalanced.reading.datasets import (
    DatasetReport,
    FeedOptions,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.training_encoding import (
    DEFAULT_CACHE_BYTES,
    ChunkCache,
    stable_streams,
)

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
        self.rows = 0  # rows handed to the feed (a pass closed early counts what it took)

    def read_stream(self, index: int):
        self.reads.append(index)
        for batch in super().read_stream(index):
            self.rows += batch.num_rows
            yield batch


class StableSource(CountingSource):
    """Every pass of a stream yields the same record batches (in-memory slices)."""

    stable_streams = True


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


def chunk_of(rows: int) -> tuple:
    """A chunk of ``rows`` rows and 20 bytes a row, its counters and nothing else."""
    features = {"numeric": np.full((rows, 3), rows, np.float32)}
    return features, np.zeros(rows, np.int32), np.ones(rows, np.float32)


def positioned(sizes):
    """``read()`` for ChunkCache: chunks of ``sizes`` rows with their end positions."""
    ends = np.cumsum(sizes)
    return lambda: iter(
        [(chunk_of(n), DatasetReport(), int(e)) for n, e in zip(sizes, ends, strict=True)]
    )


def test_budget_is_a_fixed_size_whatever_the_table():
    sizes = [100] * 5  # 2000 bytes each
    off = ChunkCache([0], 5000)  # stream may change between passes: all or nothing
    assert len(list(off.chunks(0, positioned(sizes)))) == 5
    assert off.state == "off" and off.nbytes == 0
    fits = ChunkCache([0], 10_000)
    list(fits.chunks(0, positioned(sizes)))
    assert fits.state == "full" and fits.nbytes == 5 * 2000
    with pytest.raises(ValueError, match="budget"):
        ChunkCache([0], -1)
    assert DEFAULT_CACHE_BYTES == 128 << 20


def test_above_the_budget_a_stable_stream_keeps_its_last_chunks_and_reads_the_rest():
    cache = ChunkCache([0, 1], 4500, partial=True)  # 225 rows of 20 bytes
    reads = []

    def read(sizes):
        def counted():
            for chunk, counts, end in positioned(sizes)():
                reads.append(len(chunk[1]))
                assert cache.nbytes <= 4500  # never above the budget, even while filling
                yield chunk, counts, end

        return counted

    first = [len(c[1]) for c in cache.chunks(1, read([60]))]
    first += [len(c[1]) for c in cache.chunks(0, read([100, 50, 100, 70, 30]))]
    assert cache.state == "partial" and cache.nbytes == (60 + 70 + 30) * 20
    reads.clear()
    again = [len(c[1]) for c in cache.chunks(1, read([60]))]
    again += [len(c[1]) for c in cache.chunks(0, read([100, 50, 100, 70, 30]))]
    assert again == first == [60, 100, 50, 100, 70, 30]
    assert reads == [100, 50, 100]  # stream 0 up to its first kept chunk; stream 1 from memory
    assert all(not a.flags.writeable for a in next(iter(cache.chunks(1, read([60]))))[1:])


def test_a_stream_that_changes_between_passes_is_an_error_not_wrong_rows():
    cache = ChunkCache([0], 5000, partial=True)
    list(cache.chunks(0, positioned([100, 100, 100])))  # keeps the last two (from row 100)
    with pytest.raises(SourceError, match=r"stream 0 .* row 150, the cached ones start at row 100"):
        list(cache.chunks(0, positioned([150, 150])))


def test_a_budget_smaller_than_the_split_gives_the_same_batches_and_reads_less():
    reference = pass_digest(feed(ArrowTableSource(table(), num_streams=3, batch_rows=256), 0))
    plain_report, report = DatasetReport(), DatasetReport()
    list(feed(ArrowTableSource(table(), num_streams=3, batch_rows=256), 0, plain_report))
    source = StableSource(table(), num_streams=3, batch_rows=256)
    assert stable_streams(source) and not stable_streams(CountingSource(table()))
    small = feed(source, 50_000, report)  # the split encodes to ~100 kB
    assert pass_digest(small) == reference and source.rows == ROWS
    for passes in (2, 3):
        assert pass_digest(small) == reference
        assert 0 < source.rows - (passes - 1) * ROWS < 0.7 * ROWS  # only the rest read again
    for _ in range(2):
        list(feed(ArrowTableSource(table(), num_streams=3, batch_rows=256), 0, plain_report))
    assert report.to_dict() == plain_report.to_dict()  # counters replayed


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


def test_a_released_cache_frees_its_chunks_and_later_passes_read_the_source_again():
    """The trainer releases the training feed's cache when the fit ends (issue 13 item 16)."""
    source = StableSource(table(), num_streams=2, batch_rows=256)
    caches: list[ChunkCache] = []
    settings = {"batch_size": 64, "shuffle_batches": 16, "seed": 7, "cache_bytes": 1 << 20}
    ds = make_encoded_dataset(
        source, SPEC, VOCABULARIES, FeedOptions(**settings), chunk_rows=700, on_cache=caches.append
    )
    (cache,) = caches
    first = pass_digest(ds)
    assert cache.state == "full" and cache.nbytes > 0
    assert pass_digest(ds) == first and sorted(source.reads) == [0, 1]
    cache.release()
    assert cache.state == "off" and cache.nbytes == 0
    assert pass_digest(ds) == first  # the same batches, read and encoded again
    assert sorted(source.reads) == [0, 0, 1, 1]
    assert pass_digest(ds) == first and cache.nbytes == 0  # nothing is kept again
