"""Local sources for ``run_local.py``: CSV/Parquet files into DuckDB, and their feature roles.

A local run reads one DuckDB table. This module turns what the user names into that table:

- a CSV or Parquet file is imported into ``<work_dir>/source.duckdb``, table ``source``
  (with a ``row_key`` column numbering the rows when the file has no key column);
- a DuckDB URI (``duckdb:///abs/file.db?table=[schema.]name``, parsed by
  :func:`~vertex_imbalanced.reading.sources.duckdb_source.parse_duckdb_uri`) is used as is;
- no source: the deterministic demo table is written into ``<work_dir>/demo.duckdb``.

Feature roles come from the table's Arrow schema (DuckDB's own DuckDB -> Arrow conversion) and
:func:`vertex_imbalanced.reading.schema.infer_feature_spec`, the rule every other source uses.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.schema import infer_feature_spec
from vertex_imbalanced.reading.sources.duckdb_source import (
    DuckDBSource,
    duckdb_uri,
    parse_duckdb_uri,
)

SOURCE_DB = "source.duckdb"
SOURCE_TABLE = "source"
ROW_KEY = "row_key"
DEMO_DB = "demo.duckdb"
DEMO_TABLE = "demo"
FILE_READERS = {".csv": "read_csv_auto", ".parquet": "read_parquet"}
SOURCE_FORMS = "a .csv or .parquet file, or duckdb:///absolute/path.db?table=[schema.]name"


@dataclasses.dataclass(frozen=True)
class LocalSource:
    """The table a local run reads.

    Attributes:
        uri: ``duckdb:///abs/file.db?table=name`` (the pipeline's ``source_uri``).
        spec: label, key and (when chosen) feature roles.
        description: what the user named, for the summary.
    """

    uri: str
    spec: FeatureSpec
    description: str


def import_file(path: str | Path, work_dir: str | Path, *, add_key: bool) -> str:
    """Load a CSV or Parquet file into ``<work_dir>/source.duckdb``, table ``source``.

    The database is written beside under a temporary name and renamed into place, so a failed
    import leaves no half-written file (and replaces the previous import only on success).

    Args:
        path: ``.csv`` (types detected by DuckDB's ``read_csv_auto``) or ``.parquet`` file.
        work_dir: existing directory for the database file.
        add_key: add a ``row_key`` VARCHAR column numbering the rows ``"1", "2", ...`` in file
            order (the deterministic split needs a unique key).

    Returns:
        The DuckDB URI of the imported table.

    Raises:
        PipelineInputError: the file does not exist, has another suffix, or DuckDB cannot read
            it (names the file and DuckDB's reason).
    """
    path = Path(path)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise PipelineInputError(f"unknown source file {str(path)!r}: use {SOURCE_FORMS}")
    if not path.is_file():
        raise PipelineInputError(f"source file {str(path)!r} does not exist")
    key = f", CAST(row_number() OVER () AS VARCHAR) AS {ROW_KEY}" if add_key else ""
    db = Path(work_dir) / SOURCE_DB
    tmp = db.with_name(db.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            con.execute(
                f"CREATE TABLE {SOURCE_TABLE} AS SELECT *{key} FROM {reader}(?)", [str(path)]
            )
    except duckdb.Error as err:
        tmp.unlink(missing_ok=True)
        raise PipelineInputError(f"cannot read source file {str(path)!r}: {err}") from err
    tmp.replace(db)
    return duckdb_uri(db, SOURCE_TABLE)


def table_schema(uri: str, columns: Sequence[str]) -> pa.Schema:
    """Arrow schema of some columns of a DuckDB table (DuckDB converts its types to Arrow).

    Raises:
        PipelineInputError: bad URI, missing file or table.
        SchemaError: a column is missing (names it and the closest existing one).
    """
    path, table = parse_duckdb_uri(uri)
    return DuckDBSource(path, table, list(dict.fromkeys(columns))).schema


def feature_spec(
    uri: str, label: str, key: str, features: Sequence[str] | None = None
) -> FeatureSpec:
    """Check the named columns exist and build the feature spec.

    Without ``features`` the spec names only the label and key: the prepare step infers the
    roles of all other columns. With them, each listed column gets the role schema inference
    gives its type (strings categorical; integers, floats, decimals, booleans, dates and
    timestamps numeric), in the order listed.

    Args:
        uri: DuckDB URI of the table.
        label: label column.
        key: unique row key column.
        features: feature columns, or None for all other columns.

    Returns:
        The spec.

    Raises:
        PipelineInputError: bad URI, missing file or table.
        SchemaError: a missing column (with the closest name) or an unsupported type (named).
    """
    schema = table_schema(uri, [label, key, *(features or ())])
    if not features:
        return FeatureSpec(label=label, key=key)
    chosen = pa.schema(
        [schema.field(label), schema.field(key), *(schema.field(c) for c in features)]
    )
    return infer_feature_spec(chosen, label, key=key)


def _split_source(source: str) -> tuple[str, Path | None]:
    """(scheme, file path or None) of a ``--source`` value."""
    parsed = urllib.parse.urlsplit(source)
    if parsed.scheme == "duckdb":
        return "duckdb", None
    if parsed.scheme in ("", "file") and Path(parsed.path).suffix.lower() in FILE_READERS:
        return "file", Path(urllib.parse.unquote(parsed.path))
    raise PipelineInputError(f"unknown --source {source!r}: use {SOURCE_FORMS}")


def demo_source(
    work_dir: str | Path,
    rows: int,
    seed: int,
    *,
    label: str | None = None,
    key: str | None = None,
    features: Sequence[str] | None = None,
) -> LocalSource:
    """Write the demo table into ``<work_dir>/demo.duckdb`` and describe it.

    Args:
        work_dir: existing directory.
        rows: rows to generate (> 0).
        seed: generator seed.
        label: label column instead of the demo's (checked like any table's).
        key: key column instead of the demo's.
        features: feature columns instead of the demo's (roles from their types).

    Raises:
        PipelineInputError: ``rows`` < 1, or an override names a missing column.
    """
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb

    if rows <= 0:
        raise PipelineInputError(f"--rows must be > 0, got {rows}")
    uri = write_demo_duckdb(Path(work_dir) / DEMO_DB, rows=rows, seed=seed, table=DEMO_TABLE)
    spec = DEMO_SPEC
    if label or key or features:
        spec = feature_spec(uri, label or spec.label, key or spec.key, features)
    return LocalSource(uri, spec, f"demo data ({rows} rows)")


def resolve_source(
    source: str,
    work_dir: str | Path,
    *,
    label: str | None,
    key: str | None = None,
    features: Sequence[str] | None = None,
) -> LocalSource:
    """The DuckDB table, spec and description for a user's ``--source``.

    Args:
        source: a ``.csv`` / ``.parquet`` path (or ``file:`` URL), or a DuckDB URI.
        work_dir: existing directory where a file is imported.
        label: label column (required).
        key: unique row key column; required for a DuckDB table; a file without one gets
            ``row_key``.
        features: feature columns, or None for all other columns.

    Raises:
        PipelineInputError: unknown source form, bad URI, missing label/key option, missing
            file, table or column (SchemaError names it).
    """
    kind, path = _split_source(source)
    if not label:
        raise PipelineInputError("--label is required with --source")
    if kind == "duckdb":
        if not key:
            raise PipelineInputError("--key is required with a DuckDB --source (a unique row key)")
        uri = duckdb_uri(*parse_duckdb_uri(source))
    else:
        uri = import_file(path, work_dir, add_key=not key)
    return LocalSource(uri, feature_spec(uri, label, key or ROW_KEY, features), source)
