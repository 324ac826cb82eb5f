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

- Only the fake's project exists: any other project in a path is 404 ``Not found: Project``.
  Tables in SQL are ``project.dataset.table``; the DuckDB file is named after the project, so
  its catalog resolves them.
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


class FakeApiError(Exception):
    """An error the fake answers as BigQuery does: an HTTP status and a JSON error body."""

    _STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def error(self) -> dict[str, str]:
        """One ErrorProto (``reason``, ``message``), as in a job's ``status.errorResult``."""
        reason = {400: "invalidQuery", 404: "notFound", 409: "duplicate"}.get(self.code, "invalid")
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
        con: the DuckDB connection holding the data (datasets are schemas).
        endpoint: ``http://127.0.0.1:PORT``, the client's ``api_endpoint``.
        jobs: inserted jobs by job id (their REST resources).
        expirations: ``(dataset, table)`` -> ``expirationTime`` (ms since the epoch, as a string).
        requests: every request as ``(method, path)``, path without ``/bigquery/v2``.
        failures: job id -> the error that failed the job.
        fail_destination: ``(dataset, table)`` whose write fails the job (an injected 400).
    """

    def __init__(self, path: str | Path, project: str = DEFAULT_PROJECT) -> None:
        """Open (or create) the DuckDB file and start serving.

        Args:
            path: DuckDB file; name it ``<project>.db`` so SQL can say ``project.dataset.table``.
            project: the only project that exists.

        Raises:
            ValueError: the file's stem is not the project id.
        """
        if Path(path).stem != project:
            raise ValueError(f"name the DuckDB file {project}.db (its catalog), not {path}")
        self.project = project
        self.con = duckdb.connect(str(path))
        register_farm_fingerprint(self.con)
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
        """Every table as ``dataset.table``, sorted."""
        rows = self.con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return sorted(f"{s}.{t}" for s, t in rows)

    def _dataset_exists(self, dataset: str) -> bool:
        rows = self.con.execute(
            "SELECT 1 FROM duckdb_schemas() WHERE schema_name = ? AND NOT internal", [dataset]
        ).fetchall()
        return bool(rows)

    def _table_rows(self, dataset: str, table: str) -> int | None:
        found = self.con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
            [dataset, table],
        ).fetchall()
        if not found:
            return None
        return self.con.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchall()[0][0]

    def table_resource(self, dataset: str, table: str) -> dict[str, Any]:
        """The tables.get resource (reference, schema, expiration) of ``dataset.table``.

        Raises:
            FakeApiError: 404 when the table does not exist.
        """
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            raise FakeApiError(404, f"Not found: Table {self.project}:{dataset}.{table}")
        fields = []
        for name, dtype in rows:
            mode = "REPEATED" if dtype.endswith("[]") else "NULLABLE"
            base = dtype.removesuffix("[]")
            field = {"name": name, "type": _TYPES.get(base, base), "mode": mode}
            if base.startswith("STRUCT"):  # placeholder: the schema check only needs the type
                field.update(type="RECORD", fields=[{"name": "a", "type": "INTEGER"}])
            fields.append(field)
        resource: dict[str, Any] = {
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
        }
        if (dataset, table) in self.expirations:
            resource["expirationTime"] = self.expirations[dataset, table]
        return resource

    def run_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """jobs.insert of a query job: run it now and return the DONE job resource.

        Errors while running are recorded in the job's status (see the module docstring).

        Raises:
            FakeApiError: 400 for a request the fake cannot run (not a query, legacy SQL, an
                unknown parameter type).
        """
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
        dest = config.get("destinationTable")
        status: dict[str, Any] = {"state": "DONE"}
        result = None
        with self.lock:
            try:
                if dest:
                    self._write(dest, config, sql, params)
                else:
                    result = _encode_result(self.con.sql(sql, params=params).to_arrow_table())
            except (FakeApiError, duckdb.Error) as exc:
                # The job is created and fails while running: the error is in its status.
                error = exc if isinstance(exc, FakeApiError) else FakeApiError(400, str(exc))
                self.failures[job_id] = error
                status.update(errorResult=error.error(), errors=[error.error()])
        self.results[job_id] = result
        job = {
            "jobReference": {"projectId": self.project, "jobId": job_id, "location": "US"},
            "configuration": body["configuration"],
            "status": status,
            "statistics": {"creationTime": "1", "startTime": "1", "endTime": "2"},
        }
        self.jobs[job_id] = job
        return job

    def _write(self, dest: dict[str, str], config: dict[str, Any], sql: str, params: dict) -> None:
        dataset, table = dest["datasetId"], dest["tableId"]
        if dest.get("projectId", self.project) != self.project:
            raise FakeApiError(404, f"Not found: Project {dest['projectId']}")
        if (dataset, table) == self.fail_destination:
            raise FakeApiError(400, f"injected failure writing {(dataset, table)}")
        if not self._dataset_exists(dataset):
            raise FakeApiError(404, f"Not found: Dataset {self.project}:{dataset}")
        existing = self._table_rows(dataset, table)
        if existing is None and config.get("createDisposition") == "CREATE_NEVER":
            raise FakeApiError(404, f"Not found: Table {self.project}:{dataset}.{table}")
        disposition = config.get("writeDisposition", "WRITE_EMPTY")
        name = f'"{dataset}"."{table}"'
        if disposition == "WRITE_APPEND" and existing is not None:
            self.con.execute(f"INSERT INTO {name} {sql}", params)
        elif disposition == "WRITE_EMPTY" and existing:
            raise FakeApiError(409, f"Already Exists: Table {self.project}:{dataset}.{table}")
        elif disposition in ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND"):
            self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}", params)
            self.expirations.pop((dataset, table), None)
        else:
            raise FakeApiError(400, f"unknown writeDisposition {disposition!r}")

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

    def delete_table(self, dataset: str, table: str) -> None:
        """tables.delete.

        Raises:
            FakeApiError: 404 when the table does not exist.
        """
        if self._table_rows(dataset, table) is None:
            raise FakeApiError(404, f"Not found: Table {self.project}:{dataset}.{table}")
        self.con.execute(f'DROP TABLE "{dataset}"."{table}"')
        self.expirations.pop((dataset, table), None)


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
        if project and project[1] != fake.project:
            raise FakeApiError(404, f"Not found: Project {project[1]}")
        table = re.fullmatch(r"/projects/[^/]+/datasets/([^/]+)/tables/([^/]+)", path)
        if method == "POST" and re.fullmatch(r"/projects/[^/]+/jobs", path):
            return 200, fake.run_job(body)
        if method == "GET" and (m := re.fullmatch(r"/projects/[^/]+/queries/([^/]+)", path)):
            return 200, fake.query_results(m[1], query.get("maxResults", [""])[0])
        if method == "GET" and (m := re.fullmatch(r"/projects/[^/]+/jobs/([^/]+)", path)):
            if m[1] not in fake.jobs:
                raise FakeApiError(404, f"Not found: Job {fake.project}:{m[1]}")
            return 200, fake.jobs[m[1]]
        if table and method == "GET":
            return 200, fake.table_resource(*table.groups())
        if table and method in ("PATCH", "PUT"):
            resource = fake.table_resource(*table.groups())  # 404 when missing
            if "expirationTime" in body:
                fake.expirations[table.groups()] = body["expirationTime"]
                resource["expirationTime"] = body["expirationTime"]
            return 200, resource
        if table and method == "DELETE":
            fake.delete_table(*table.groups())
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
