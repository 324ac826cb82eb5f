"""Arrow record batches -> training chunks for the model's inner, encoded input (vectorised).

A chunk holds ``numeric`` ``[n, k]`` float32 (NaN = NULL), ``categorical`` ``[n, m]`` int32 ids in
``StringLookup`` order (0 = out of vocabulary, ``i + 1`` = ``vocabulary[i]``, NULL -> the ``""``
token), the label ids (int32) and the weights (float32). Record batches are gathered until a
chunk has at least ``chunk_rows`` rows, so the fixed cost of each pyarrow / numpy call and of
handing a tensor to tf.data is paid per chunk rather than per (possibly small) record batch.
The vocabularies must be those of the model (:func:`vertex_imbalanced.training.model.model_vocabularies`).
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import SourceError
from vertex_imbalanced.reading.record_packing import (
    MISSING_CATEGORY,
    BatchPacker,
    DatasetReport,
    categorical_to_string,
)

CHUNK_ROWS = 65_536
"""Default minimum rows per chunk (about 4 MB for 13 feature columns).

Smaller chunks cost CPU on every pass (on 1M rows of ``bench/training.py``'s table, 32,768-row
chunks took 1.10-1.18 s of CPU for a first epoch vs 0.75-0.92 s, and 0.51-0.55 s vs 0.39 s
for a cached later one) but memory less: each stream holds about one chunk of Arrow rows and
one encoded chunk while it reads. The trainer's validation feed, read again every epoch and
never cached, uses smaller ones (``trainer.VALIDATION_CHUNK_ROWS``)."""

ENCODED_NUMERIC = "numeric"
ENCODED_CATEGORICAL = "categorical"

Chunk = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


class BufferPool:
    """Output arrays over reused memory blocks (thread-safe).

    Fresh memory for every chunk costs page faults -- more CPU than encoding the chunk -- so
    the blocks are reused. Arrays start 8 bytes past a 64-byte boundary: tf.data copies such an
    array into its own (recycled) buffers at once and drops its reference, whereas it would
    adopt an aligned array and hold it until every batch sliced from it is gone. Correctness
    does not depend on that: each array is a view whose ``base`` is its block, and a block is
    handed out again only when the pool holds its last reference.
    """

    def __init__(self, limit: int = 32) -> None:
        """Keep at most ``limit`` blocks."""
        self._blocks: list[np.ndarray] = []
        self._limit = limit
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        with self._lock:
            # the smallest free block that fits; a free block's references are the list, the
            # comprehension variable and getrefcount's argument
            free = [b for b in self._blocks if b.nbytes >= size + 72 and sys.getrefcount(b) == 3]
            block = min(free, key=len) if free else np.empty(size + 72, np.uint8)
            if not free and len(self._blocks) < self._limit:
                self._blocks.append(block)
            start = (-block.ctypes.data % 64) + 8
            return block[start : start + size].view(dtype).reshape(shape)


def by_piece(
    column: pa.Array | pa.ChunkedArray,
    out: np.ndarray,
    write: Callable[[pa.Array, np.ndarray], None],
) -> None:
    """``write`` each Arrow chunk of ``column`` into its rows of ``out``.

    Working per record batch keeps every temporary array small, so the allocator reuses memory
    instead of mapping (and page-faulting) fresh pages for a chunk-sized temporary each time.
    """
    start = 0
    for piece in column.chunks if isinstance(column, pa.ChunkedArray) else (column,):
        stop = start + len(piece)
        write(piece, out[start:stop])
        start = stop


class CategoryLookup:
    """Map one categorical column to ``StringLookup`` ids with one hash pass in Arrow."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        """Create the lookup for ``vocabulary`` (id ``i + 1`` for ``vocabulary[i]``)."""
        tokens = [str(t) for t in vocabulary]
        # NULL matches the trailing None of the value set and takes the id of the "" token.
        self._options = pc.SetLookupOptions(
            value_set=pa.array([*tokens, None], pa.string()), skip_nulls=False
        )
        missing = tokens.index(MISSING_CATEGORY) + 1 if MISSING_CATEGORY in tokens else 0
        # position in the value set -> id; the last entry (not found) -> 0 = out of vocabulary
        self._ids = np.array([*range(1, len(tokens) + 1), missing, 0], np.int32)

    def __call__(self, column: pa.Array, out: np.ndarray) -> None:
        """Write the ids of ``column`` into ``out`` (an int32 vector of the same length)."""
        if column.type != pa.string():
            column = categorical_to_string(column)  # bool / integer / large_string columns
        found = pc.index_in(column, options=self._options)
        positions = pc.fill_null(found, len(self._ids) - 1).to_numpy(zero_copy_only=False)
        np.take(self._ids, positions, out=out, mode="clip")


def _ids_into(ids: pa.Array, out: np.ndarray) -> None:
    out[:] = ids.to_numpy(zero_copy_only=False)


class ChunkEncoder:
    """Encodes the record batches of one source for one feature spec, class list and vocabulary."""

    def __init__(
        self,
        spec: FeatureSpec,
        classes: Sequence[str],
        vocabularies: Mapping[str, Sequence[str]],
        *,
        description: str,
        label_policy: str = "error",
        weight_scale: float = 1.0,
        report: DatasetReport | None = None,
    ) -> None:
        """Create an encoder.

        Args:
            spec: feature roles.
            classes: class names in id order (see :class:`BatchPacker`).
            vocabularies: categorical column -> tokens in lookup order (the model's).
            description: table name for error messages.
            label_policy: ``"error"`` or ``"skip"`` rows with NULL/unknown labels.
            weight_scale: factor applied to every weight.
            report: counters to update.

        Raises:
            ValueError: a categorical column without a vocabulary or a weight scale <= 0.
        """
        missing = [c for c in spec.categorical if c not in vocabularies]
        if missing:
            raise ValueError(f"no vocabulary for categorical column(s) {missing}")
        if not weight_scale > 0:
            raise ValueError(f"weight_scale must be > 0, got {weight_scale}")
        self.spec = spec
        self._weight_scale = np.float32(weight_scale)
        self._labels = BatchPacker(
            spec, classes, description=description, label_policy=label_policy, report=report
        )
        self._lookups = {c: CategoryLookup(vocabularies[c]) for c in spec.categorical}
        self._buffers = BufferPool()

    def encode(
        self, table: pa.Table | pa.RecordBatch, report: DatasetReport | None = None
    ) -> Chunk:
        """Encode all rows of ``table``; count them in ``report`` (default: the encoder's)."""
        report = self._labels.report if report is None else report
        table, ids, skipped, examples = self._labels.labelled(table)
        n = table.num_rows
        features: dict[str, np.ndarray] = {}
        if self.spec.numeric:
            numeric = self._buffers.take((n, len(self.spec.numeric)), np.float32)
            for j, name in enumerate(self.spec.numeric):
                by_piece(table.column(name), numeric[:, j], self._numeric_writer(name, report))
            features[ENCODED_NUMERIC] = numeric
        if self.spec.categorical:
            categorical = self._buffers.take((n, len(self.spec.categorical)), np.int32)
            for j, name in enumerate(self.spec.categorical):
                by_piece(table.column(name), categorical[:, j], self._lookups[name])
            features[ENCODED_CATEGORICAL] = categorical
        label = self._buffers.take((n,), np.int32)
        by_piece(ids, label, _ids_into)
        weight = self._buffers.take((n,), np.float32)
        column = self._labels.weight_column(table)
        if column is None:
            weight.fill(self._weight_scale)
        else:
            by_piece(column, weight, self._labels.weight_into)
            if self._weight_scale != 1:
                weight *= self._weight_scale
        report.add(n, skipped, examples)
        return features, label, weight

    def _numeric_writer(
        self, name: str, report: DatasetReport
    ) -> Callable[[pa.Array, np.ndarray], None]:
        def write(piece: pa.Array, out: np.ndarray) -> None:
            self._labels.numeric_column(piece, out, name, report)

        return write

    def chunks(
        self, batches: Iterable[pa.RecordBatch], chunk_rows: int = CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Encode ``batches`` in chunks of at least ``chunk_rows`` rows (the last may be smaller)."""
        for chunk, _, _ in self.counted_chunks(batches, chunk_rows, report=self._labels.report):
            yield chunk

    def counted_chunks(
        self,
        batches: Iterable[pa.RecordBatch],
        chunk_rows: int = CHUNK_ROWS,
        *,
        report: DatasetReport | None = None,
    ) -> Iterator[tuple[Chunk, DatasetReport, int]]:
        """As :meth:`chunks`, with counters and position.

        Yields ``(chunk, counts, end)``: the chunk's own counters (also added to ``report``)
        and the number of source rows read up to its end (skipped labels included).
        """
        pending: list[pa.RecordBatch] = []
        rows = 0
        position = 0

        def encoded() -> tuple[Chunk, DatasetReport, int]:
            counts = DatasetReport()
            chunk = self.encode(
                pending[0] if len(pending) == 1 else pa.Table.from_batches(pending), counts
            )
            if report is not None:
                report.merge(counts)
            return chunk, counts, position

        for batch in batches:
            if not batch.num_rows:
                continue
            pending.append(batch)
            rows += batch.num_rows
            position += batch.num_rows
            if rows >= chunk_rows:
                yield encoded()
                pending, rows = [], 0
        if pending:
            yield encoded()


DEFAULT_CACHE_BYTES = 128 << 20
"""Default memory budget of one training feed's chunk cache: 128 MiB, a fixed size.

About 2.2M rows of 13 features (4 bytes per feature per row, plus 8 for label and weight),
so a 1M-row split of that shape is served from memory after its first epoch. The budget is
small beside a training process (~1-1.5 GB with TensorFlow), so its peak memory stays flat as
the table grows: from a 1M-row split (~60 MB cached) to a 10M-row one (128 MiB cached, the
rest streamed) it grows by ~70 MB. The trainer gives this budget to the training feed and none
to the validation feed (``trainer.TRAIN_CACHE_BYTES``)."""


def stable_streams(source: object) -> bool:
    """Whether every pass of a stream of ``source`` yields the same record batches.

    A source says so with a true ``stable_streams`` attribute (in-memory slices, DuckDB rowid
    ranges). A BigQuery read session renewed between passes splits the rows into other
    streams, so such a source must not claim it.
    """
    return getattr(source, "stable_streams", False) is True


class ChunkCache:
    """The encoded chunks of a feed's first pass, served from memory on later passes.

    Later epochs of a training run read the same split again; its encoded form is small
    (4 bytes per feature per row, plus 8 for label and weight), so re-reading and re-encoding
    it costs CPU the model could use. Each stream keeps a copy of its chunks within the one
    ``budget`` (bytes, shared by the streams). Later passes yield the very chunks a pass of the
    source would, in the same order, so the batches and the shuffled order for a seed are
    those of a feed without cache, whatever the budget.

    * The split fits: passes after the first read nothing.
    * It does not (``partial``, for sources with :func:`stable_streams`): each stream keeps the
      **last** chunks of its first pass that fit (older ones are dropped as newer ones
      arrive, so memory never exceeds the budget). A later pass reads and encodes the stream
      up to the first kept chunk, closes it there and yields the kept chunks: only the
      rows beyond the budget are read again.
    * It does not and the source's streams may change between passes (a renewed BigQuery
      read session): nothing is kept (a cached stream must not meet a re-read one from
      another session) and every pass reads the source; memory stays within the budget.

    Cached arrays are owned by the cache, read-only, and never start on a 64-byte boundary:
    tf.data adopts such an array without a copy, and Keras writes into its input tensors in
    place (the weighted metrics scale the sample weights in their buffer), which changed the
    cached weights from one epoch to the next. A misaligned array is always copied by tf.data.
    Counters (``DatasetReport``) are replayed for cached chunks, so they read as without cache.
    """

    def __init__(self, streams: Sequence[int], budget: int, *, partial: bool = False) -> None:
        """Cache the chunks of ``streams`` within ``budget`` bytes (0: off).

        Args:
            streams: the stream indexes of this feed.
            budget: bytes of encoded chunks kept at most, over all streams.
            partial: the source has :func:`stable_streams`: keep what fits of a split larger
                than the budget and read only the rest again.

        Raises:
            ValueError: a negative budget.
        """
        if budget < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, got {budget}")
        self._streams = frozenset(streams)
        self._budget = budget
        self._partial = partial
        self._lock = threading.Lock()
        self._started: set[int] = set()
        self._filling: set[int] = set()
        self._kept: dict[int, _Kept] = {}
        self._bytes = 0
        self._off = budget == 0

    @property
    def state(self) -> str:
        """Where the cache stands.

        ``"off"``, ``"filling"`` (a first pass not done), ``"full"`` (every stream from memory)
        or ``"partial"`` (every stream done, some read again in part).
        """
        with self._lock:
            if self._off:
                return "off"
            if set(self._kept) != self._streams:
                return "filling"
            return "full" if all(k.start == 0 for k in self._kept.values()) else "partial"

    @property
    def nbytes(self) -> int:
        """Bytes held (at most the budget)."""
        return self._bytes

    def release(self) -> None:
        """Drop every kept chunk for good; later passes read the source (the same batches).

        For a feed whose passes are over: the trainer releases the training feed's cache when
        the fit ends, so the decision rule and the export do not run beside it.
        """
        with self._lock:
            self._release()

    def chunks(
        self,
        stream: int,
        read: Callable[[], Iterator[tuple[Chunk, DatasetReport, int]]],
        report: DatasetReport | None = None,
    ) -> Iterator[Chunk]:
        """One pass of ``stream``; ``read()`` yields ``(chunk, counts, source rows so far)``.

        Raises:
            SourceError: a stable stream yielded other record batches than on its first pass.
        """
        with self._lock:
            first = stream not in self._started
            self._started.add(stream)
            if not self._partial and not first and set(self._kept) != self._streams:
                self._release()  # read again before every first pass finished
            kept = None if self._off else self._kept.get(stream)
            if kept is None and not self._off and stream not in self._filling:
                fill = first or self._partial
                if fill:
                    self._filling.add(stream)
            else:
                fill = False
            serve = kept is not None and (self._partial or set(self._kept) == self._streams)
        if serve:
            yield from self._served(stream, kept, read, report)
        elif fill:
            yield from self._filled(stream, read, report)
        else:
            for chunk, counts, _ in read():
                _count(report, counts)
                yield chunk

    def _served(self, stream: int, kept: _Kept, read, report) -> Iterator[Chunk]:
        """Read the stream up to its first kept chunk, then yield the kept chunks."""
        if kept.start:
            source = read()
            try:
                for chunk, counts, end in source:
                    if end > kept.start:  # overlaps the kept rows: not the first pass's chunks
                        break
                    _count(report, counts)
                    yield chunk
                    if end == kept.start:
                        break
                else:
                    end = -1
            finally:  # stop the source's stream here (a generator: closed at once)
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            if end != kept.start:
                raise SourceError(
                    f"stream {stream} yielded other record batches than on its first pass "
                    f"(a chunk ends at row {end}, the cached ones start at row {kept.start}); "
                    "the chunk cache needs a source whose passes are the same (stable_streams)"
                )
        for chunk, counts in kept.chunks:
            _count(report, counts)
            yield chunk

    def _filled(self, stream: int, read, report) -> Iterator[Chunk]:
        """A first pass from the source; keep the newest chunks that fit."""
        window: collections.deque[tuple[Chunk, DatasetReport, int, int]] = collections.deque()
        start = end = 0
        done = False
        try:
            for chunk, counts, end in read():
                _count(report, counts)
                if self._room(_chunk_bytes(chunk), window):
                    window.append((_owned(chunk), counts, start, _chunk_bytes(chunk)))
                start = end
                yield chunk
            done = True
        finally:
            with self._lock:
                self._filling.discard(stream)
                complete = done and not self._off
                if complete and not self._partial and window and window[0][2] != 0:
                    complete = False  # the whole stream did not fit: all or nothing
                if complete:
                    first_kept = window[0][2] if window else end
                    self._kept[stream] = _Kept(first_kept, [(c, n) for c, n, _, _ in window])
                elif not self._partial:
                    self._release()  # over the budget, abandoned or failed
                else:
                    self._bytes -= sum(b for *_, b in window)

    def _room(self, nbytes: int, window: collections.deque) -> bool:
        """Reserve ``nbytes`` for a new chunk, dropping this stream's oldest kept ones."""
        with self._lock:
            if self._off:
                window.clear()
                return False
            while self._bytes + nbytes > self._budget and window and self._partial:
                self._bytes -= window.popleft()[3]
            if self._bytes + nbytes > self._budget:
                if not self._partial:
                    self._release()
                    window.clear()
                else:  # keep a suffix: what is older than this chunk can never be used
                    self._bytes -= sum(b for *_, b in window)
                    window.clear()
                return False
            self._bytes += nbytes
            return True

    def _release(self) -> None:
        """Release every copy for good (caller holds the lock)."""
        self._off, self._kept, self._bytes = True, {}, 0


@dataclasses.dataclass(frozen=True)
class _Kept:
    """One stream's kept chunks: the last ones of its first pass, from source row ``start``."""

    start: int
    chunks: list[tuple[Chunk, DatasetReport]]


def _count(report: DatasetReport | None, counts: DatasetReport) -> None:
    if report is not None:
        report.merge(counts)


def _chunk_bytes(chunk: Chunk) -> int:
    features, label, weight = chunk
    return sum(a.nbytes for a in features.values()) + label.nbytes + weight.nbytes


def _owned(chunk: Chunk) -> Chunk:
    """Read-only copies tf.data cannot adopt (encoded arrays are views of reused blocks)."""
    features, label, weight = chunk
    return (
        {k: _unadoptable(a) for k, a in features.items()},
        _unadoptable(label),
        _unadoptable(weight),
    )


def _unadoptable(array: np.ndarray) -> np.ndarray:
    """A read-only copy of ``array`` 8 bytes past a 64-byte boundary (tf.data copies it)."""
    block = np.empty(array.nbytes + 72, np.uint8)
    start = (-block.ctypes.data % 64) + 8
    out = block[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    out.flags.writeable = False
    return out
