"""local_import: files and DuckDB tables into the run's work database, and the one-pass checks.

Issue 11 cases 2 (missing-value markers, numbers as text), 1 (BOOL/yes-no labels from CSV),
9 (every problem of the table at once, nothing left behind) and 10 (the user's DuckDB file is
only read: byte-identical after a run).
"""

import datetime
import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertex_imbalanced.config import DEFAULT_NA_VALUES
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri, parse_duckdb_uri
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC
from vertex_imbalanced.warehouse.local_import import (
    ROW_KEY,
    SOURCE_DB,
    SOURCE_TABLE,
    DataRequest,
    check_source,
    describe_roles,
    import_file,
    stage_demo,
    stage_source,
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", SOURCE_DB]


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


TYPED_VALUES = {
    "DATE": "DATE '2024-01-01' + CAST(range AS INTEGER)",
    "TIMESTAMP": "TIMESTAMP '2024-01-01' + to_seconds(range)",
    "TIMESTAMPTZ": "TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(range)",
    "BOOLEAN": "range % 3 = 0",
    "VARCHAR": "'v' || (range % 7)",
}


@pytest.fixture(scope="module")
def typed_uri(tmp_path_factory):
    db = tmp_path_factory.mktemp("typed") / "typed.duckdb"
    columns = ", ".join(
        f"CAST({TYPED_VALUES.get(kind, 'range % 100')} AS {kind}) AS {name}"
        for name, (kind, _) in TYPED_COLUMNS.items()
    )
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"CREATE TABLE t AS SELECT 'k' || range AS id, ['a', 'b', 'c'][range % 3 + 1] AS y, "
            f"{columns}, CAST('x' AS BLOB) AS t_blob, [range] AS t_list, "
            "CAST(NULL AS DOUBLE) AS t_empty FROM range(300)"
        )
        con.execute("CREATE SCHEMA s")
        con.execute("CREATE TABLE s.u AS SELECT 'k' || range AS id, range % 2 AS y, "
                    "range * 0.5 AS x FROM range(300)")  # fmt: skip
    return duckdb_uri(db, "t")


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(tmp_path, source, **request):
    """(staged, SourceCheck) of a source under a request; the staged copy is discarded."""
    request.setdefault("key", "id")
    staged = stage_source(source, tmp_path, key=request["key"], label=request.get("label"))
    try:
        return staged, check_source(staged, DataRequest(**request))
    finally:
        staged.discard()


def test_duckdb_types_get_the_roles_of_the_schema_contract(typed_uri, tmp_path):
    features = tuple(reversed(TYPED_COLUMNS))  # order as listed, not as in the table
    _, checked = check(tmp_path, typed_uri, label="y", features=features)
    assert checked.problems == ()
    spec = checked.spec
    assert (spec.label, spec.key, spec.classes) == ("y", "id", ("a", "b", "c"))
    assert spec.numeric == tuple(c for c in features if TYPED_COLUMNS[c][1] == "numeric")
    assert spec.categorical == ("t_varchar",)
    assert not list(tmp_path.iterdir())  # discarded: nothing left


def test_every_problem_of_the_table_is_listed_at_once(typed_uri, tmp_path):
    # Without --features every other column is a feature: the unusable ones are all named.
    _, checked = check(tmp_path, typed_uri, label="y", ignored=("t_doubel",))
    problems = "\n".join(checked.problems)
    assert checked.spec is None
    assert "--ignore: the table has no column 't_doubel'; did you mean 't_double'?" in problems
    assert "column 't_blob' has unsupported type BYTES" in problems
    assert "column 't_list' has unsupported type ARRAY" in problems
    assert "column 't_empty' is empty (NULL in all 300 rows); leave it out with --ignore t_empty" in problems  # fmt: skip
    assert len(checked.problems) == 4
    _, fixed = check(tmp_path, typed_uri, label="y", ignored=("t_blob", "t_list", "t_empty"))
    assert fixed.problems == () and fixed.spec.ignored == ("t_blob", "t_list", "t_empty")


def test_missing_label_key_and_features_are_all_named(typed_uri, tmp_path):
    _, checked = check(tmp_path, typed_uri, label="lable", key="idd", features=("t_doubel", "t_varchar"))  # fmt: skip
    assert [line.split(":")[0] for line in checked.problems] == ["--label", "--key", "--features"]
    assert "no column 'lable'" in checked.problems[0]
    assert "did you mean 'id'?" in checked.problems[1]
    assert "did you mean 't_double'?" in checked.problems[2]


