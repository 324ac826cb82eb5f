import time

import duckdb
import pyarrow as pa
import pytest
from google.cloud import bigquery

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.engines import (
    DuckDBWarehouse,
    bigquery_field_to_arrow,
    bigquery_parameters,
    open_warehouse,
    parameter_names,
    render,
    to_duckdb,
)
from vertex_imbalanced.warehouse.fingerprint import farm_fingerprint, register_farm_fingerprint
from vertex_imbalanced.warehouse.identifiers import TableRef

ALPHABET = -2427165924636348523  # BigQuery docs: FARM_FINGERPRINT("alphabet")


def test_farm_fingerprint_matches_bigquery_reference_value():
    assert farm_fingerprint("alphabet") == ALPHABET
    con = duckdb.connect()
    register_farm_fingerprint(con)
    register_farm_fingerprint(con)  # idempotent
    rows = con.execute(
        "SELECT farm_fingerprint('alphabet'), farm_fingerprint(NULL), farm_fingerprint('')"
    ).fetchall()
    assert rows == [(ALPHABET, None, farm_fingerprint(""))]


def test_transpiled_bigquery_sql_gives_the_reference_value_on_duckdb(tmp_path):
    with DuckDBWarehouse(tmp_path / "w.db") as wh:
        out = wh.query("SELECT FARM_FINGERPRINT(@s) AS f", {"s": "alphabet"})
    assert out.column("f").to_pylist() == [ALPHABET]


def test_udf_is_vectorised_and_fast():
    con = duckdb.connect()
    register_farm_fingerprint(con)
    start = time.perf_counter()
    n_null, n_neg = con.execute(
        "SELECT count(*) - count(f), count_if(f < 0) FROM "
        "(SELECT farm_fingerprint(CASE WHEN range % 100 = 0 THEN NULL "
        "ELSE CAST(range AS VARCHAR) END) AS f FROM range(300000))"
    ).fetchall()[0]
    elapsed = time.perf_counter() - start
    assert n_null == 3000
    assert 0.45 < n_neg / 297000 < 0.55  # signed: about half negative
    assert elapsed < 10, f"300k fingerprints took {elapsed:.1f}s"


def test_render_quotes_validated_identifiers():
    sql = render(
        "SELECT {col} FROM {src} WHERE x = @v",
        tables={"src": TableRef.parse("bq://my-project.ds.tbl")},
        columns={"col": "amount"},
    )
    assert sql == "SELECT `amount` FROM `my-project.ds.tbl` WHERE x = @v"


@pytest.mark.parametrize(
    "bad", ["x; DROP TABLE y", "a`b", 'a"b', "`x`", "", "x) OR (1", "a\\`b", "x/*"]
)
def test_render_rejects_injection_in_columns(bad):
    with pytest.raises(PipelineInputError, match="invalid column name"):
        render("SELECT {c} FROM t", columns={"c": bad})


@pytest.mark.parametrize("name", ["a'b", "a b", "x--", "1x", "#x", "größe"])
def test_render_quotes_flexible_names_as_one_identifier(name):
    sql = render("SELECT {c} FROM t", columns={"c": name})
    assert sql == f"SELECT `{name}` FROM t"
    assert to_duckdb(sql) == f'SELECT "{name}" FROM t'


@pytest.mark.parametrize("bad", ["t; DROP TABLE y", "d.t`; DROP", "d.'t'", 'd."t"', "a.b.c.d"])
def test_render_rejects_injection_in_tables(bad):
    with pytest.raises(PipelineInputError):
        render("SELECT 1 FROM {t}", tables={"t": bad})


def test_render_requires_exactly_the_placeholders():
    with pytest.raises(KeyError):
        render("SELECT {a}, {b} FROM t", columns={"a": "x"})
    with pytest.raises(KeyError):
        render("SELECT {a} FROM t", columns={"a": "x", "b": "y"})


def test_parameters_survive_transpiling():
    sql = "SELECT @a + 1 AS x, @b AS y FROM UNNEST(@c) AS z WHERE @a > 0"
    assert parameter_names(sql) == ["a", "b", "c"]
    duck = to_duckdb(sql)
    assert "$a" in duck and "$c" in duck and "@" not in duck


