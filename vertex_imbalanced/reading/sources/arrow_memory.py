"""In-memory Arrow table as a RecordBatchSource (tests, benchmarks, small local data)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa


class ArrowTableSource:
    """Serve an in-memory ``pa.Table`` as ``num_streams`` contiguous slices."""

    def __init__(
        self,
        table: pa.Table,
        *,
        num_streams: int = 1,
        batch_rows: int = 8192,
        name: str = "memory",
    ) -> None:
        """Create the source.

        Args:
            table: the data.
            num_streams: how many disjoint streams to split the rows into.
            batch_rows: rows per record batch.
            name: name used in error messages.
        """
        self._table = table
        self._streams = max(1, min(num_streams, max(1, table.num_rows)))
        self._batch_rows = batch_rows
        self._name = name

    @property
    def description(self) -> str:
        """Name used in error messages."""
        return self._name

    @property
    def schema(self) -> pa.Schema:
        """Schema of the table."""
        return self._table.schema

    @property
    def num_streams(self) -> int:
        """Number of streams."""
        return self._streams

    def read_stream(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the batches of slice ``index``."""
        n = self._table.num_rows
        start = n * index // self._streams
        stop = n * (index + 1) // self._streams
        yield from self._table.slice(start, stop - start).to_batches(max_chunksize=self._batch_rows)