def test_a_float_label_and_labels_outside_the_classes_are_named(typed_uri, tmp_path):
    _, checked = check(tmp_path, typed_uri, label="t_double", features=("t_varchar",))
    assert checked.problems == (
        "--label: column 't_double' is FLOAT64; labels must be text, integers or booleans",
    )
    _, checked = check(tmp_path, typed_uri, label="y", features=("t_varchar",), classes=("c", "a"))  # fmt: skip
    assert len(checked.problems) == 1
    assert "has value 'b' (100 row(s)" in checked.problems[0]
    assert "outside the declared classes ['c', 'a']" in checked.problems[0]
    assert "--label-policy skip" in checked.problems[0]
    _, skipped = check(tmp_path, typed_uri, label="y", features=("t_varchar",), classes=("c", "a"), label_policy="skip")  # fmt: skip
    assert skipped.problems == () and skipped.skipped == 100
    assert skipped.spec.label_policy == "skip" and skipped.spec.classes == ("c", "a")
    _, extra = check(tmp_path, typed_uri, label="y", features=("t_varchar",), classes=("a", "b", "c", "d"))  # fmt: skip
    assert extra.problems == ()
    assert extra.warnings == ("class 'd' has no training rows (0 rows in all)",)


def test_the_users_duckdb_file_is_only_read(typed_uri, tmp_path):
    path, _ = parse_duckdb_uri(typed_uri)
    before = sha256(Path(path))
    staged = stage_source(f"duckdb://{path}?table=s.u", tmp_path, key="id")
    uri = staged.commit()
    assert uri == duckdb_uri(tmp_path / SOURCE_DB, SOURCE_TABLE)
    assert rows_of(tmp_path / SOURCE_DB, "SELECT count(*), sum(x) FROM source") == [(300, 22425.0)]
    with duckdb.connect(str(tmp_path / SOURCE_DB)) as con:  # the run writes its splits here
        con.execute("CREATE TABLE r_train AS SELECT * FROM source")
    assert sha256(Path(path)) == before
    with pytest.raises(PipelineInputError, match=r"table s.nope does not exist in"):
        stage_source(f"duckdb://{path}?table=s.nope", tmp_path, key="id")
    assert sorted(p.name for p in tmp_path.iterdir()) == [SOURCE_DB]
    assert sha256(Path(path)) == before


# ----------------------------------------------------------------------------- CSV markers
MARKERS = [m for m in DEFAULT_NA_VALUES if m]


@pytest.mark.parametrize("marker", DEFAULT_NA_VALUES)
@pytest.mark.parametrize("quoted", [False, True])
def test_every_default_marker_reads_as_null_in_numeric_and_text_columns(tmp_path, marker, quoted):
    shown = f'"{marker}"' if quoted else marker
    csv = tmp_path / "m.csv"
    csv.write_text(
        "id,amount,city,label\n"
        + "".join(f"{i},{i}.5,c{i % 3},{'ab'[i % 2]}\n" for i in range(1, 40))
        + f"40,{shown},{shown},a\n"
    )
    import_file(csv, tmp_path, add_key=False)
    db = tmp_path / SOURCE_DB
    types = dict(rows_of(db, "SELECT column_name, data_type FROM information_schema.columns"))
    assert types["amount"] == "DOUBLE" and types["city"] == "VARCHAR"
    assert rows_of(db, "SELECT amount, city FROM source WHERE id = 40") == [(None, None)]
    assert rows_of(db, "SELECT count(amount), count(city) FROM source") == [(39, 39)]