def test_duckdb_binds_only_used_parameters_and_names_missing_ones(tmp_path):
    with DuckDBWarehouse(tmp_path / "w.db") as wh:
        out = wh.query("SELECT @a * 2 AS x", {"a": 21, "unused": "ignored"})
        assert out.column("x").to_pylist() == [42]
        with pytest.raises(KeyError, match="a"):
            wh.query("SELECT @a AS x", {})


def test_duckdb_atomic_rolls_back_every_table(tmp_path):
    with DuckDBWarehouse(tmp_path / "w.db") as wh:
        wh.con.execute("CREATE TABLE src AS SELECT range AS k FROM range(10)")
        wh.create_table(TableRef.parse("old"), "SELECT 1 AS v", {})
        with pytest.raises(duckdb.BinderException), wh.atomic():
            wh.create_table(TableRef.parse("a"), "SELECT k FROM `src`", {})
            wh.create_table(TableRef.parse("old"), "SELECT 2 AS v", {})
            wh.create_table(TableRef.parse("b"), "SELECT no_such_column FROM `src`", {})
        assert wh.table_schema(TableRef.parse("a")) is None
        assert wh.con.execute("SELECT v FROM old").fetchall() == [(1,)]
        with wh.atomic():
            wh.create_table(TableRef.parse("a"), "SELECT k FROM `src`", {})
        assert wh.table_schema(TableRef.parse("a")).names == ["k"]


def test_bigquery_parameters_build_the_real_job_config():
    params = bigquery_parameters(
        {"lo": 3, "rate": 0.5, "salt": "keep:", "names": ["a", "b"], "rates": [1, 0.25]}
    )
    config = bigquery.QueryJobConfig(query_parameters=params, use_legacy_sql=False)
    api = {p["name"]: p for p in config.to_api_repr()["query"]["queryParameters"]}
    assert api["lo"]["parameterType"] == {"type": "INT64"}
    assert api["rate"]["parameterType"] == {"type": "FLOAT64"}
    assert api["salt"]["parameterValue"] == {"value": "keep:"}
    assert api["names"]["parameterType"] == {"type": "ARRAY", "arrayType": {"type": "STRING"}}
    assert api["rates"]["parameterType"]["arrayType"] == {"type": "FLOAT64"}
    assert [float(v["value"]) for v in api["rates"]["parameterValue"]["arrayValues"]] == [1.0, 0.25]
    with pytest.raises(ValueError, match="empty"):
        bigquery_parameters({"x": []})


def test_bigquery_schema_maps_to_arrow_types():
    fields = [
        bigquery.SchemaField("a", "INTEGER"),
        bigquery.SchemaField("b", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("c", "RECORD", fields=[bigquery.SchemaField("x", "FLOAT")]),
        bigquery.SchemaField("d", "FLOAT64", mode="REPEATED"),
        bigquery.SchemaField("e", "TIMESTAMP"),
    ]
    schema = pa.schema([bigquery_field_to_arrow(f) for f in fields])
    assert schema.field("a").type == pa.int64()
    assert not schema.field("b").nullable
    assert pa.types.is_struct(schema.field("c").type)
    assert schema.field("d").type == pa.list_(pa.float64())
    assert schema.field("e").type == pa.timestamp("us", tz="UTC")


def test_open_warehouse_errors(tmp_path):
    with pytest.raises(PipelineInputError, match="does not exist"):
        open_warehouse(f"duckdb://{tmp_path}/missing.db?table=t")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(PipelineInputError, match="unsupported source URI"):
        open_warehouse("s3://bucket/t")
    with pytest.raises(PipelineInputError, match="project.dataset.table"):
        open_warehouse("bq://just_a_table")


def test_duckdb_warehouse_runs_under_the_fixed_memory_limit(tmp_path, monkeypatch):
    from vertex_imbalanced.warehouse import duckdb_settings as ds

    monkeypatch.delenv(ds.MEMORY_LIMIT_ENV, raising=False)
    with DuckDBWarehouse(tmp_path / "w.duckdb") as wh:
        limit, spill = wh.con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    with duckdb.connect() as plain:  # DuckDB's own spelling of the default (64MB: '61.0 MiB')
        plain.execute(f"SET memory_limit = '{ds.DEFAULT_MEMORY_LIMIT}'")
        expected = plain.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit == expected and spill == f"{(tmp_path / 'w.duckdb').resolve()}.tmp"
