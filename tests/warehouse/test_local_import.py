"""local_import: CSV/Parquet into DuckDB, DuckDB type -> feature role, --source resolution."""

import datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri, parse_duckdb_uri
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC
from vertex_imbalanced.warehouse.local_import import (
    ROW_KEY,
    SOURCE_DB,
    SOURCE_TABLE,
    demo_source,
    feature_spec,
    import_file,
    resolve_source,
)


def rows_of(db, sql):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_csv_import_numbers_rows_in_file_order_and_detects_types(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("amount,city,churned\n1.5,paris,left\n2.0,,stayed\n0.5,rome,stayed\n")
    uri = import_file(csv, tmp_path, add_key=True)
    assert uri == duckdb_uri(tmp_path / SOURCE_DB, SOURCE_TABLE)
    db = tmp_path / SOURCE_DB
    assert rows_of(db, f"SELECT amount, city, churned, {ROW_KEY} FROM source") == [
        (1.5, "paris", "left", "1"),
        (2.0, None, "stayed", "2"),
        (0.5, "rome", "stayed", "3"),
    ]
    types = dict(rows_of(db, "SELECT column_name, data_type FROM information_schema.columns"))
    assert types == {
        "amount": "DOUBLE",
        "city": "VARCHAR",
        "churned": "VARCHAR",
        ROW_KEY: "VARCHAR",
    }
    assert not list(tmp_path.glob("*.tmp"))


def test_parquet_import_keeps_the_file_types_and_adds_no_key_when_asked(tmp_path):
    table = pa.table(
        {
            "id": pa.array(["a", "b"]),
            "n": pa.array([1, 2], pa.int32()),
            "when": pa.array([datetime.date(2024, 1, 2), None], pa.date32()),
            "ok": pa.array([True, False]),
        }
    )
    pq.write_table(table, tmp_path / "data.parquet")
    uri = import_file(tmp_path / "data.parquet", tmp_path, add_key=False)
    path, ref = parse_duckdb_uri(uri)
    with duckdb.connect(path, read_only=True) as con:
        back = con.sql(f"SELECT * FROM {ref.duckdb}").to_arrow_table()
    assert back.schema.names == ["id", "n", "when", "ok"]  # no row_key
    assert back.to_pylist() == table.to_pylist()
    assert back.schema.field("n").type == pa.int32()


def test_a_failed_import_names_the_file_and_keeps_the_previous_database(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,x\n")
    import_file(good, tmp_path, add_key=True)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(PipelineInputError, match=r"cannot read source file '.*broken.parquet'"):
        import_file(broken, tmp_path, add_key=True)
    assert rows_of(tmp_path / SOURCE_DB, "SELECT a, b FROM source") == [(1, "x")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "good.csv", SOURCE_DB]
    with pytest.raises(PipelineInputError, match=r"source file '.*none.csv' does not exist"):
        import_file(tmp_path / "none.csv", tmp_path, add_key=True)
    with pytest.raises(PipelineInputError, match=r"unknown source file '.*data.xlsx'"):
        import_file(tmp_path / "data.xlsx", tmp_path, add_key=True)


# DuckDB type -> the role README's type table gives (numeric: float32 feature; categorical:
# string lookup). Written out here as the oracle, not derived from the code under test.
TYPED_COLUMNS = {
    "t_tinyint": ("TINYINT", "numeric"),
    "t_smallint": ("SMALLINT", "numeric"),
    "t_integer": ("INTEGER", "numeric"),
    "t_bigint": ("BIGINT", "numeric"),
    "t_ubigint": ("UBIGINT", "numeric"),
    "t_float": ("FLOAT", "numeric"),
    "t_double": ("DOUBLE", "numeric"),
    "t_decimal": ("DECIMAL(10,2)", "numeric"),
    "t_boolean": ("BOOLEAN", "numeric"),
    "t_date": ("DATE", "numeric"),
    "t_timestamp": ("TIMESTAMP", "numeric"),
    "t_timestamptz": ("TIMESTAMPTZ", "numeric"),
    "t_varchar": ("VARCHAR", "categorical"),
}


@pytest.fixture(scope="module")
def typed_uri(tmp_path_factory):
    db = tmp_path_factory.mktemp("typed") / "typed.duckdb"
    columns = ", ".join(f"{name} {kind}" for name, (kind, _) in TYPED_COLUMNS.items())
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"CREATE TABLE t (id VARCHAR, y VARCHAR, {columns}, t_blob BLOB, t_list INTEGER[])"
        )
        con.execute("CREATE SCHEMA s")
        con.execute("CREATE TABLE s.u AS SELECT 'k' AS id, 1 AS y, 2.5 AS x")
    return duckdb_uri(db, "t")


def test_duckdb_types_get_the_roles_of_the_schema_contract(typed_uri):
    features = list(reversed(TYPED_COLUMNS))  # order as listed, not as in the table
    spec = feature_spec(typed_uri, "y", "id", features)
    assert (spec.label, spec.key) == ("y", "id")
    assert spec.numeric == tuple(c for c in features if TYPED_COLUMNS[c][1] == "numeric")
    assert spec.categorical == ("t_varchar",)


@pytest.mark.parametrize("column", ["t_blob", "t_list"])
def test_unsupported_types_are_named(typed_uri, column):
    with pytest.raises(SchemaError, match=rf"column '{column}' has unsupported type"):
        feature_spec(typed_uri, "y", "id", ["t_double", column])


def test_without_features_the_spec_names_only_label_and_key(typed_uri):
    spec = feature_spec(typed_uri, "y", "id")
    assert (spec.label, spec.key, spec.numeric, spec.categorical) == ("y", "id", (), ())


def test_missing_columns_tables_and_files_are_named(typed_uri, tmp_path):
    with pytest.raises(SchemaError, match=r"no column 't_doubel'; did you mean 't_double'"):
        feature_spec(typed_uri, "y", "id", ["t_doubel"])
    with pytest.raises(SchemaError, match=r"no column 'lable'"):
        feature_spec(typed_uri, "lable", "id")
    path, _ = parse_duckdb_uri(typed_uri)
    with pytest.raises(PipelineInputError, match=r"table .*:nope does not exist"):
        feature_spec(duckdb_uri(path, "nope"), "y", "id")
    with pytest.raises(PipelineInputError, match=r"DuckDB file .*none.duckdb does not exist"):
        feature_spec(duckdb_uri(tmp_path / "none.duckdb", "t"), "y", "id")


def test_resolve_a_duckdb_source_in_both_table_forms(typed_uri):
    path, _ = parse_duckdb_uri(typed_uri)
    plain = resolve_source(f"duckdb://{path}?table=t", "/nonexistent", label="y", key="id")
    assert plain.uri == typed_uri and plain.description == f"duckdb://{path}?table=t"
    qualified = resolve_source(
        f"duckdb://{path}?table=s.u", "/nonexistent", label="y", key="id", features=["x"]
    )
    assert parse_duckdb_uri(qualified.uri).table.dataset == "s"
    assert qualified.spec.numeric == ("x",)


def test_resolve_a_csv_source_imports_it_with_a_row_key(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text("amount,city,churned\n1.5,paris,yes\n2.0,,no\n")
    source = resolve_source(str(csv), tmp_path, label="churned", features=["amount", "city"])
    assert source.uri == duckdb_uri(tmp_path / SOURCE_DB, SOURCE_TABLE)
    assert (source.spec.key, source.spec.numeric, source.spec.categorical) == (
        ROW_KEY,
        ("amount",),
        ("city",),
    )
    keyed = resolve_source(f"file://{csv}", tmp_path, label="churned", key="amount")
    assert keyed.spec.key == "amount"
    assert ROW_KEY not in [r[0] for r in rows_of(tmp_path / SOURCE_DB, "DESCRIBE source")]


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("s3://bucket/data.csv", {"label": "y"}, "unknown --source 's3://bucket/data.csv'"),
        ("table.xlsx", {"label": "y"}, "unknown --source 'table.xlsx'"),
        ("duckdb:///x.db?table=t", {"label": "y"}, "--key is required with a DuckDB --source"),
        ("duckdb://x.db?table=t", {"label": "y", "key": "k"}, "the path must be absolute"),
        ("data.csv", {"label": None}, "--label is required with --source"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_written(tmp_path, source, options, message):
    with pytest.raises(PipelineInputError, match=message.replace("?", r"\?")):
        resolve_source(source, tmp_path, **options)
    assert list(tmp_path.iterdir()) == []


def test_demo_source_writes_the_demo_table_and_applies_overrides(tmp_path):
    demo = demo_source(tmp_path, 50, seed=3)
    assert demo.spec == DEMO_SPEC and demo.description == "demo data (50 rows)"
    path, ref = parse_duckdb_uri(demo.uri)
    assert rows_of(path, f"SELECT count(*) FROM {ref.duckdb}") == [(50,)]
    chosen = demo_source(tmp_path, 50, seed=3, features=["x1", "color"])
    assert (chosen.spec.numeric, chosen.spec.categorical) == (("x1",), ("color",))
    with pytest.raises(PipelineInputError, match="--rows must be > 0, got 0"):
        demo_source(tmp_path, 0, seed=3)
