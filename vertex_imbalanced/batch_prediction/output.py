"""The predictions table: its columns, and publishing it only when complete.

Columns (one row per scored input row):

=================  =========================  =================================================
column             Arrow / BigQuery type      meaning
=================  =========================  =================================================
``<key>``          the input key's type       the input row's key (same name as in the input)
``class_id``       int64 / INT64              the served model's decision (``class_id`` output)
``class_name``     string / STRING            ``classes[class_id]``
``probabilities``  list<double> / ARRAY       class probabilities in class-id order
``model_name``     string / STRING            registered model name
``model_version``  string / STRING            registered version id
``scored_at``      timestamp[us, UTC]         when the row's record batch was scored
=================  =========================  =================================================

The class names (the meaning of ``probabilities[i]``) are in the table description and in the
run's metadata. Publishing: the scoring job writes Parquet parts into a run-scoped staging
directory; only after it succeeded is the table created in one step (DuckDB: load into a staging
table and rename it in one transaction; BigQuery: one load job into a staging table, then one
copy job that replaces the destination, then the staging table is dropped). A failed or killed
run never leaves a visible half-written table, and a rerun replaces the table with its result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from vertex_imbalanced.batch_prediction.prior_adjustment import PriorAdjustment
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.identifiers import TableRef

CLASS_ID = "class_id"
CLASS_NAME = "class_name"
PROBABILITIES = "probabilities"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
PREDICTION_COLUMNS = (CLASS_ID, CLASS_NAME, PROBABILITIES, MODEL_NAME, MODEL_VERSION, SCORED_AT)
PART_PREFIX = "part"


def output_schema(key: str, key_type: pa.DataType) -> pa.Schema:
    """Arrow schema of the predictions table for a key column ``key`` of type ``key_type``.

    Raises:
        PipelineInputError: the key column's name collides with a prediction column.
    """
    if key in PREDICTION_COLUMNS:
        raise PipelineInputError(
            f"key column {key!r} has the name of a prediction column ({', '.join(PREDICTION_COLUMNS)})"
        )
    return pa.schema(
        [
            pa.field(key, key_type),
            pa.field(CLASS_ID, pa.int64(), nullable=False),
            pa.field(CLASS_NAME, pa.string(), nullable=False),
            pa.field(PROBABILITIES, pa.list_(pa.float64()), nullable=False),
            pa.field(MODEL_NAME, pa.string(), nullable=False),
            pa.field(MODEL_VERSION, pa.string(), nullable=False),
            pa.field(SCORED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def table_description(model_name: str, model_version: str, classes: Sequence[str]) -> str:
    """The predictions table's description: model and class names in probability order."""
    return (
        f"Batch predictions of model {model_name} version {model_version}. "
        f"probabilities[i] is the probability of class i; classes in id order: "
        f"{json.dumps(list(classes))}"
    )


# ----------------------------------------------------------------------------- destinations
def parse_destination(uri: str) -> tuple[str, TableRef, str]:
    """Split an output URI into ``(kind, table, database file)``.

    ``duckdb:///abs/file.db?table=name`` -> ``("duckdb", name, "/abs/file.db")``;
    ``bq://project.dataset.table`` -> ``("bigquery", project.dataset.table, "")``.

    Raises:
        PipelineInputError: another scheme or a malformed URI.
    """
    if uri.startswith("duckdb://"):
        from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri

        path, ref = parse_duckdb_uri(uri)
        return "duckdb", ref, path
    if uri.startswith("bq://"):
        ref = TableRef.parse(uri)
        if ref.project is None or ref.dataset is None:
            raise PipelineInputError(f"output table {uri!r} must be bq://project.dataset.table")
        return "bigquery", ref, ""
    raise PipelineInputError(
        f"unsupported output URI {uri!r}: use bq://project.dataset.table or "
        "duckdb:///absolute/path.db?table=name"
    )


def staging_name(table: TableRef, run_id: str) -> TableRef:
    """The run's staging table beside ``table`` (hidden from the destination name)."""
    safe = "".join(c if c.isalnum() else "_" for c in run_id)[-60:]
    return table.with_table(f"_staging_{table.table}_{safe}"[:1024])


def parquet_parts(directory: str | Path) -> list[str]:
    """The Parquet part files a scoring job wrote into a local staging directory, sorted."""
    return sorted(str(p) for p in Path(directory).glob(f"{PART_PREFIX}-*.parquet"))


