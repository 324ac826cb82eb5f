"""Arrow record batches -> training chunks for the model's inner, encoded input (vectorised).

A chunk holds ``numeric`` ``[n, k]`` float32 (NaN = NULL), ``categorical`` ``[n, m]`` int32 ids in
``StringLookup`` order (0 = out of vocabulary, ``i + 1`` = ``vocabulary[i]``, NULL -> the ``""``
token), the label ids (int32) and the weights (float32). Record batches are gathered until a
chunk has at least ``chunk_rows`` rows, so the fixed cost of each pyarrow / numpy call and of
handing a tensor to tf.data is paid per chunk rather than per (possibly small) record batch.
The vocabularies must be those of the model (:func:`vertex_imbalanced.training.model.model_vocabularies`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.reading.record_packing import (
    MISSING_CATEGORY,
    BatchPacker,
    DatasetReport,
    categorical_to_string,
)

CHUNK_ROWS = 65_536
"""Default minimum rows per chunk (about 4 MB for 13 feature columns)."""

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
        for chunk, _ in self.counted_chunks(batches, chunk_rows, report=self._labels.report):
            yield chunk

    def counted_chunks(
        self,
        batches: Iterable[pa.RecordBatch],
        chunk_rows: int = CHUNK_ROWS,
        *,
        report: DatasetReport | None = None,
    ) -> Iterator[tuple[Chunk, DatasetReport]]:
        """As :meth:`chunks`, each chunk with its own counters (also added to ``report``)."""
        pending: list[pa.RecordBatch] = []
        rows = 0

        def encoded() -> tuple[Chunk, DatasetReport]:
            counts = DatasetReport()
            chunk = self.encode(
                pending[0] if len(pending) == 1 else pa.Table.from_batches(pending), counts
            )
            if report is not None:
                report.merge(counts)
            return chunk, counts

        for batch in batches:
            if not batch.num_rows:
                continue
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield encoded()
                pending, rows = [], 0
        if pending:
            yield encoded()


DEFAULT_CACHE_BYTES = 1 << 30
"""Default memory budget of a training feed's chunk cache (1 GiB; about 17M rows of 13 features)."""


class ChunkCache:
    """The encoded chunks of one feed's first pass, served from memory on later passes.

    Later epochs of a training run read the same split again; its encoded form is small
    (4 bytes per feature per row, plus 8 for label and weight), so re-reading and re-encoding
    it costs CPU the model could use. The cache keeps a copy of every chunk of the **first
    pass** of every stream while their total stays within ``budget`` bytes; once every stream
    has finished its first pass, later passes yield the same chunks in the same order, so
    the batches, and the shuffled order for a seed, are exactly those of a feed without cache.

    All or nothing: if the split is larger than the budget, or a first pass is abandoned, the
    copies are released at once and every pass reads the source, as without cache, so memory
    never exceeds the budget whatever the table's size. Mixing cached streams with streams
    read again would be wrong for a source whose streams change between passes (a renewed
    BigQuery read session splits the rows differently), so part of a split is never cached.
    Counters (``DatasetReport``) are replayed for cached passes, so they read as without cache.
    """

    def __init__(self, streams: Sequence[int], budget: int) -> None:
        """Cache the chunks of ``streams`` within ``budget`` bytes (0: off)."""
        if budget < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, got {budget}")
        self._streams = frozenset(streams)
        self._budget = budget
        self._lock = threading.Lock()
        self._started: set[int] = set()
        self._kept: dict[int, list[tuple[Chunk, DatasetReport]]] = {}
        self._bytes = 0
        self._state = "filling" if budget > 0 else "off"

    @property
    def state(self) -> str:
        """``"filling"`` (first pass), ``"full"`` (later passes from memory) or ``"off"``."""
        return self._state

    @property
    def nbytes(self) -> int:
        """Bytes held (at most the budget)."""
        return self._bytes

    def chunks(
        self,
        stream: int,
        read: Callable[[], Iterator[tuple[Chunk, DatasetReport]]],
        report: DatasetReport | None = None,
    ) -> Iterator[Chunk]:
        """One pass of ``stream``: from memory when full, else ``read()`` (kept on pass 1)."""
        with self._lock:
            first = stream not in self._started
            self._started.add(stream)
            if not first and self._state == "filling":  # read again before pass 1 finished
                self._off()
            serve, keep = self._state == "full", first and self._state == "filling"
        if serve:
            for chunk, counts in self._kept[stream]:
                if report is not None:
                    report.merge(counts)
                yield chunk
            return
        kept: list[tuple[Chunk, DatasetReport]] = []
        try:
            for chunk, counts in read():
                if report is not None:
                    report.merge(counts)
                if keep:
                    keep = self._reserve(_chunk_bytes(chunk))
                    if keep:
                        kept.append((_copied(chunk), counts))
                    else:
                        kept = []  # over the budget: release this stream's copies too
                yield chunk
        except BaseException:  # an error or an abandoned pass (GeneratorExit)
            if keep:
                with self._lock:
                    self._off()
            raise
        if keep:
            self._complete(stream, kept)

    def _reserve(self, nbytes: int) -> bool:
        with self._lock:
            if self._state != "filling":
                return False
            if self._bytes + nbytes > self._budget:
                self._off()
                return False
            self._bytes += nbytes
            return True

    def _complete(self, stream: int, kept: list[tuple[Chunk, DatasetReport]]) -> None:
        with self._lock:
            if self._state == "filling":
                self._kept[stream] = kept
                if set(self._kept) == self._streams:
                    self._state = "full"

    def _off(self) -> None:
        """Release every copy for good (caller holds the lock)."""
        self._state, self._kept, self._bytes = "off", {}, 0


def _chunk_bytes(chunk: Chunk) -> int:
    features, label, weight = chunk
    return sum(a.nbytes for a in features.values()) + label.nbytes + weight.nbytes


def _copied(chunk: Chunk) -> Chunk:
    """Own copies (encoded arrays are views of reused blocks)."""
    features, label, weight = chunk
    return {k: a.copy() for k, a in features.items()}, label.copy(), weight.copy()
