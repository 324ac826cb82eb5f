"""sql/ files: one pure render function and one runner per engine (DuckDB, BigQuery).

The files in ``sql/`` are BigQuery SQL. Identifiers (tables, columns) are validated and
substituted by :func:`render`; every value (ratios, keep rates, class names, salts) is a query
parameter ``@name``. On DuckDB the rendered SQL is transpiled by sqlglot (``@name`` becomes
``$name`` and is bound by name), and the connection provides BigQuery's ``FARM_FINGERPRINT``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import sqlglot
from sqlglot import exp

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.duckdb_settings import connect as connect_duckdb
from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint
from vertex_imbalanced.warehouse.identifiers import TableRef, validate_column

_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KMS_KEY_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")


def load_sql(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    return resources.files("sql").joinpath(f"{name}.sql").read_text()


def render(
    template: str,
    *,
    tables: Mapping[str, TableRef | str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> str:
    """Substitute ``{placeholder}`` identifiers into a BigQuery SQL template.

    Columns are validated with :func:`validate_column` and backquoted; tables are parsed with
    :meth:`TableRef.parse` (if given as strings) and written in BigQuery form. Values never go
    through here: they are query parameters.

    Args:
        template: SQL text with ``{name}`` placeholders.
        tables: placeholder -> table reference.
        columns: placeholder -> column name.

    Returns:
        The SQL with every placeholder replaced.

    Raises:
        PipelineInputError: an identifier is not safe (quotes, ``;``, backticks, spaces...).
        KeyError: a placeholder has no value, or a value has no placeholder.
    """
    values: dict[str, str] = {}
    for name, ref in (tables or {}).items():
        values[name] = (ref if isinstance(ref, TableRef) else TableRef.parse(ref)).bigquery
    for name, column in (columns or {}).items():
        values[name] = f"`{validate_column(column)}`"
    wanted = set(_PLACEHOLDER_RE.findall(template))
    if wanted != set(values):
        raise KeyError(
            f"placeholders {sorted(wanted)} do not match identifiers given {sorted(values)}"
        )
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


_KEY_TEXT_DIFFERS = {
    "floating point": "BigQuery documents CAST(FLOAT64 AS STRING) as 'an approximate string "
    "representation' (DuckDB writes 1.0 as '1.0')",
    "decimal": "NUMERIC/BIGNUMERIC text keeps the scale in DuckDB (1.5 -> '1.500000000') but not in "
    "BigQuery ('1.5')",
    "timestamp": "TIMESTAMP/DATETIME text depends on the session time zone and precision "
    "(BigQuery: '2008-12-25 15:30:00+00'; DuckDB: its TimeZone setting)",
    "time": "TIME text differs in precision between the engines",
    "binary": "BYTES are read as UTF-8 text by BigQuery and escaped by DuckDB",
}


def _key_kind(arrow_type: pa.DataType) -> str | None:
    """Why a key type has no engine-independent text, or None when it has one."""
    if pa.types.is_floating(arrow_type):
        return "floating point"
    if pa.types.is_decimal(arrow_type):
        return "decimal"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_time(arrow_type):
        return "time"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    return None


def check_split_key(schema: pa.Schema, key: str, table: str) -> None:
    """Refuse a key column whose text differs between BigQuery and DuckDB.

    The split hashes ``CAST(key AS STRING)`` (``sql/split.sql``); the same row must land in the
    same split on both engines, so only types whose text is the same on both are keys: integers,
    STRING, DATE and BOOL (BigQuery documents ``"true"``/``"false"`` and ``YYYY-MM-DD``). Floating
    point, NUMERIC/BIGNUMERIC, TIMESTAMP/DATETIME, TIME and BYTES are refused, naming the
    column, its type and a fix, rather than split differently on each engine.

    Args:
        schema: the source table's schema.
        key: the key column.
        table: the table, for the message.

    Raises:
        SchemaError: the key's type has no common text form (one line).
    """
    if key not in schema.names:
        return  # the caller reports missing columns with its own message
    arrow_type = schema.field(key).type
    kind = _key_kind(arrow_type)
    if kind is None:
        return
    raise SchemaError(
        f"key column {key!r} of {table} has type {arrow_type} ({kind}): it cannot be split the "
        f"same way on BigQuery and DuckDB because {_KEY_TEXT_DIFFERS[kind]}; use an INT64 or "
        f"STRING key column (e.g. a view with CAST({key} AS STRING) materialised once)"
    )


def parameter_names(sql: str) -> list[str]:
    """Sorted names of the ``@parameters`` a BigQuery SQL statement uses."""
    tree = sqlglot.parse_one(sql, read="bigquery")
    return sorted({p.name for p in tree.find_all(exp.Parameter)})


@functools.lru_cache(maxsize=64)
def to_duckdb(sql: str) -> str:
    """Transpile BigQuery SQL to DuckDB SQL (``@name`` parameters become ``$name``)."""
    return sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]


def _used_params(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    names = parameter_names(sql)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"query parameters without a value: {missing}")
    return {n: params[n] for n in names}


class Warehouse(Protocol):
    """What prepare.py needs from an engine. ``sql`` arguments are rendered BigQuery SQL."""

    engine: str

    def table_schema(self, ref: TableRef) -> pa.Schema | None:
        """Arrow schema of a table, or None if it does not exist."""
        ...

    def query(self, sql: str, params: Mapping[str, Any]) -> pa.Table:
        """Run a SELECT and return its (small) result."""
        ...

    def create_table(
        self, dest: TableRef, sql: str, params: Mapping[str, Any], *, expiration_hours: float
    ) -> None:
        """Create or replace ``dest`` with the result of a SELECT."""
        ...

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Tables created inside are all kept, or none are (on an exception)."""
        ...

    def check_outputs(self, source: TableRef, outputs: Iterable[TableRef]) -> None:
        """Refuse, before any job, outputs the engine could not write from ``source``."""
        ...

    def uri(self, ref: TableRef) -> str:
        """Source URI of a table, as understood by ``vertex_imbalanced.reading.sources.open.open_source``."""
        ...


