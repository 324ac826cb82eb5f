"""Memory settings of every DuckDB database the pipeline opens: one fixed limit, spilling to disk.

DuckDB's own default memory limit is 80 % of the machine's RAM, and it keeps the blocks it has
read cached up to that limit, so a step's peak RSS grew with the table it scanned (the prepare
step of the demo table: 0.30 GB at 1M rows, 0.73 GB at 10M on a 23 GB machine; 2.4 GB at 10M
elsewhere). Every connection the pipeline opens goes through :func:`connect` (or
:func:`apply_memory_settings` for one opened elsewhere), which sets

* ``memory_limit`` = :data:`DEFAULT_MEMORY_LIMIT` (DuckDB's size syntax, e.g. ``"64MB"``,
  ``"1GB"``): the buffer pool's bound. Sorts, joins and aggregates larger than that spill;
* ``temp_directory``: where they spill: ``<database file>.tmp`` beside the file (DuckDB's own
  default for a file), or ``duckdb-spill`` in the system temporary directory for an in-memory
  database (DuckDB's default there is ``.tmp`` in the current directory).

Override: the ``memory_limit`` argument, else the environment variable
:data:`MEMORY_LIMIT_ENV` (read when a connection is opened, so ``VI_DUCKDB_MEMORY_LIMIT=2GB
python run_local.py ...`` reaches every step's process), else :data:`DEFAULT_MEMORY_LIMIT`.

DuckDB keeps one database instance per file per process and refuses a second connection to
the same file with a different *connect-time* configuration; these settings are applied with
``SET`` after connecting, so plain ``duckdb.connect`` calls on the same file keep working (and
share the limit: it belongs to the instance).

:func:`write_table_chunks` writes a table that arrives as a stream of Arrow tables without
holding more than one of them, and publishes it whole.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.identifiers import TableRef

DEFAULT_MEMORY_LIMIT = "64MB"
"""DuckDB's memory limit in every process of the pipeline (see the module docstring).

Small on purpose: a step's peak RSS stays flat only if the limit is no more than what DuckDB
uses on a small table already. Prepare step on the demo table (peak RSS, 1M -> 10M rows):
DuckDB's default 0.30 -> 0.73 GB; 128MB 0.28 -> 0.34 GB (+21 %); 64MB 0.26 -> 0.27 GB (+5 %).
The price is spilling to disk on large tables (the key check's GROUP BY over every key); a
window over 3M distinct values still ran at 64MB."""
MEMORY_LIMIT_ENV = "VI_DUCKDB_MEMORY_LIMIT"
"""Environment variable that overrides :data:`DEFAULT_MEMORY_LIMIT` (e.g. ``2GB``)."""
IN_MEMORY_SPILL_DIR = "duckdb-spill"
"""Spill directory (under the system temporary directory) of in-memory databases."""
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


def memory_limit(value: str | None = None) -> str:
    """The memory limit to use: ``value``, else ``$VI_DUCKDB_MEMORY_LIMIT``, else the default.

    Raises:
        PipelineInputError: the value is not a size such as ``256MB`` or ``1.5GB``.
    """
    chosen = value or os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
    if not _SIZE.match(chosen):
        origin = "memory_limit" if value else MEMORY_LIMIT_ENV
        raise PipelineInputError(
            f"{origin}={chosen!r} is not a DuckDB memory size (e.g. 256MB, 1.5GB, 2GiB)"
        )
    return chosen.strip()


def memory_limit_override() -> str | None:
    """``$VI_DUCKDB_MEMORY_LIMIT`` if it is set (checked as :func:`memory_limit` does), else None.

    For connections with their own default limit (the scans of
    :mod:`vertex_imbalanced.reading.sources.duckdb_source`): the user's setting still wins.

    Raises:
        PipelineInputError: the variable is set to something that is not a size.
    """
    return memory_limit() if os.environ.get(MEMORY_LIMIT_ENV) else None


def spill_directory(database: str | Path | None) -> str:
    """Where ``database`` spills: ``<file>.tmp`` beside a file, the temp dir for ``:memory:``."""
    if database is None or str(database) in ("", ":memory:"):
        return str(Path(tempfile.gettempdir()) / IN_MEMORY_SPILL_DIR)
    return f"{Path(database).resolve()}.tmp"


def apply_memory_settings(
    con: duckdb.DuckDBPyConnection,
    database: str | Path | None,
    *,
    limit: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Set the memory limit, threads and spill directory of ``con``'s database; return ``con``.

    Args:
        con: an open connection.
        database: the file it opened (None or ``":memory:"`` for an in-memory database).
        limit: memory limit (default :func:`memory_limit`'s choice).
        threads: DuckDB worker threads of the database (None: DuckDB's default, one per core;
            like the limit, the setting belongs to the database instance).

    Raises:
        PipelineInputError: a malformed limit.
    """
    con.execute(f"SET memory_limit = '{memory_limit(limit)}'")
    if threads is None:
        con.execute("RESET threads")
    else:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET temp_directory = ?", [spill_directory(database)])
    return con


def connect(
    database: str | Path | None = None,
    *,
    read_only: bool = False,
    limit: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` with :func:`apply_memory_settings` applied.

    Args:
        database: database file (None: in memory).
        read_only: open without write access.
        limit: memory limit (default :func:`memory_limit`'s choice).
        threads: DuckDB worker threads (None: DuckDB's default).

    Raises:
        PipelineInputError: a malformed limit.
        duckdb.Error: what ``duckdb.connect`` raises.
    """
    chosen = memory_limit(limit)  # a bad value is refused before anything is opened
    target = ":memory:" if database is None else str(database)
    con = duckdb.connect(target, read_only=read_only)
    try:
        return apply_memory_settings(con, database, limit=chosen, threads=threads)
    except BaseException:
        con.close()
        raise


def write_table_chunks(path: str | Path, table: str, chunks: Iterable[pa.Table]) -> TableRef:
    """Write (or replace) a DuckDB table from consecutive Arrow tables, published whole.

    The chunks go into a staging table ``<name>__writing``, each INSERT committed on its own
    (one transaction would keep every uncommitted row in memory, 1.03 GB for 10M demo rows);
    the finished table then replaces ``table`` in one transaction, so a reader never sees part
    of it. Memory holds one chunk at a time (10M demo rows in 250k-row chunks: 285 MB peak).

    Args:
        path: database file (created if absent).
        table: ``name`` or ``schema.name`` (validated by :class:`TableRef`).
        chunks: Arrow tables with the same schema; at least one (it may be empty).

    Returns:
        The written table's reference.

    Raises:
        ValueError: no chunk at all.
        PipelineInputError: an invalid table name.
    """
    ref = TableRef.parse(table)
    staging = ref.with_table(f"{ref.table}__writing")
    with connect(path) as con:
        written = 0
        for chunk in chunks:
            con.register("chunk_rows", chunk)
            if written == 0:
                con.execute(f"CREATE OR REPLACE TABLE {staging.duckdb} AS SELECT * FROM chunk_rows")
            else:
                con.execute(f"INSERT INTO {staging.duckdb} SELECT * FROM chunk_rows")
            con.unregister("chunk_rows")
            written += 1
        if not written:
            raise ValueError(f"no rows to write into {ref}: the chunk stream was empty")
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DROP TABLE IF EXISTS {ref.duckdb}")
        con.execute(f'ALTER TABLE {staging.duckdb} RENAME TO "{ref.table}"')
        con.execute("COMMIT")
    return ref
