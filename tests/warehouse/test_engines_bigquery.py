"""BigQueryWarehouse and prepare_data(bq://...) through the real google-cloud-bigquery client.

The client talks REST to a small local server that executes each query on DuckDB (the same
sqlglot transpiling the DuckDB runner uses). No Google Cloud: anonymous credentials, 127.0.0.1.
"""

import datetime as dt
import json
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pyarrow as pa
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from vertex_imbalanced.config import ImbalanceConfig
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table
from vertex_imbalanced.warehouse.engines import BigQueryWarehouse, to_duckdb
from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint
from vertex_imbalanced.warehouse.identifiers import TableRef
from vertex_imbalanced.warehouse.prepare import prepare_data

PROJECT = "test-project"
_TYPES = {"BIGINT": "INTEGER", "DOUBLE": "FLOAT", "VARCHAR": "STRING", "BOOLEAN": "BOOLEAN"}


def _param_value(ptype, pvalue):
    if ptype["type"] == "ARRAY":
        return [_param_value(ptype["arrayType"], v) for v in pvalue.get("arrayValues", [])]
    cast = {"INT64": int, "FLOAT64": float, "STRING": str, "BOOL": lambda v: v == "true"}
    return cast[ptype["type"]](pvalue["value"])


def _arrow_to_bq(t):
    if pa.types.is_integer(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "FLOAT"
    return "BOOLEAN" if pa.types.is_boolean(t) else "STRING"


def _cell(value):
    if value is None:
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


class FakeBigQuery:
    """Just enough of BigQuery v2 REST for our runner: jobs, query results, tables."""

    def __init__(self, path):
        self.con = duckdb.connect(str(path))  # the file is named after PROJECT: the catalog
        register_farm_fingerprint(self.con)
        self.lock = threading.RLock()  # one DuckDB connection, used by one request at a time
        self.jobs, self.results, self.expirations, self.requests = {}, {}, {}, []
        self.fail_destination = None
        handler = type("H", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self):
        return bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def tables(self):
        rows = self.con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return sorted(f"{s}.{t}" for s, t in rows)

    def table_resource(self, dataset, table):
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            return None
        fields = []
        for name, dtype in rows:
            field = {"name": name, "type": _TYPES.get(dtype, dtype), "mode": "NULLABLE"}
            if dtype.startswith("STRUCT"):
                field.update(type="RECORD", fields=[{"name": "a", "type": "INTEGER"}])
            fields.append(field)
        resource = {
            "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
        }
        if (dataset, table) in self.expirations:
            resource["expirationTime"] = self.expirations[dataset, table]
        return resource

    def run_job(self, body):
        config = body["configuration"]["query"]
        params = {
            p["name"]: _param_value(p["parameterType"], p["parameterValue"])
            for p in config.get("queryParameters", [])
        }
        sql = to_duckdb(config["query"])
        job_id = body["jobReference"]["jobId"]
        dest = config.get("destinationTable")
        with self.lock:
            if dest:
                name = (dest["datasetId"], dest["tableId"])
                if name == self.fail_destination:
                    raise RuntimeError(f"injected failure writing {name}")
                assert config["writeDisposition"] == "WRITE_TRUNCATE"
                self.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{name[0]}"')
                self.con.execute(
                    f'CREATE OR REPLACE TABLE "{name[0]}"."{name[1]}" AS {sql}', params
                )
                self.expirations.pop(name, None)
                result = None
            else:
                result = self.con.sql(sql, params=params).to_arrow_table()
        self.results[job_id] = result
        job = {
            "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
            "configuration": body["configuration"],
            "status": {"state": "DONE"},
            "statistics": {"creationTime": "1", "startTime": "1", "endTime": "2"},
        }
        self.jobs[job_id] = job
        return job

    def query_results(self, job_id, max_results):
        table = self.results[job_id]
        out = {"jobReference": self.jobs[job_id]["jobReference"], "jobComplete": True}
        if table is None:
            return out
        out["schema"] = {
            "fields": [{"name": f.name, "type": _arrow_to_bq(f.type)} for f in table.schema]
        }
        out["totalRows"] = str(table.num_rows)
        if max_results != "0":
            out["rows"] = [
                {"f": [{"v": _cell(v)} for v in row.values()]} for row in table.to_pylist()
            ]
        return out


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBigQuery

    def log_message(self, *args):
        pass

    def _reply(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path.removeprefix("/bigquery/v2")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with self.fake.lock:
            self.fake.requests.append((method, path))
            self._dispatch(method, path, query, body)

    def _dispatch(self, method, path, query, body):
        table = re.fullmatch(r"/projects/[^/]+/datasets/([^/]+)/tables/([^/]+)", path)
        try:
            if method == "POST" and re.fullmatch(r"/projects/[^/]+/jobs", path):
                return self._reply(200, self.fake.run_job(body))
            if m := re.fullmatch(r"/projects/[^/]+/queries/([^/]+)", path):
                return self._reply(
                    200, self.fake.query_results(m[1], query.get("maxResults", [""])[0])
                )
            if m := re.fullmatch(r"/projects/[^/]+/jobs/([^/]+)", path):
                return self._reply(200, self.fake.jobs[m[1]])
            if table and method == "GET":
                resource = self.fake.table_resource(*table.groups())
                if resource is None:
                    return self._reply(
                        404,
                        {
                            "error": {
                                "code": 404,
                                "message": f"Not found: Table {path}",
                                "status": "NOT_FOUND",
                            }
                        },
                    )
                return self._reply(200, resource)
            if table and method in ("PATCH", "PUT"):
                self.fake.expirations[table.groups()] = body["expirationTime"]
                return self._reply(200, self.fake.table_resource(*table.groups()))
            if table and method == "DELETE":
                self.fake.con.execute(f'DROP TABLE IF EXISTS "{table[1]}"."{table[2]}"')
                return self._reply(204)
        except Exception as exc:  # reported like BigQuery does, as a 400 with a message
            return self._reply(
                400, {"error": {"code": 400, "message": str(exc), "status": "INVALID_ARGUMENT"}}
            )
        return self._reply(404, {"error": {"code": 404, "message": f"no route {method} {path}"}})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PATCH(self):
        self._route("PATCH")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")


@pytest.fixture()
def fake(tmp_path):
    server = FakeBigQuery(tmp_path / f"{PROJECT}.db")
    server.con.execute("CREATE SCHEMA ds")
    server.con.register("demo_rows", demo_table(6000, seed=4))
    server.con.execute("CREATE TABLE ds.demo AS SELECT * FROM demo_rows")
    yield server
    server.server.shutdown()
    server.con.close()


def test_runner_reads_schema_runs_parameterised_queries_and_sets_expiration(fake):
    wh = BigQueryWarehouse(client=fake.client())
    schema = wh.table_schema(TableRef.parse(f"{PROJECT}.ds.demo"))
    assert schema.names[:3] == ["id", "label", "x1"]
    assert wh.table_schema(TableRef.parse(f"{PROJECT}.ds.nope")) is None
    out = wh.query(
        "SELECT @n * 2 AS x, ARRAY_LENGTH(@names) AS k, @s AS s",
        {"n": 21, "names": ["a", "b"], "s": "hi"},
    )
    assert out.to_pylist() == [{"x": 42, "k": 2, "s": "hi"}]
    dest = TableRef.parse(f"{PROJECT}.ds.copy")
    before = dt.datetime.now(dt.UTC)
    wh.create_table(
        dest, f"SELECT id FROM `{PROJECT}.ds.demo` WHERE label = @c", {"c": 2}, expiration_hours=5
    )
    expires = dt.datetime.fromtimestamp(int(fake.expirations["ds", "copy"]) / 1000, dt.UTC)
    assert dt.timedelta(hours=4.9) < expires - before < dt.timedelta(hours=5.1)
    assert fake.con.execute("SELECT count(*) FROM ds.copy").fetchall()[0][0] > 0


def test_prepare_data_on_bigquery(fake):
    prepared = prepare_data(
        f"bq://{PROJECT}.ds.demo",
        DEMO_SPEC,
        output_prefix=f"run-{uuid.uuid4().hex[:6]}",
        imbalance=ImbalanceConfig(max_ratio=3),
        warehouse=BigQueryWarehouse(client=fake.client()),
    )
    assert prepared.train_uri.startswith(f"bq://{PROJECT}.ds.run_")
    report = prepared.imbalance_report
    assert sum(sum(c.values()) for c in prepared.split_counts.values()) == 6000
    assert report.keep_rates["0"] < 0.2 and report.keep_rates["2"] == 1.0
    train_table = prepared.train_uri.rsplit(".", 1)[1]
    n = fake.con.execute(f'SELECT count(*) FROM ds."{train_table}"').fetchall()[0][0]
    assert n == sum(report.kept_counts.values())
    assert len(fake.expirations) == 3  # every output table expires


def test_prepare_data_on_bigquery_deletes_partial_outputs_on_failure(fake):
    fake.fail_destination = ("out", "bad_train")  # validation and test are written first
    with pytest.raises(Exception, match="injected failure"):
        prepare_data(
            f"bq://{PROJECT}.ds.demo",
            DEMO_SPEC,
            output_prefix="bad",
            output_dataset="out",
            warehouse=BigQueryWarehouse(client=fake.client()),
        )
    assert fake.tables() == ["ds.demo"]
    assert ("DELETE", f"/projects/{PROJECT}/datasets/out/tables/bad_validation") in fake.requests


def test_prepare_data_on_bigquery_validates_before_writing(fake):
    fake.con.execute("CREATE TABLE ds.nested AS SELECT id, label, {'a': 1} AS s FROM ds.demo")
    wh = BigQueryWarehouse(client=fake.client())
    with pytest.raises(SchemaError, match="'s'.*STRUCT"):
        prepare_data(
            f"bq://{PROJECT}.ds.nested",
            DEMO_SPEC.__class__(label="label", key="id"),
            output_prefix="x",
            warehouse=wh,
        )
    with pytest.raises(PipelineInputError, match="does not exist"):
        prepare_data(f"bq://{PROJECT}.ds.missing", DEMO_SPEC, output_prefix="x", warehouse=wh)
    assert not any(method == "POST" and "jobs" in path for method, path in fake.requests)
