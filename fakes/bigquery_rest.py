"""A local stand-in for the BigQuery v2 REST API, backed by DuckDB (tests only, no Google Cloud).

The real ``google-cloud-bigquery`` client talks to it over HTTP::

    with FakeBigQuery(tmp_path / "test-project.db") as fake:
        client = fake.client()          # anonymous credentials, api_endpoint = fake.endpoint
        client.query("SELECT 1").result()

What it implements (the calls ``BigQueryWarehouse`` makes, routed like the REST API):

- ``POST /projects/{p}/jobs`` (jobs.insert) for query jobs: the GoogleSQL text is transpiled with
  sqlglot and run on one DuckDB connection; named query parameters (INT64, FLOAT64, NUMERIC,
  STRING, BOOL and ARRAYs of them) are passed as DuckDB parameters, never pasted into the SQL.
  With a ``destinationTable`` the result is written to it.
- ``GET /projects/{p}/queries/{job}`` (jobs.getQueryResults) and ``GET /projects/{p}/jobs/{job}``.
- ``GET``/``PATCH``/``PUT``/``DELETE /projects/{p}/datasets/{d}/tables/{t}`` (tables.get with the
  schema, tables.patch of ``expirationTime``, tables.delete).

How strict it is (each rule is the real service's):

- Only the fake's projects exist: its own and the ``other_projects`` given (each a DuckDB file
  attached as a catalog named after the project); any other project in a path is 404
  ``Not found: Project``. Tables in SQL are ``project.dataset.table``; each catalog is named
  after its project, so DuckDB resolves them.
- Billing: a job runs and bills in the project of its ``jobs.insert`` path. In a project listed
  in ``read_only_projects`` (a public or shared data project: the caller may read its tables
  but not run jobs there) jobs.insert is 403 ``Access Denied: Project P: User does not have
  bigquery.jobs.create permission in project P.``, and a job writing a table there fails with
  403 ``Access Denied: Dataset P:D: Permission bigquery.tables.create denied``.
- Locations: every dataset has a location (``dataset_locations``, default ``US``), reported by
  datasets.get. A query job runs in one location: when the datasets it reads and writes are in
  different locations the job fails (``Cannot read and write in different locations: source:
  US, destination: EU``); a job whose ``jobReference.location`` is given fails on a dataset
  elsewhere (``Not found: Dataset P:D was not found in location L``).
- CMEK: ``destinationEncryptionConfiguration.kmsKeyName`` must be a KMS key name in the
  destination dataset's location (``us`` for ``US``, ``eu`` for ``EU``); the written table keeps
  it (tables.get reports ``encryptionConfiguration``; :attr:`FakeBigQuery.table_keys`).
- A destination dataset must exist (``Not found: Dataset``); datasets are DuckDB schemas,
  created by the test (``fake.con.execute("CREATE SCHEMA ds")``), never implicitly.
- ``writeDisposition``: ``WRITE_EMPTY`` (the API's default) fails (``duplicate``) when the table
  exists and has rows, ``WRITE_TRUNCATE`` replaces it, ``WRITE_APPEND`` appends;
  ``createDisposition=CREATE_NEVER`` fails (``notFound``) on a missing table. A written table loses its
  expiration, like a replaced BigQuery table.
- Errors while a job runs (failing SQL, a missing destination dataset, WRITE_EMPTY on a
  non-empty table, an injected failure) fail the job, not the insert: the job is DONE with
  ``status.errorResult`` (reason ``invalidQuery``/``notFound``/``duplicate``) and
  getQueryResults answers that error, so the client raises from ``result()`` as with BigQuery.
- A request the fake cannot run (not a query job, legacy SQL, a parameter type it does not
  know) is 400 on the insert. A missing table or job is 404; deleting a missing table is 404
  (the client's ``not_found_ok`` handles it).

Query results come back as the REST API sends them: INTEGER/FLOAT/BOOLEAN/STRING cells as
strings (``NaN``, ``Infinity``), ARRAY columns as mode REPEATED with ``[{"v": ...}]`` cells (a
NULL array comes back empty; a NULL element fails, as BigQuery refuses it), STRUCTs as RECORD.

What it does not do: legacy SQL, query caching, paging of results (every row comes back in one
page; results are meant to be small), jobs that are still running (every job is DONE when
inserted), NUMERIC results (DuckDB's DECIMAL, e.g. of a literal ``1.5``, comes back FLOAT as
GoogleSQL types that literal), DATE/TIMESTAMP result types (sent as strings), nested RECORD schemas in tables.get
beyond a placeholder, IAM, locations. Every request is recorded
in :attr:`FakeBigQuery.requests` as ``(method, path)``; :attr:`FakeBigQuery.fail_destination`
injects a failure when a job writes that ``(dataset, table)``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot

from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint

DEFAULT_PROJECT = "test-project"

# DuckDB column type -> BigQuery legacy type name, as tables.get reports it.
_TYPES = {
    "BIGINT": "INTEGER",
    "INTEGER": "INTEGER",
    "DOUBLE": "FLOAT",
    "FLOAT": "FLOAT",
    "VARCHAR": "STRING",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "TIMESTAMP": "DATETIME",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "BLOB": "BYTES",
}
_PARAM_CASTS = {
    "INT64": int,
    "FLOAT64": float,
    "NUMERIC": float,
    "STRING": str,
    "BOOL": lambda v: v == "true",
}


_KMS_KEY_RE = re.compile(
    r"projects/[^/]+/locations/(?P<location>[^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+"
)


class FakeApiError(Exception):
    """An error the fake answers as BigQuery does: an HTTP status and a JSON error body."""

    _STATUS = {
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
    }

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def error(self) -> dict[str, str]:
        """One ErrorProto (``reason``, ``message``), as in a job's ``status.errorResult``."""
        reason = {400: "invalidQuery", 403: "accessDenied", 404: "notFound", 409: "duplicate"}.get(
            self.code, "invalid"
        )
        return {"reason": reason, "message": str(self)}

    def body(self) -> dict[str, Any]:
        """The REST error body (``error.code``, ``message``, ``status``, ``errors``)."""
        return {
            "error": {
                "code": self.code,
                "message": str(self),
                "status": self._STATUS.get(self.code, "UNKNOWN"),
                "errors": [self.error()],
            }
        }