class DuckDBWarehouse:
    """Runs the sql/ files on a DuckDB database file."""

    engine = "duckdb"

    def __init__(
        self, path: str | Path, *, read_only: bool = False, memory_limit: str | None = None
    ) -> None:
        """Open (or create) the database file and register ``farm_fingerprint``.

        DuckDB runs under a fixed memory limit and spills beside the file
        (:mod:`vertex_imbalanced.warehouse.duckdb_settings`), so a step's memory does not grow
        with the table.

        Args:
            path: database file.
            read_only: open without write access.
            memory_limit: DuckDB memory limit (default ``duckdb_settings.memory_limit()``).
        """
        self.path = str(Path(path).resolve())
        self.con = connect_duckdb(self.path, read_only=read_only, limit=memory_limit)
        register_farm_fingerprint(self.con)

    def close(self) -> None:
        """Close the connection (another process may then open the file for writing)."""
        self.con.close()

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_tables(self) -> list[str]:
        """Tables and views in the file as ``schema.name``."""
        rows = self.con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        return [f"{s}.{t}" for s, t in rows]

    def table_schema(self, ref: TableRef) -> pa.Schema | None:
        """Arrow schema of ``ref`` (schema ``main`` unless given), or None if absent."""
        found = self.con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [ref.dataset or "main", ref.table],
        ).fetchall()[0][0]
        if not found:
            return None
        return self.con.sql(f"SELECT * FROM {ref.duckdb} LIMIT 0").to_arrow_table().schema

    def query(self, sql: str, params: Mapping[str, Any]) -> pa.Table:
        """Transpile and run a SELECT with named parameters."""
        return self.con.sql(to_duckdb(sql), params=_used_params(sql, params)).to_arrow_table()

    def create_table(
        self, dest: TableRef, sql: str, params: Mapping[str, Any], *, expiration_hours: float = 0
    ) -> None:
        """Create or replace ``dest`` (DuckDB has no table expiration; it is ignored)."""
        del expiration_hours
        self.con.execute(
            f"CREATE OR REPLACE TABLE {dest.duckdb} AS {to_duckdb(sql)}",
            _used_params(sql, params),
        )

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction: on an exception every table created inside is rolled back."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def check_outputs(self, source: TableRef, outputs: Iterable[TableRef]) -> None:
        """Nothing to check: one DuckDB file holds the source and the outputs."""
        del source, outputs

    def uri(self, ref: TableRef) -> str:
        """``duckdb:///abs/path.db?table=name`` (the one builder: paths percent-encoded)."""
        from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri

        return duckdb_uri(self.path, ref)


# --- BigQuery -------------------------------------------------------------------------------

_BQ_TO_ARROW = {
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "BYTES": pa.binary(),
}


def bigquery_field_to_arrow(field: Any) -> pa.Field:
    """Arrow field for a ``google.cloud.bigquery.SchemaField`` (as the Storage API sends it).

    RECORD/STRUCT becomes an Arrow struct and REPEATED mode a list, so the schema checks name
    them as unsupported; GEOGRAPHY, JSON, TIME and other types become binary (unsupported too).
    """
    if field.field_type in ("RECORD", "STRUCT"):
        arrow_type: pa.DataType = pa.struct([bigquery_field_to_arrow(f) for f in field.fields])
    else:
        arrow_type = _BQ_TO_ARROW.get(field.field_type, pa.binary())
    if field.mode == "REPEATED":
        arrow_type = pa.list_(arrow_type)
    return pa.field(field.name, arrow_type, nullable=field.mode != "REQUIRED")