def test_na_values_replace_the_default_list(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("id,amount,city\n1,1.5,NA\n2,?,x\n3,,y\n4,-,-\n")
    import_file(csv, tmp_path, add_key=False, na_values=("?", "-"))
    db = tmp_path / SOURCE_DB
    assert rows_of(db, "SELECT amount, city FROM source ORDER BY id") == [
        (1.5, "NA"),  # NA is no longer a marker: kept as text
        (None, "x"),
        (None, "y"),  # the empty field always reads as missing
        (None, None),
    ]


def test_text_columns_holding_numbers_are_warned_about(tmp_path):
    # A ';'-separated CSV from a decimal-comma locale, and a numeric column with an unknown
    # missing marker '?': both import as text and would become categorical features.
    csv = tmp_path / "eu.csv"
    csv.write_text(
        "id;amount;income;city;label\n"
        + "".join(
            f"{i};{i},{i % 10};{'?' if i % 9 == 0 else i * 100};c{i % 4};{'ab'[i % 2]}\n"
            for i in range(1, 61)
        )
    )
    staged = stage_source(str(csv), tmp_path, key="id", label="label")
    checked = check_source(staged, DataRequest(label="label", key="id"))
    staged.discard()
    assert checked.problems == ()
    assert checked.spec.categorical == ("amount", "income", "city")
    amount, income = checked.warnings
    assert amount.startswith("column 'amount' is text but 60 of its 60 values are numbers with a decimal comma (e.g. '1,1')")  # fmt: skip
    assert income.startswith("column 'income' is text but 54 of its 60 values are numbers")
    assert "not numbers: '?' (6 rows)" in income and "--na-values" in income


@pytest.mark.parametrize(("yes", "no"), [("true", "false"), ("yes", "no"), ("Y", "N")])
def test_a_csv_yes_no_label_keeps_its_text_and_gets_sorted_classes(tmp_path, yes, no):
    csv = tmp_path / "b.csv"
    csv.write_text(
        "id,x,flag,is_fraud\n"
        + "".join(f"{i},{i * 0.5},{'true' if i % 2 else 'false'},{yes if i % 4 == 0 else no}\n" for i in range(200))
    )  # fmt: skip
    staged = stage_source(str(csv), tmp_path, key="id", label="is_fraud")
    checked = check_source(staged, DataRequest(label="is_fraud", key="id"))
    with staged.connect() as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns").fetchall())  # fmt: skip
    staged.discard()
    assert types["is_fraud"] == "VARCHAR" and types["flag"] == "BOOLEAN"  # only the label
    assert checked.spec.classes == tuple(sorted([yes, no]))
    assert checked.spec.numeric == ("x", "flag")
    assert (checked.types["flag"], checked.types["is_fraud"]) == ("BOOL", "STRING")


def test_a_typed_bool_label_gets_classes_false_true(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": list(range(100)), "x": [i * 0.1 for i in range(100)], "is_fraud": [i % 5 == 0 for i in range(100)]}), path)  # fmt: skip
    _, checked = check(tmp_path, str(path), label="is_fraud")
    assert checked.problems == () and checked.spec.classes == ("false", "true")


def test_demo_staging_and_roles(tmp_path):
    staged = stage_demo(tmp_path, 200, seed=3)
    checked = check_source(staged, DataRequest(label=DEMO_SPEC.label, key=DEMO_SPEC.key))
    uri = staged.commit()
    assert staged.description == "demo data (200 rows)"
    assert (checked.spec.numeric, checked.spec.categorical) == (DEMO_SPEC.numeric, DEMO_SPEC.categorical)  # fmt: skip
    assert checked.spec.classes == ("0", "1", "2")
    path, ref = parse_duckdb_uri(uri)
    assert rows_of(path, f"SELECT count(*) FROM {ref.duckdb}") == [(200,)]
    lines = describe_roles(checked.spec)
    assert lines[:2] == [f"label: {DEMO_SPEC.label}", f"key: {DEMO_SPEC.key}"]
    assert [f"numeric: {c}" for c in DEMO_SPEC.numeric] == lines[2 : 2 + len(DEMO_SPEC.numeric)]
    typed = describe_roles(checked.spec, checked.types)
    assert typed[0] == f"label: {DEMO_SPEC.label} (INT64)"
    assert f"categorical: {DEMO_SPEC.categorical[0]} (STRING)" in typed
    with pytest.raises(PipelineInputError, match="--rows must be > 0, got 0"):
        stage_demo(tmp_path, 0, seed=3)


def test_the_runs_own_work_database_cannot_be_the_source(tmp_path):
    work = tmp_path / "out"
    work.mkdir()
    with duckdb.connect(str(work / SOURCE_DB)) as con:
        con.execute("CREATE TABLE source AS SELECT 1 AS id")
    before = sha256(work / SOURCE_DB)
    with pytest.raises(PipelineInputError, match="is the work database this run replaces"):
        stage_source(f"duckdb://{work / SOURCE_DB}?table=source", work, key="id")
    assert sha256(work / SOURCE_DB) == before


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://bucket/data.csv", "unknown --source 's3://bucket/data.csv'"),
        ("table.xlsx", "unknown --source 'table.xlsx'"),
        ("duckdb://x.db?table=t", "the path must be absolute"),
        ("duckdb:///nonexistent/x.db?table=t", "DuckDB file /nonexistent/x.db does not exist"),
        ("/nonexistent/data.csv", "source file '/nonexistent/data.csv' does not exist"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_written(tmp_path, source, message):
    with pytest.raises(PipelineInputError, match=message.replace("?", r"\?")):
        stage_source(source, tmp_path, key="k")
    assert list(tmp_path.iterdir()) == []
