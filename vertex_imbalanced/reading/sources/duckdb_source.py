"""A table in a DuckDB file as a RecordBatchSource (the embedded, local default).

Streams are contiguous ``rowid`` ranges of the table, read with their own read-only connection,
so several streams can be read at once from different threads.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.duckdb_settings import connect as connect_duckdb
from vertex_imbalanced.warehouse.duckdb_settings import memory_limit_override
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns, validate_column

BATCH_ROWS = 8192


class DuckDBTable(NamedTuple):
    """Where a DuckDB source lives: the database file and the table in it."""

    path: str
    """Absolute path of the database file."""
    table: TableRef
    """``name`` or ``schema.name`` (``project`` is always None)."""


_URI_FORMS = "duckdb:///absolute/path.db?table=name (or ?table=schema.name)"


def _invalid(uri: str, why: str) -> PipelineInputError:
    return PipelineInputError(f"invalid DuckDB URI {uri!r}: {why}; use {_URI_FORMS}")


def _duckdb_table(text: str, uri: str) -> TableRef:
    try:
        ref = TableRef.parse(text)
    except PipelineInputError as err:
        raise _invalid(uri, str(err)) from err
    if ref.project is not None or text.startswith("bq://"):
        raise _invalid(uri, f"table {text!r} is not name or schema.name")
    return ref


def parse_duckdb_uri(uri: str) -> DuckDBTable:
    """Split a DuckDB source URI into the database file and the table.

    The one parser of DuckDB URIs (sources, warehouse engines, ``run_local.py``). Accepted
    forms, exactly:

    - ``duckdb:///absolute/path.db?table=name`` (a table in DuckDB's default schema ``main``)
    - ``duckdb:///absolute/path.db?table=schema.name``

    Three slashes: the host part is empty and the path absolute. The path may be
    percent-encoded (``%20`` for a space; :func:`duckdb_uri` writes it so). The query holds
    exactly one ``table`` and nothing else; no ``#fragment``.

    Args:
        uri: the URI.

    Returns:
        ``DuckDBTable(path, table)`` (a named tuple).

    Raises:
        PipelineInputError: another scheme, a host or relative path (``duckdb://file.db``),
            no or several ``table=``, another query key, a fragment, or an invalid table name.
    """
    if not isinstance(uri, str):
        raise PipelineInputError(f"invalid DuckDB URI {uri!r}: not a string; use {_URI_FORMS}")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "duckdb":
        raise _invalid(uri, "the scheme is not duckdb://")
    if parsed.netloc or not parsed.path.startswith("/"):
        raise _invalid(uri, "the path must be absolute, after three slashes")
    if parsed.fragment:
        raise _invalid(uri, f"unexpected fragment #{parsed.fragment}")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"table"})
    if unknown:
        raise _invalid(uri, f"unknown query key(s) {', '.join(unknown)}")
    tables = query.get("table", [])
    if len(tables) != 1:
        raise _invalid(uri, f"needs exactly one ?table=, got {len(tables)}")
    return DuckDBTable(urllib.parse.unquote(parsed.path), _duckdb_table(tables[0], uri))


def duckdb_uri(path: str | Path, table: str | TableRef) -> str:
    """Build the URI :func:`parse_duckdb_uri` reads back: ``duckdb:///abs/path.db?table=name``.

    Args:
        path: database file; made absolute (``Path.resolve``) and percent-encoded.
        table: ``name`` or ``schema.name``.

    Returns:
        The URI; ``parse_duckdb_uri(duckdb_uri(p, t)) == (str(Path(p).resolve()), t)``.

    Raises:
        PipelineInputError: an invalid table name, or a ``project.dataset.table`` reference.
    """
    ref = table if isinstance(table, TableRef) else TableRef.parse(table)
    if ref.project is not None:
        raise PipelineInputError(f"DuckDB table {str(ref)!r} is not name or schema.name")
    return f"duckdb://{urllib.parse.quote(str(Path(path).resolve()))}?table={ref}"


SCAN_MEMORY_LIMIT = "16MB"
"""DuckDB memory limit of a read-only database instance that serves scans (unless
``VI_DUCKDB_MEMORY_LIMIT`` is set, which wins as everywhere): a scan needs no working memory
beyond its vectors, and a larger buffer pool only keeps blocks that one pass reads once."""
SCAN_THREADS = 1
"""DuckDB threads of that instance: each stream's scan runs in the thread that reads it
(the feeds read their streams in parallel already); more threads only buffer more ahead."""
SCAN_STREAMING_BUFFER = "1MB"
"""Result rows DuckDB queues ahead of the reader per scan (``streaming_buffer_size``, a
per-connection setting; DuckDB's default is 10 MiB per query)."""


def scan_connection(path: str) -> duckdb.DuckDBPyConnection:
    """A connection for one stream's scan: read-only, with the scan settings above.

    The limit and the threads belong to the database instance, which in a pipeline step holds
    only scans (other connections of the pipeline set their own when they open; a writer's
    instance, which a scan shares when this process writes the file, keeps them). Train step
    on the demo table at 10M rows, alone, one run each: peak RSS 1,031 MB with DuckDB's defaults
    and our 64MB limit; with these settings, the validation feed's smaller chunks and the
    training cache released after the fit, 950-980 MB (1M rows: 850 MB either way); the feed
    reads as fast.

    Raises:
        duckdb.Error: what ``duckdb.connect`` raises.
    """
    limit = memory_limit_override() or SCAN_MEMORY_LIMIT
    try:
        con = connect_duckdb(path, read_only=True, limit=limit, threads=SCAN_THREADS)
    except duckdb.ConnectionException:
        # This process already holds the file open for writing (DuckDB refuses a second
        # configuration of the same file in one process); share that mode and its settings.
        con = connect_duckdb(path)
    try:
        con.execute(f"SET streaming_buffer_size = '{SCAN_STREAMING_BUFFER}'")
    except BaseException:
        con.close()
        raise
    return con


class DuckDBSource:
    """Read selected columns of a DuckDB table as ``num_streams`` rowid ranges."""

    stable_streams = True
    """Every pass yields the same record batches (fixed rowid ranges and batch size)."""

    def __init__(
        self,
        path: str | Path,
        table: str | TableRef,
        columns: Sequence[str],
        row_restriction: str | None = None,
        num_streams: int = 1,
        *,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        """Open the table and check the columns exist.

        Args:
            path: DuckDB database file (must exist).
            table: ``name`` or ``schema.name``.
            columns: columns to read, in this order.
            row_restriction: optional SQL filter (trusted text from our code, like the
                BigQuery Storage API's ``row_restriction``; ``;`` is refused).
            num_streams: how many rowid ranges to split the table into.
            batch_rows: rows per record batch.

        Raises:
            PipelineInputError: the file or table does not exist, or bad arguments.
            SchemaError: a column is missing (the closest name is suggested).
        """
        self._path = str(Path(path).resolve())
        self._ref = table if isinstance(table, TableRef) else TableRef.parse(table)
        self._columns = [validate_column(c) for c in columns]
        if row_restriction is not None and ";" in row_restriction:
            raise PipelineInputError(f"row_restriction may not contain ';': {row_restriction!r}")
        self._where = f"({row_restriction})" if row_restriction else "TRUE"
        self._batch_rows = batch_rows
        if not Path(self._path).exists():
            raise PipelineInputError(f"DuckDB file {self._path} does not exist")
        con = scan_connection(self._path)
        try:
            self._schema, self._ranges = self._inspect(con, max(1, num_streams))
        finally:
            con.close()

    def _inspect(
        self, con: duckdb.DuckDBPyConnection, num_streams: int
    ) -> tuple[pa.Schema, list[tuple[int, int]]]:
        found = con.execute(
            "SELECT table_type FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [self._ref.dataset or "main", self._ref.table],
        ).fetchall()
        if not found:
            raise PipelineInputError(f"table {self.description} does not exist")
        full = con.sql(f"SELECT * FROM {self._ref.duckdb} LIMIT 0").to_arrow_table().schema
        require_columns(self.description, self._columns, full.names)
        if not self._columns:
            raise SchemaError(f"no columns selected from {self.description}")
        schema = pa.schema([full.field(c) for c in self._columns])
        if found[0][0] != "BASE TABLE":  # views have no rowid: one stream
            return schema, [(-1, -1)]
        end = con.sql(f"SELECT coalesce(max(rowid) + 1, 0) FROM {self._ref.duckdb}").fetchall()[0][
            0
        ]
        n = max(1, min(num_streams, end))
        return schema, [(end * i // n, end * (i + 1) // n) for i in range(n)]

    @property
    def description(self) -> str:
        """``path:table`` for error messages."""
        return f"{self._path}:{self._ref}"

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of the selected columns."""
        return self._schema

    @property
    def num_streams(self) -> int:
        """Number of rowid ranges."""
        return len(self._ranges)

    def read_stream(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of rowid range ``index`` (own connection, read-only)."""
        lo, hi = self._ranges[index]
        cols = ", ".join(f'"{c}"' for c in self._columns)
        sql = f"SELECT {cols} FROM {self._ref.duckdb} WHERE {self._where}"
        params: dict[str, int] = {}
        if lo >= 0:
            # DuckDB keeps insertion (rowid) order by default, so no ORDER BY is needed.
            sql += " AND rowid >= $lo AND rowid < $hi"
            params = {"lo": lo, "hi": hi}
        con = scan_connection(self._path)
        try:
            reader = con.sql(sql, params=params).to_arrow_reader(self._batch_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch.cast(self._schema) if batch.schema != self._schema else batch
        finally:
            con.close()