def _bq_scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, str):
        return "STRING"
    raise TypeError(f"no BigQuery parameter type for {value!r}")


def bigquery_parameters(params: Mapping[str, Any]) -> list[Any]:
    """``ScalarQueryParameter`` / ``ArrayQueryParameter`` list for named values.

    Arrays of numbers are FLOAT64 when any element is a float; empty arrays are not allowed
    (their element type would be unknown).
    """
    from google.cloud import bigquery

    out = []
    for name, value in params.items():
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError(f"query parameter {name!r} is an empty array")
            types = {_bq_scalar_type(v) for v in value}
            if types == {"INT64", "FLOAT64"}:
                types, value = {"FLOAT64"}, [float(v) for v in value]
            if len(types) != 1:
                raise TypeError(f"query parameter {name!r} mixes types {sorted(types)}")
            out.append(bigquery.ArrayQueryParameter(name, types.pop(), list(value)))
        else:
            out.append(bigquery.ScalarQueryParameter(name, _bq_scalar_type(value), value))
    return out


class BigQueryWarehouse:
    """Runs the sql/ files on BigQuery (google-cloud-bigquery).

    Jobs run and bill in the *billing* project (the client's project), which may differ from
    the projects holding the data: a public or shared data project usually lets its readers
    read tables but not run jobs. Tables in the SQL are always fully qualified, so the data
    project never has to be the job's.
    """

    engine = "bigquery"

    def __init__(
        self,
        project: str | None = None,
        *,
        location: str | None = None,
        client: Any = None,
        kms_key: str | None = None,
    ) -> None:
        """Create the runner.

        Args:
            project: the billing project: it runs (and pays for) the query jobs; None takes
                the default credentials' project (on Vertex AI: the pipeline's project).
            location: job location; None: the source dataset's, once :meth:`check_outputs`
                has read it (else BigQuery infers it from the tables).
            client: a ``bigquery.Client`` to use instead of creating one (its project bills).
            kms_key: Cloud KMS key ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` that
                encrypts every table this runner writes (None: Google-managed keys).

        Raises:
            PipelineInputError: a malformed ``kms_key``.
        """
        if kms_key and not _KMS_KEY_RE.match(kms_key):
            raise PipelineInputError(
                f"kms_key must be projects/P/locations/L/keyRings/R/cryptoKeys/K, got {kms_key!r}"
            )
        if client is None:
            from google.cloud import bigquery

            client = bigquery.Client(project=project, location=location)
        self.client = client
        self.location = location
        self.kms_key = kms_key or None
        self._created: list[TableRef] | None = None
        self._locations: dict[tuple[str, str], str] = {}

    @property
    def billing_project(self) -> str:
        """The project every query job runs and bills in."""
        return str(self.client.project)

    def table_schema(self, ref: TableRef) -> pa.Schema | None:
        """Arrow schema of ``ref``, or None when the table does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            table = self.client.get_table(str(ref))
        except NotFound:
            return None
        return pa.schema([bigquery_field_to_arrow(f) for f in table.schema])

    def dataset_location(self, project: str, dataset: str) -> str:
        """Location of a dataset (datasets.get, cached), e.g. ``US`` or ``europe-west4``.

        Raises:
            PipelineInputError: the dataset does not exist.
        """
        from google.api_core.exceptions import NotFound

        key = (project, dataset)
        if key not in self._locations:
            try:
                self._locations[key] = self.client.get_dataset(f"{project}.{dataset}").location
            except NotFound:
                raise PipelineInputError(
                    f"BigQuery dataset {project}.{dataset} does not exist"
                ) from None
        return self._locations[key]

    def check_outputs(self, source: TableRef, outputs: Iterable[TableRef]) -> None:
        """Refuse outputs in another location than the source, before any job runs.

        A BigQuery query runs in one location and cannot write a table elsewhere. Reads the
        locations with datasets.get (no job) and, when no job location was given, runs every
        later job in the source's location.

        Raises:
            PipelineInputError: one line naming both locations and the ``output_dataset``
                parameter, or naming a dataset that does not exist.
        """
        where = self.dataset_location(self._project(source), str(source.dataset))
        for ref in outputs:
            project, dataset = self._project(ref), str(ref.dataset)
            try:
                there = self.dataset_location(project, dataset)
            except PipelineInputError:
                raise PipelineInputError(
                    f"output dataset {project}.{dataset} does not exist (parameter "
                    "output_dataset): create it in the source's location "
                    f"{where} first"
                ) from None
            if there.lower() != where.lower():
                raise PipelineInputError(
                    f"output dataset {project}.{dataset} is in location {there} but the source "
                    f"table {source} is in {where}: BigQuery cannot write across locations; "
                    f"set output_dataset to a dataset in {where}"
                )
        if self.location is None:
            self.location = where

    def _project(self, ref: TableRef) -> str:
        return ref.project or self.billing_project

    def _config(self, sql: str, params: Mapping[str, Any], **kwargs: Any) -> Any:
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=bigquery_parameters(_used_params(sql, params)),
            use_legacy_sql=False,
            **kwargs,
        )

    def query(self, sql: str, params: Mapping[str, Any]) -> pa.Table:
        """Run a SELECT with named parameters; the result comes back over REST (it is small)."""
        job = self.client.query(
            sql,
            job_config=self._config(sql, params),
            location=self.location,
            project=self.billing_project,
        )
        return job.result().to_arrow(create_bqstorage_client=False)

    def create_table(
        self, dest: TableRef, sql: str, params: Mapping[str, Any], *, expiration_hours: float = 0
    ) -> None:
        """Write the SELECT's result to ``dest`` (truncating it), then set its expiration.

        A destination table in the job configuration (rather than ``CREATE TABLE ... AS``) keeps
        the query a plain parameterised SELECT. With ``kms_key`` the table is encrypted with it
        (``destinationEncryptionConfiguration``).
        """
        from google.cloud import bigquery

        extra: dict[str, Any] = {}
        if self.kms_key:
            extra["destination_encryption_configuration"] = bigquery.EncryptionConfiguration(
                kms_key_name=self.kms_key
            )
        config = self._config(
            sql,
            params,
            destination=str(dest),
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            **extra,
        )
        if self._created is not None:
            self._created.append(dest)
        self.client.query(
            sql, job_config=config, location=self.location, project=self.billing_project
        ).result()
        if expiration_hours:
            table = self.client.get_table(str(dest))
            table.expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=expiration_hours)
            self.client.update_table(table, ["expires"])

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """On an exception, delete every table created inside (BigQuery has no DDL rollback)."""
        self._created = []
        try:
            yield
        except BaseException:
            for ref in self._created:
                self.client.delete_table(str(ref), not_found_ok=True)
            raise
        finally:
            self._created = None

    def uri(self, ref: TableRef) -> str:
        """``bq://project.dataset.table``."""
        return f"bq://{ref}"