def publish_duckdb(
    parts: Sequence[str],
    database: str,
    table: TableRef,
    schema: pa.Schema,
    description: str,
    run_id: str,
    *,
    adjustment: PriorAdjustment | None = None,
) -> int:
    """Load the parts into a staging table and rename it to ``table`` in one transaction.

    Either the complete table (replacing an older one of the same name) is visible afterwards,
    or, if anything fails, the database is as it was.

    Args:
        parts: Parquet files with ``schema`` (at least one).
        database: DuckDB file (created if missing).
        table: destination ``name`` or ``schema.name``.
        schema: the predictions schema (the Parquet files are checked against it).
        description: table comment (class names in probability order).
        run_id: the run (names the staging table).
        adjustment: add prior-adjusted probabilities (EM prior of the staged rows, then
            ``sql/adjusted_probabilities.sql``; :mod:`.prior_adjustment`); None: not added.

    Returns:
        The number of rows published.

    Raises:
        PipelineInputError: no parts, or parts whose schema differs from ``schema``.
    """
    import pyarrow.parquet as pq

    from vertex_imbalanced.warehouse.engines import DuckDBWarehouse

    if not parts:
        raise PipelineInputError(f"nothing to publish into {table}: the scoring job wrote no rows")
    for part in parts:
        found = pq.read_schema(part).remove_metadata()
        if not found.equals(schema.remove_metadata()):
            raise PipelineInputError(f"part {part} has schema {found}, expected {schema}")
    staging = staging_name(table, run_id)
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(database) as warehouse:
        con = warehouse.con  # under the fixed DuckDB memory limit: the load streams the parts
        con.execute("BEGIN TRANSACTION")
        try:
            if table.dataset:
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{table.dataset}"')
            con.execute(
                f"CREATE OR REPLACE TABLE {staging.duckdb} AS "
                "SELECT * FROM read_parquet(?, union_by_name = false)",
                [list(parts)],
            )
            rows = con.execute(f"SELECT count(*) FROM {staging.duckdb}").fetchall()[0][0]
            con.execute(f"DROP TABLE IF EXISTS {table.duckdb}")
            if adjustment is None:
                con.execute(f'ALTER TABLE {staging.duckdb} RENAME TO "{table.table}"')
            else:
                sql, params = adjustment.select(warehouse, staging)
                warehouse.create_table(table, sql, params)
                con.execute(f"DROP TABLE {staging.duckdb}")
            con.execute(f"COMMENT ON TABLE {table.duckdb} IS {_sql_string(description)}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return int(rows)


def _sql_string(text: str) -> str:
    """A SQL string literal (COMMENT ON takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def duckdb_table_exists(database: str, table: TableRef) -> bool:
    """Whether ``table`` is visible in the DuckDB file (False when the file does not exist)."""
    import duckdb

    if not Path(database).is_file():
        return False
    with duckdb.connect(database, read_only=True) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [table.dataset or "main", table.table],
        ).fetchall()[0][0]
    return bool(found)


def publish_bigquery(
    part_uris: Sequence[str],
    table: TableRef,
    description: str,
    run_id: str,
    *,
    client: Any = None,
    location: str | None = None,
    kms_key: str = "",
    adjustment: PriorAdjustment | None = None,
) -> int:
    """Load the Parquet parts into a staging table, then copy it over ``table`` atomically.

    A load job and a copy job each succeed or fail as a whole; the destination only ever holds
    a complete result (the copy job's WRITE_TRUNCATE swaps it in one step). The staging table
    expires after a day even if deleting it fails. With ``adjustment`` the copy job is a query
    job instead (EM prior of the staging table, then ``sql/adjusted_probabilities.sql`` written
    over ``table`` with WRITE_TRUNCATE: also one step).

    Args:
        part_uris: ``gs://`` Parquet files (a wildcard URI is allowed).
        table: destination ``project.dataset.table``.
        description: table description (class names in probability order).
        run_id: the run (names the staging table).
        client: a ``google.cloud.bigquery.Client`` (default: application default credentials,
            the table's project).
        location: BigQuery location of the dataset (jobs must run there).
        kms_key: CMEK key for the tables ('' = the dataset's default).
        adjustment: add prior-adjusted probabilities (:mod:`.prior_adjustment`).

    Returns:
        The number of rows published.
    """
    import datetime as dt

    from google.cloud import bigquery

    client = client or bigquery.Client(project=table.project)
    staging = staging_name(table, run_id)
    encryption = bigquery.EncryptionConfiguration(kms_key_name=kms_key) if kms_key else None
    parquet = bigquery.ParquetOptions()
    parquet.enable_list_inference = True  # LIST<DOUBLE> -> ARRAY<FLOAT64>, not a STRUCT
    load = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        parquet_options=parquet,
        destination_encryption_configuration=encryption,
    )
    client.load_table_from_uri(
        list(part_uris), str(staging), job_config=load, location=location
    ).result()
    staged = client.get_table(str(staging))
    staged.expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    staged.description = description
    client.update_table(staged, ["expires", "description"])
    if adjustment is None:
        copy = bigquery.CopyJobConfig(
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            destination_encryption_configuration=encryption,
        )
        client.copy_table(str(staging), str(table), job_config=copy, location=location).result()
    else:
        from vertex_imbalanced.warehouse.engines import BigQueryWarehouse

        warehouse = BigQueryWarehouse(client=client, location=location, kms_key=kms_key or None)
        sql, params = adjustment.select(warehouse, staging)
        warehouse.create_table(table, sql, params)
    final = client.get_table(str(table))
    if final.expires is not None or final.description != description:
        final.expires = None
        final.description = description
        client.update_table(final, ["expires", "description"])
    client.delete_table(str(staging), not_found_ok=True)
    return int(final.num_rows or 0)


def destination_uri(kind: str, table: TableRef, database: str = "") -> str:
    """The URI of a published table (inverse of :func:`parse_destination`)."""
    if kind == "duckdb":
        from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri

        return duckdb_uri(database, table)
    return f"bq://{table}"


def run_output_uri(location: str, run_id: str) -> str:
    """The run-scoped predictions table for an output location.

    ``bq://project.dataset`` -> ``bq://project.dataset.predictions_<run>``;
    ``duckdb:///abs/file.db`` -> ``duckdb:///abs/file.db?table=predictions_<run>``. A location
    that already names a table (``bq://p.d.t``, ``...?table=t``) is used as it is.

    Raises:
        PipelineInputError: an unsupported or malformed location.
    """
    table = "predictions_" + "".join(c if c.isalnum() else "_" for c in run_id.lower())[-200:]
    if location.startswith("bq://"):
        parts = location.removeprefix("bq://").split(".")
        if len(parts) == 2:
            location = f"{location}.{table}"
    elif location.startswith("duckdb://") and "?" not in location:
        location = f"{location}?table={table}"
    kind, ref, database = parse_destination(location)
    return destination_uri(kind, ref, database)