def _param_value(ptype: dict[str, Any], pvalue: dict[str, Any]) -> Any:
    if ptype["type"] == "ARRAY":
        return [_param_value(ptype["arrayType"], v) for v in pvalue.get("arrayValues", [])]
    if ptype["type"] not in _PARAM_CASTS:
        raise FakeApiError(400, f"unsupported query parameter type {ptype['type']!r} in the fake")
    if pvalue.get("value") is None:
        return None
    return _PARAM_CASTS[ptype["type"]](pvalue["value"])


def _result_field(name: str, t: pa.DataType) -> dict[str, Any]:
    """The getQueryResults schema field of an Arrow result column (ARRAY -> mode REPEATED)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_list(t.value_type) or pa.types.is_large_list(t.value_type):
            raise FakeApiError(400, f"column {name!r}: BigQuery has no ARRAY of ARRAY")
        return {**_result_field(name, t.value_type), "mode": "REPEATED"}
    if pa.types.is_struct(t):
        fields = [_result_field(f.name, f.type) for f in t]
        return {"name": name, "type": "RECORD", "mode": "NULLABLE", "fields": fields}
    if pa.types.is_integer(t):
        kind = "INTEGER"
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        # DuckDB types a literal such as 1.5 DECIMAL where GoogleSQL types it FLOAT64.
        kind = "FLOAT"
    elif pa.types.is_boolean(t):
        kind = "BOOLEAN"
    else:
        kind = "STRING"
    return {"name": name, "type": kind, "mode": "NULLABLE"}


def _cell(value: Any, field: dict[str, Any]) -> Any:
    """One cell as the REST API sends it: scalars as strings, arrays as ``[{"v": ...}]``."""
    if field["mode"] == "REPEATED":
        if value is None:
            return []  # BigQuery has no NULL array: it is returned empty
        if any(v is None for v in value):
            raise FakeApiError(
                400, f"Array cannot have a null element; error in writing field {field['name']}"
            )
        scalar = {**field, "mode": "NULLABLE"}
        return [{"v": _cell(v, scalar)} for v in value]
    if value is None:
        return None
    if field["type"] == "RECORD":
        return {"f": [{"v": _cell(value[f["name"]], f)} for f in field["fields"]]}
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return str(value)


def _encode_result(table: pa.Table) -> dict[str, list]:
    """A query result as getQueryResults sends it: ``{"fields": [...], "rows": [{"f": ...}]}``.

    Raises:
        FakeApiError: what BigQuery refuses to return (an ARRAY of ARRAY, a NULL array element).
    """
    fields = [_result_field(f.name, f.type) for f in table.schema]
    rows = [
        {"f": [{"v": _cell(v, f)} for v, f in zip(row.values(), fields, strict=True)]}
        for row in table.to_pylist()
    ]
    return {"fields": fields, "rows": rows}


class FakeBigQuery:
    """BigQuery v2 REST for one project, on a DuckDB file, served on ``127.0.0.1``.

    Attributes:
        con: the DuckDB connection holding the data (datasets are schemas of the catalog
            named after the project).
        projects: the projects that exist (the fake's own first).
        read_only_projects: projects whose tables may be read but where no job may run.
        dataset_locations: ``(project, dataset)`` -> location (default ``US``).
        table_keys: ``(project, dataset, table)`` -> the KMS key a job wrote it with.
        endpoint: ``http://127.0.0.1:PORT``, the client's ``api_endpoint``.
        jobs: inserted jobs by job id (their REST resources).
        expirations: ``(dataset, table)`` -> ``expirationTime`` (ms since the epoch, as a string).
        requests: every request as ``(method, path)``, path without ``/bigquery/v2``.
        failures: job id -> the error that failed the job.
        fail_destination: ``(dataset, table)`` whose write fails the job (an injected 400).
    """

    def __init__(
        self,
        path: str | Path,
        project: str = DEFAULT_PROJECT,
        *,
        other_projects: dict[str, str | Path] | None = None,
        read_only_projects: tuple[str, ...] = (),
        dataset_locations: dict[tuple[str, str], str] | None = None,
    ) -> None:
        """Open (or create) the DuckDB files and start serving.

        Args:
            path: DuckDB file; name it ``<project>.db`` so SQL can say ``project.dataset.table``.
            project: the fake's own project (the client's default).
            other_projects: more projects: project id -> DuckDB file (attached as a catalog
                named after the project).
            read_only_projects: projects where the caller may read tables but not run jobs.
            dataset_locations: ``(project, dataset)`` -> location; others are ``US``.

        Raises:
            ValueError: the file's stem is not the project id.
        """
        if Path(path).stem != project:
            raise ValueError(f"name the DuckDB file {project}.db (its catalog), not {path}")
        self.project = project
        self.con = duckdb.connect(str(path))
        register_farm_fingerprint(self.con)
        self.projects = [project]
        for name, other in (other_projects or {}).items():
            self.con.execute(f"ATTACH '{Path(other)}' AS \"{name}\"")
            self.projects.append(name)
        unknown = set(read_only_projects) - set(self.projects)
        if unknown:
            raise ValueError(f"read_only_projects {sorted(unknown)} are not projects of the fake")
        self.read_only_projects = tuple(read_only_projects)
        self.dataset_locations = dict(dataset_locations or {})
        self.table_keys: dict[tuple[str, str, str], str] = {}
        self.lock = threading.RLock()  # one DuckDB connection, used by one request at a time
        self.jobs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, list] | None] = {}
        self.failures: dict[str, FakeApiError] = {}
        self.expirations: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_destination: tuple[str, str] | None = None
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeBigQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and close the DuckDB connection."""
        self.server.shutdown()
        self.server.server_close()
        self.con.close()

    def client(self) -> Any:
        """A real ``bigquery.Client`` for the project, anonymous, pointed at this server."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def tables(self) -> list[str]:
        """Every table of the fake's own project as ``dataset.table``, sorted."""
        rows = self.con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?",
            [self.project],
        ).fetchall()
        return sorted(f"{s}.{t}" for s, t in rows)

    def location(self, project: str, dataset: str) -> str:
        """The location of a dataset (``US`` unless ``dataset_locations`` says otherwise)."""
        return self.dataset_locations.get((project, dataset), "US")

    def _key(self, project: str, dataset: str, table: str) -> tuple[str, ...]:
        """Key of :attr:`expirations`: ``(dataset, table)`` in the own project."""
        return (dataset, table) if project == self.project else (project, dataset, table)

    def _check_project(self, project: str) -> None:
        if project not in self.projects:
            raise FakeApiError(404, f"Not found: Project {project}")

    def _dataset_exists(self, project: str, dataset: str) -> bool:
        rows = self.con.execute(
            "SELECT 1 FROM duckdb_schemas() WHERE database_name = ? AND schema_name = ? "
            "AND NOT internal",
            [project, dataset],
        ).fetchall()
        return bool(rows)

    def _table_rows(self, project: str, dataset: str, table: str) -> int | None:
        found = self.con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? "
            "AND table_name = ?",
            [project, dataset, table],
        ).fetchall()
        if not found:
            return None
        name = f'"{project}"."{dataset}"."{table}"'
        return self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]

    def dataset_resource(self, project: str, dataset: str) -> dict[str, Any]:
        """The datasets.get resource (reference and location).

        Raises:
            FakeApiError: 404 when the project or dataset does not exist.
        """
        self._check_project(project)
        if not self._dataset_exists(project, dataset):
            raise FakeApiError(404, f"Not found: Dataset {project}:{dataset}")
        return {
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "id": f"{project}:{dataset}",
            "location": self.location(project, dataset),
        }

    def table_resource(
        self, dataset: str, table: str, project: str | None = None
    ) -> dict[str, Any]:
        """The tables.get resource (reference, schema, expiration, encryption) of a table.

        Raises:
            FakeApiError: 404 when the table does not exist.
        """
        project = project or self.project
        self._check_project(project)
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [project, dataset, table],
        ).fetchall()
        if not rows:
            raise FakeApiError(404, f"Not found: Table {project}:{dataset}.{table}")
        fields = []
        for name, dtype in rows:
            mode = "REPEATED" if dtype.endswith("[]") else "NULLABLE"
            base = dtype.removesuffix("[]")
            field = {"name": name, "type": _TYPES.get(base, base), "mode": mode}
            if base.startswith("STRUCT"):  # placeholder: the schema check only needs the type
                field.update(type="RECORD", fields=[{"name": "a", "type": "INTEGER"}])
            fields.append(field)
        resource: dict[str, Any] = {
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
            "location": self.location(project, dataset),
        }
        key = self._key(project, dataset, table)
        if key in self.expirations:
            resource["expirationTime"] = self.expirations[key]
        if (project, dataset, table) in self.table_keys:
            kms = self.table_keys[project, dataset, table]
            resource["encryptionConfiguration"] = {"kmsKeyName": kms}
        return resource

    def _read_datasets(self, query: str) -> set[tuple[str, str]]:
        """``(project, dataset)`` of every table a GoogleSQL query reads."""
        try:
            tree = sqlglot.parse_one(query, read="bigquery")
        except sqlglot.errors.ParseError as exc:
            raise FakeApiError(400, f"Syntax error: {exc}") from exc
        found = set()
        for table in tree.find_all(sqlglot.exp.Table):
            if table.db:
                found.add((table.catalog or self.project, table.db))
        return found

    def _check_locations(
        self, job_location: str | None, read: set[tuple[str, str]], dest: tuple[str, str] | None
    ) -> None:
        """A job runs in one location: raise as BigQuery does when its datasets disagree."""
        involved = [*sorted(read), *([dest] if dest else [])]
        if job_location:
            for project, dataset in involved:
                if self.location(project, dataset).lower() != job_location.lower():
                    raise FakeApiError(
                        404,
                        f"Not found: Dataset {project}:{dataset} was not found in location "
                        f"{job_location}",
                    )
        if dest and read:
            sources = {self.location(p, d) for p, d in read}
            target = self.location(*dest)
            if any(loc.lower() != target.lower() for loc in sources):
                raise FakeApiError(
                    400,
                    "Cannot read and write in different locations: source: "
                    f"{', '.join(sorted(sources))}, destination: {target}",
                )

    def run_job(self, body: dict[str, Any], project: str | None = None) -> dict[str, Any]:
        """jobs.insert of a query job in ``project``: run it now, return the DONE job resource.

        Errors while running are recorded in the job's status (see the module docstring).

        Raises:
            FakeApiError: 403 in a read-only project; 400 for a request the fake cannot run
                (not a query, legacy SQL, an unknown parameter type).
        """
        project = project or self.project
        self._check_project(project)
        if project in self.read_only_projects:
            raise FakeApiError(
                403,
                f"Access Denied: Project {project}: User does not have bigquery.jobs.create "
                f"permission in project {project}.",
            )
        config = body.get("configuration", {}).get("query")
        if config is None:
            raise FakeApiError(400, "the fake runs query jobs only")
        if config.get("useLegacySql", True) is not False:
            raise FakeApiError(400, "legacy SQL is not supported: set useLegacySql=false")
        params = {
            p["name"]: _param_value(p["parameterType"], p["parameterValue"])
            for p in config.get("queryParameters", [])
        }
        # Same transpile as the product's DuckDB runner; @name parameters become $name.
        sql = sqlglot.transpile(config["query"], read="bigquery", write="duckdb")[0]
        job_id = body["jobReference"]["jobId"]
        job_location = body["jobReference"].get("location")
        dest = config.get("destinationTable")
        status: dict[str, Any] = {"state": "DONE"}
        result = None
        ran_in = job_location or "US"
        with self.lock:
            try:
                read = self._read_datasets(config["query"])
                dest_ds = (dest.get("projectId", project), dest["datasetId"]) if dest else None
                self._check_locations(job_location, read, dest_ds)
                involved = [*read, *([dest_ds] if dest_ds else [])]
                if involved:
                    ran_in = job_location or self.location(*sorted(involved)[0])
                if dest:
                    self._write(dest, config, sql, params, project)
                else:
                    result = _encode_result(self.con.sql(sql, params=params).to_arrow_table())
            except (FakeApiError, duckdb.Error) as exc:
                # The job is created and fails while running: the error is in its status.
                error = exc if isinstance(exc, FakeApiError) else FakeApiError(400, str(exc))
                self.failures[job_id] = error
                status.update(errorResult=error.error(), errors=[error.error()])
        self.results[job_id] = result
        job = {
            "jobReference": {"projectId": project, "jobId": job_id, "location": ran_in},
            "configuration": body["configuration"],
            "status": status,
            "statistics": {"creationTime": "1", "startTime": "1", "endTime": "2"},
        }
        self.jobs[job_id] = job
        return job

    def _write(
        self, dest: dict[str, str], config: dict[str, Any], sql: str, params: dict, job_project: str
    ) -> None:
        project = dest.get("projectId", job_project)
        dataset, table = dest["datasetId"], dest["tableId"]
        self._check_project(project)
        if (dataset, table) == self.fail_destination:
            raise FakeApiError(400, f"injected failure writing {(dataset, table)}")
        if not self._dataset_exists(project, dataset):
            raise FakeApiError(404, f"Not found: Dataset {project}:{dataset}")
        if project in self.read_only_projects:
            raise FakeApiError(
                403,
                f"Access Denied: Dataset {project}:{dataset}: Permission bigquery.tables.create "
                f"denied on dataset {project}:{dataset} (or it may not exist).",
            )
        kms = (config.get("destinationEncryptionConfiguration") or {}).get("kmsKeyName")
        if kms:
            self._check_kms_key(kms, project, dataset)
        existing = self._table_rows(project, dataset, table)
        if existing is None and config.get("createDisposition") == "CREATE_NEVER":
            raise FakeApiError(404, f"Not found: Table {project}:{dataset}.{table}")
        disposition = config.get("writeDisposition", "WRITE_EMPTY")
        name = f'"{project}"."{dataset}"."{table}"'
        if disposition == "WRITE_APPEND" and existing is not None:
            self.con.execute(f"INSERT INTO {name} {sql}", params)
        elif disposition == "WRITE_EMPTY" and existing:
            raise FakeApiError(409, f"Already Exists: Table {project}:{dataset}.{table}")
        elif disposition in ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND"):
            self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}", params)
            self.expirations.pop(self._key(project, dataset, table), None)
            self.table_keys.pop((project, dataset, table), None)
        else:
            raise FakeApiError(400, f"unknown writeDisposition {disposition!r}")
        if kms:
            self.table_keys[project, dataset, table] = kms

    def _check_kms_key(self, kms: str, project: str, dataset: str) -> None:
        found = _KMS_KEY_RE.fullmatch(kms)
        if not found:
            raise FakeApiError(400, f"Invalid Cloud KMS key name: {kms}")
        where = self.location(project, dataset)
        if found["location"].lower() != where.lower():
            raise FakeApiError(
                400,
                f"Cloud KMS key {kms} is in location {found['location']}, but dataset "
                f"{project}:{dataset} is in location {where}: the key must be in the "
                "dataset's location",
            )

    def query_results(self, job_id: str, max_results: str) -> dict[str, Any]:
        """jobs.getQueryResults: schema, row count and (unless maxResults=0) every row."""
        if job_id not in self.results:
            raise FakeApiError(404, f"Not found: Job {self.project}:{job_id}")
        if job_id in self.failures:  # a failed job's results are its error
            raise self.failures[job_id]
        result = self.results[job_id]
        out: dict[str, Any] = {
            "jobReference": self.jobs[job_id]["jobReference"],
            "jobComplete": True,
        }
        if result is None:
            return out
        out["schema"] = {"fields": result["fields"]}
        out["totalRows"] = str(len(result["rows"]))
        if max_results != "0":
            out["rows"] = result["rows"]
        return out

    def delete_table(self, dataset: str, table: str, project: str | None = None) -> None:
        """tables.delete.

        Raises:
            FakeApiError: 404 when the table does not exist.
        """
        project = project or self.project
        self._check_project(project)
        if self._table_rows(project, dataset, table) is None:
            raise FakeApiError(404, f"Not found: Table {project}:{dataset}.{table}")
        self.con.execute(f'DROP TABLE "{project}"."{dataset}"."{table}"')
        self.expirations.pop(self._key(project, dataset, table), None)
        self.table_keys.pop((project, dataset, table), None)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBigQuery

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path.removeprefix("/bigquery/v2")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with self.fake.lock:
            self.fake.requests.append((method, path))
            try:
                code, reply = self._dispatch(method, path, query, body)
            except FakeApiError as exc:
                code, reply = exc.code, exc.body()
        self._reply(code, reply)

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any] | None]:
        fake = self.fake
        project = re.match(r"/projects/([^/]+)", path)
        if project:
            fake._check_project(project[1])
        table = re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)", path)
        dataset = re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)", path)
        if method == "POST" and (m := re.fullmatch(r"/projects/([^/]+)/jobs", path)):
            return 200, fake.run_job(body, m[1])
        if method == "GET" and (m := re.fullmatch(r"/projects/[^/]+/queries/([^/]+)", path)):
            return 200, fake.query_results(m[1], query.get("maxResults", [""])[0])
        if method == "GET" and (m := re.fullmatch(r"/projects/[^/]+/jobs/([^/]+)", path)):
            if m[1] not in fake.jobs:
                raise FakeApiError(404, f"Not found: Job {fake.project}:{m[1]}")
            return 200, fake.jobs[m[1]]
        if dataset and method == "GET":
            return 200, fake.dataset_resource(*dataset.groups())
        if table:
            project_id, dataset_id, table_id = table.groups()
            if method == "GET":
                return 200, fake.table_resource(dataset_id, table_id, project_id)
            if method in ("PATCH", "PUT"):
                resource = fake.table_resource(dataset_id, table_id, project_id)  # 404 if missing
                if "expirationTime" in body:
                    key = fake._key(project_id, dataset_id, table_id)
                    fake.expirations[key] = body["expirationTime"]
                    resource["expirationTime"] = body["expirationTime"]
                return 200, resource
            if method == "DELETE":
                fake.delete_table(dataset_id, table_id, project_id)
                return 204, None
        raise FakeApiError(404, f"no route {method} {path} in the fake")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")
