"""The fake BigQuery REST server refuses what BigQuery refuses (real google-cloud-bigquery client)."""

import datetime as dt

import pytest
from google.api_core.exceptions import BadRequest, Conflict, NotFound
from google.cloud import bigquery

from fakes.bigquery_rest import FakeBigQuery

PROJECT = "test-project"


@pytest.fixture()
def fake(tmp_path):
    with FakeBigQuery(tmp_path / f"{PROJECT}.db", PROJECT) as server:
        server.con.execute("CREATE SCHEMA ds")
        server.con.execute("CREATE TABLE ds.t AS SELECT range AS x FROM range(3)")
        yield server


def write(client, sql, dest, disposition=None, params=()):
    config = bigquery.QueryJobConfig(destination=dest, query_parameters=list(params))
    if disposition:
        config.write_disposition = disposition
    return client.query(sql, job_config=config).result()


def test_query_parameters_are_typed_and_results_come_back(fake):
    rows = fake.client().query(
        "SELECT @n + 1 AS n, @s AS s, @b AS b",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("n", "INT64", 41),
                bigquery.ScalarQueryParameter("s", "STRING", "it's"),
                bigquery.ScalarQueryParameter("b", "BOOL", False),
            ]
        ),
    )
    assert [dict(r) for r in rows.result()] == [{"n": 42, "s": "it's", "b": False}]


def test_write_dispositions_follow_bigquery(fake):
    client = fake.client()
    sql = "SELECT 7 AS x"
    with pytest.raises(Conflict, match="Already Exists: Table test-project:ds.t"):
        write(client, sql, f"{PROJECT}.ds.t")  # WRITE_EMPTY, BigQuery's default
    write(client, sql, f"{PROJECT}.ds.t", bigquery.WriteDisposition.WRITE_APPEND)
    assert fake.con.execute("SELECT count(*) FROM ds.t").fetchall()[0][0] == 4
    write(client, sql, f"{PROJECT}.ds.t", bigquery.WriteDisposition.WRITE_TRUNCATE)
    assert fake.con.execute("SELECT x FROM ds.t").fetchall() == [(7,)]


def test_missing_dataset_project_table_and_job_are_not_found(fake):
    client = fake.client()
    with pytest.raises(NotFound, match="Not found: Dataset test-project:nope"):
        write(client, "SELECT 1 AS x", f"{PROJECT}.nope.t")
    assert fake.tables() == ["ds.t"]  # no dataset created on the way
    with pytest.raises(NotFound, match="Not found: Table test-project:ds.missing"):
        client.get_table(f"{PROJECT}.ds.missing")
    with pytest.raises(NotFound, match="Not found: Table"):
        client.delete_table(f"{PROJECT}.ds.missing")
    client.delete_table(f"{PROJECT}.ds.missing", not_found_ok=True)
    with pytest.raises(NotFound, match="Not found: Project other"):
        client.get_table("other.ds.t")
    with pytest.raises(NotFound, match="Not found: Job"):
        client.get_job("no-such-job")


def test_bad_query_and_unsupported_parameter_are_bad_requests(fake):
    client = fake.client()
    with pytest.raises(BadRequest, match="no_such_column"):
        client.query(f"SELECT no_such_column FROM `{PROJECT}.ds.t`").result()
    ts = bigquery.ScalarQueryParameter("t", "TIMESTAMP", None)
    with pytest.raises(BadRequest, match="unsupported query parameter type 'TIMESTAMP'"):
        client.query(
            "SELECT @t AS t", job_config=bigquery.QueryJobConfig(query_parameters=[ts])
        ).result()


def test_expiration_is_patched_and_dropped_on_rewrite(fake):
    client = fake.client()
    table = client.get_table(f"{PROJECT}.ds.t")
    table.expires = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    client.update_table(table, ["expires"])
    assert fake.expirations == {("ds", "t"): "1893542400000"}  # ms since the epoch
    assert client.get_table(f"{PROJECT}.ds.t").expires == table.expires
    write(client, "SELECT 1 AS x", f"{PROJECT}.ds.t", bigquery.WriteDisposition.WRITE_TRUNCATE)
    assert fake.expirations == {}


def test_file_must_be_named_after_the_project(tmp_path):
    with pytest.raises(ValueError, match="test-project.db"):
        FakeBigQuery(tmp_path / "other.db", PROJECT)


def test_results_are_typed_like_bigquery_rest_arrays_structs_and_non_finite_floats(fake):
    rows = fake.client().query(
        "SELECT [1.5, 2.5] AS xs, CAST(NULL AS ARRAY<INT64>) AS none,"
        " STRUCT(1 AS a, 'x' AS b) AS s, CAST('inf' AS FLOAT64) AS inf,"
        f" APPROX_QUANTILES(x, 2) AS q FROM `{PROJECT}.ds.t`"
    )
    (row,) = list(rows.result())
    assert row["xs"] == [1.5, 2.5]
    assert row["none"] == []  # BigQuery returns a NULL array as an empty one
    assert row["s"] == {"a": 1, "b": "x"}
    assert row["inf"] == float("inf")
    assert row["q"] == [0, 1, 2]  # min, median, max of 0, 1, 2
    schema = {f.name: (f.field_type, f.mode) for f in rows.result().schema}
    assert schema["xs"] == ("FLOAT", "REPEATED") and schema["s"][0] == "RECORD"


def test_a_null_array_element_fails_the_job(fake):
    with pytest.raises(BadRequest, match="Array cannot have a null element"):
        fake.client().query("SELECT [1, NULL] AS xs").result()
