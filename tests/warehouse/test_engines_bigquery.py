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


# --- billing project, locations, CMEK (issue 13 items 5, 9, 10) ------------------------------


@pytest.fixture()
def shared_data(tmp_path):
    """The caller's project 'mine' and a data project 'public-data' it may only read."""
    import duckdb

    with duckdb.connect(str(tmp_path / "public-data.db")) as con:
        con.execute("CREATE SCHEMA ds")
        con.register("demo_rows", demo_table(3000, seed=5))
        con.execute("CREATE TABLE ds.demo AS SELECT * FROM demo_rows")
    with FakeBigQuery(
        tmp_path / "mine.db",
        "mine",
        other_projects={"public-data": tmp_path / "public-data.db"},
        read_only_projects=("public-data",),
        dataset_locations={("mine", "eu_out"): "EU"},
    ) as server:
        server.con.execute("CREATE SCHEMA out")
        server.con.execute("CREATE SCHEMA eu_out")
        yield server


def _jobs(fake):
    return [path for method, path in fake.requests if method == "POST" and path.endswith("/jobs")]


def test_jobs_bill_in_the_billing_project_not_the_read_only_data_project(shared_data):
    fake = shared_data
    prepared = prepare_data(
        "bq://public-data.ds.demo",
        DEMO_SPEC,
        output_prefix="run1",
        output_dataset="mine.out",
        warehouse=BigQueryWarehouse(client=fake.client()),
    )
    assert prepared.test_uri == "bq://mine.out.run1_test"
    assert _jobs(fake) and set(_jobs(fake)) == {"/projects/mine/jobs"}
    assert sum(sum(c.values()) for c in prepared.split_counts.values()) == 3000

    # the old behaviour, jobs in the source's project, is refused as BigQuery refuses it
    from google.api_core.client_options import ClientOptions
    from google.api_core.exceptions import Forbidden
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    in_data_project = bigquery.Client(
        project="public-data",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.endpoint),
    )
    with pytest.raises(Forbidden, match="bigquery.jobs.create permission in project public-data"):
        BigQueryWarehouse(client=in_data_project).query("SELECT 1 AS x", {})


def test_output_dataset_in_another_location_is_refused_before_any_job(shared_data):
    fake = shared_data
    wh = BigQueryWarehouse(client=fake.client())
    source = TableRef.parse("public-data.ds.demo")
    with pytest.raises(PipelineInputError) as caught:
        wh.check_outputs(source, [TableRef.parse("mine.eu_out.run_train")])
    message = str(caught.value)
    assert "\n" not in message
    assert "mine.eu_out is in location EU" in message
    assert "public-data.ds.demo is in US" in message
    assert "output_dataset" in message
    with pytest.raises(
        PipelineInputError, match=r"mine\.nope does not exist \(parameter output_dataset\)"
    ):
        wh.check_outputs(source, [TableRef.parse("mine.nope.t")])
    assert _jobs(fake) == []

    wh.check_outputs(source, [TableRef.parse("mine.out.run_train")])
    assert wh.location == "US"  # later jobs run where the data is
    assert _jobs(fake) == []


def test_prepare_refuses_an_output_dataset_in_another_location_before_any_job(shared_data):
    fake = shared_data
    with pytest.raises(PipelineInputError, match="output_dataset") as caught:
        prepare_data(
            "bq://public-data.ds.demo",
            DEMO_SPEC,
            output_prefix="run1",
            output_dataset="mine.eu_out",
            warehouse=BigQueryWarehouse(client=fake.client()),
        )
    assert "mine.eu_out is in location EU" in str(caught.value)
    assert _jobs(fake) == []
    tables = fake.con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'eu_out'"
    ).fetchall()
    assert tables == []


def test_fake_fails_a_job_that_writes_across_locations(shared_data):
    # what check_outputs saves the user from: the job fails only when it runs
    wh = BigQueryWarehouse(client=shared_data.client())
    with pytest.raises(
        BadRequest,
        match="Cannot read and write in different locations: source: US, destination: EU",
    ):
        wh.create_table(TableRef.parse("mine.eu_out.t"), "SELECT id FROM `public-data.ds.demo`", {})


def test_split_tables_are_encrypted_with_the_kms_key(shared_data):
    fake = shared_data
    key = "projects/mine/locations/us/keyRings/r/cryptoKeys/k"
    prepared = prepare_data(
        "bq://public-data.ds.demo",
        DEMO_SPEC,
        output_prefix="enc",
        output_dataset="mine.out",
        warehouse=BigQueryWarehouse(client=fake.client(), kms_key=key),
    )
    written = {t: k for t, k in fake.table_keys.items()}
    assert written == {
        ("mine", "out", f"enc_{split}"): key for split in ("train", "validation", "test")
    }
    table = fake.client().get_table(prepared.train_uri.removeprefix("bq://"))
    assert table.encryption_configuration.kms_key_name == key

    # a key in another location than the dataset is refused, as by BigQuery
    eu_key = "projects/mine/locations/eu/keyRings/r/cryptoKeys/k"
    with pytest.raises(BadRequest, match="must be in the dataset's location"):
        BigQueryWarehouse(client=fake.client(), kms_key=eu_key).create_table(
            TableRef.parse("mine.out.t"), "SELECT 1 AS x", {}
        )
    with pytest.raises(PipelineInputError, match="kms_key must be projects/P/locations/L"):
        BigQueryWarehouse(client=fake.client(), kms_key="k")
