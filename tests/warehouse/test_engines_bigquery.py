"""BigQueryWarehouse and prepare_data(bq://...) through the real google-cloud-bigquery client.

The client talks REST to the local fake (fakes/bigquery_rest.py) that executes each query on
DuckDB. No Google Cloud: anonymous credentials, 127.0.0.1.
"""

import datetime as dt
import uuid

import pytest
from google.api_core.exceptions import BadRequest

from fakes.bigquery_rest import FakeBigQuery
from vertex_imbalanced.config import ImbalanceConfig
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table
from vertex_imbalanced.warehouse.engines import BigQueryWarehouse
from vertex_imbalanced.warehouse.identifiers import TableRef
from vertex_imbalanced.warehouse.prepare import prepare_data

PROJECT = "test-project"


@pytest.fixture()
def fake(tmp_path):
    with FakeBigQuery(tmp_path / f"{PROJECT}.db", PROJECT) as server:
        server.con.execute("CREATE SCHEMA ds")
        server.con.register("demo_rows", demo_table(6000, seed=4))
        server.con.execute("CREATE TABLE ds.demo AS SELECT * FROM demo_rows")
        yield server


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
    fake.con.execute("CREATE SCHEMA out")  # BigQuery writes only into an existing dataset
    fake.fail_destination = ("out", "bad_train")  # validation and test are written first
    with pytest.raises(BadRequest, match="injected failure"):
        prepare_data(
            f"bq://{PROJECT}.ds.demo",
            DEMO_SPEC,
            output_prefix="bad",
            output_dataset="out",
            warehouse=BigQueryWarehouse(client=fake.client()),
        )
    assert fake.tables() == ["ds.demo"]  # the schema "out" stays, empty
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
