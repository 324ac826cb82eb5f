"""The narrow waist: every data source is a set of streams of Arrow RecordBatches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class RecordBatchSource(Protocol):
    """A table read as ``num_streams`` independent streams of Arrow record batches.

    Implementations: BigQuery Storage Read v1 (``bigquery_storage``), DuckDB (``duckdb_source``),
    in-memory Arrow (``arrow_memory``) and, in the legacy env only, tensorflow-io.
    ``read_stream`` may be called from several threads at once (one call per stream).
    """

    @property
    def description(self) -> str:
        """Human-readable name of the table, used in error messages."""
        ...

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of the selected columns (in selection order)."""
        ...

    @property
    def num_streams(self) -> int:
        """Number of independent streams; at least 1."""
        ...

    def read_stream(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of stream ``index`` (0 <= index < num_streams)."""
        ...


def shard_streams(num_streams: int, shard_index: int = 0, num_shards: int = 1) -> list[int]:
    """Streams read by worker ``shard_index`` of ``num_shards`` (disjoint, covering all).

    Raises:
        ValueError: if the shard arguments are out of range.
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard {shard_index} of {num_shards} is out of range")
    return [i for i in range(num_streams) if i % num_shards == shard_index]