def source_table(source_uri: str) -> TableRef:
    """The table named by a source URI (``duckdb:///abs.db?table=t`` or ``bq://p.d.t``).

    Raises:
        PipelineInputError: unknown scheme or malformed URI.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri

    if source_uri.startswith("duckdb://"):
        return parse_duckdb_uri(source_uri)[1]
    if source_uri.startswith("bq://"):
        ref = TableRef.parse(source_uri)
        if ref.project is None or ref.dataset is None:
            raise PipelineInputError(
                f"BigQuery URI {source_uri!r} must be bq://project.dataset.table"
            )
        return ref
    raise PipelineInputError(
        f"unsupported source URI {source_uri!r}: use bq://project.dataset.table or "
        "duckdb:///absolute/path.db?table=name"
    )


def open_warehouse(
    source_uri: str, *, billing_project: str | None = None, kms_key: str | None = None
) -> tuple[Warehouse, TableRef]:
    """Runner and table for a source URI (``duckdb:///abs.db?table=t`` or ``bq://p.d.t``).

    Args:
        source_uri: the source table.
        billing_project: BigQuery: the project that runs and pays for the jobs (default: the
            default credentials' project, on Vertex AI the pipeline's; else the source's).
        kms_key: BigQuery: Cloud KMS key for every table written (None: Google-managed).

    Raises:
        PipelineInputError: unknown scheme, malformed URI, a DuckDB file that does not exist,
            or a malformed ``kms_key``.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri

    ref = source_table(source_uri)
    if source_uri.startswith("duckdb://"):
        path = parse_duckdb_uri(source_uri)[0]
        if not Path(path).is_file():
            raise PipelineInputError(f"DuckDB file {path} does not exist ({source_uri})")
        return DuckDBWarehouse(path), ref
    return BigQueryWarehouse(billing_project or _default_project(ref.project), kms_key=kms_key), ref


def _default_project(fallback: str | None) -> str | None:
    """The default credentials' project, or ``fallback`` when they name none."""
    try:
        import google.auth

        _, project = google.auth.default()
    except Exception:  # no credentials: the client will say so itself
        return fallback
    return project or fallback
