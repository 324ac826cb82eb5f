"""BigQuery's flexible column names: the rule, and SQL that quotes them right on both engines.

The oracle is BigQuery's documentation ("Specify a schema" > "Column names" and "Flexible
column names"): the characters it lists as supported and unsupported, the 300-character limit,
the reserved prefixes, and duplicate names that differ only in case.
"""

import collections

import duckdb
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.sources.base import shard_restriction
from vertex_imbalanced.reading.sources.duckdb_source import DuckDBSource
from vertex_imbalanced.warehouse.engines import DuckDBWarehouse, render, to_duckdb
from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint
from vertex_imbalanced.warehouse.identifiers import (
    RESERVED_COLUMN_PREFIXES,
    check_column_names,
    suggest_column_name,
    validate_column,
)

# One name per kind of character the documentation lists as supported.
DOCUMENTED_VALID = [
    "name-列",  # the documentation's own Storage Write API examples
    "description-列",
    "Column1",
    "größe",  # \p{L}: any letter in any language
    "日本語",
    "Ünïcödé",
    "e\u0301t\u0301e\u0301",  # \p{M}: combining accents
    "1st",  # flexible names may start with a number
    "x٣",  # \p{N}: any numeric character (Arabic-Indic three)
    "a\u203fb",  # \p{Pc}: connector punctuation (undertie)
    "_score",
    "a—b",  # \p{Pd}: em dash
    "my-feature",
    "my feature",  # whitespace
    "a&b",
    "50%",
    "a=b",
    "a+b",
    "ratio:x",
    "it's",
    "a<b>",
    "#items",
    "a|b",
    "from",  # keywords are fine as quoted identifiers
    "x" * 300,
]

# Every character the documentation lists as unsupported.
DOCUMENTED_INVALID_CHARS = list('!"$()*,./;?@[\\]^`{}~')


@pytest.mark.parametrize("name", DOCUMENTED_VALID)
def test_names_bigquery_documents_as_valid_are_accepted(name):
    assert validate_column(name) == name


@pytest.mark.parametrize("char", DOCUMENTED_INVALID_CHARS)
def test_characters_bigquery_refuses_are_refused_naming_the_column_and_a_fix(char):
    name = f"a{char}b"
    with pytest.raises(PipelineInputError) as err:
        validate_column(name)
    message = str(err.value)
    assert f"invalid column name {name!r}" in message
    assert repr(char) in message
    fix = suggest_column_name(name)
    assert f"rename the column, e.g. to {fix!r}" in message
    assert validate_column(fix) == fix == "a_b"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 301,
        "a\tb",  # control characters (tab, line break) are not "whitespace" we accept
        "a\nb",
        *RESERVED_COLUMN_PREFIXES,
        "_table_suffix",  # prefixes compare like BigQuery's names: ignoring case
        "_PARTITIONTIME",
        "_partitiondate",
        "__root__x",
        "_field_1",  # accepted by BigQuery, but renamed in every query result
    ],
)
def test_names_bigquery_refuses_or_renames_are_refused(name):
    with pytest.raises(PipelineInputError, match="invalid column name"):
        validate_column(name)


def test_suggestions_are_valid_and_readable():
    assert suggest_column_name("sepal length (cm)") == "sepal length cm"
    assert suggest_column_name("a.b.c") == "a_b_c"
    assert suggest_column_name("_TABLE_x") == "c_TABLE_x"
    assert suggest_column_name("$$$") == "column"
    for name in ["sepal length (cm)", "(x)", "a\tb", "_field_1", "x" * 400, "@@a b!!"]:
        assert validate_column(suggest_column_name(name))


def test_names_equal_ignoring_case_are_reported_together_with_bad_names():
    problems = check_column_names(["Column1", "column1", "a.b", "ok"], "t")
    assert len(problems) == 2
    assert "'Column1' and 'column1' differ only in case" in problems[0]
    assert "invalid column name 'a.b'" in problems[1]
    assert check_column_names(DOCUMENTED_VALID, "t") == []


def test_feature_spec_takes_flexible_names_and_refuses_case_twins():
    spec = FeatureSpec(label="churn flag", numeric=("my feature", "größe"), key="row id")
    assert spec.read_columns == ("my feature", "größe", "churn flag", "row id")
    with pytest.raises(PipelineInputError, match=r"'Größe' and 'größe' differ only in case"):
        FeatureSpec(label="y", numeric=("Größe", "größe"))
    with pytest.raises(PipelineInputError, match=r"invalid column name 'x\(cm\)'"):
        FeatureSpec(label="y", numeric=("x(cm)",))


# Names that stress SQL quoting: quotes of the other style, comment markers, parameter-like and
# placeholder-like text, non-ASCII, a leading digit.
SQL_NAMES = ["my feature", "it's", "a--b", "#x", "x:y", "50%", "a<>b|c", "größe", "1st", "from"]


def test_rendered_sql_quotes_every_flexible_name_and_runs_on_duckdb(tmp_path):
    columns = {f"c{i}": name for i, name in enumerate(SQL_NAMES)}
    table = pa.table(
        {name: pa.array([i, i + 1, None], pa.int64()) for i, name in enumerate(SQL_NAMES)}
    )
    selects = ", ".join(f"CAST(src.{{{p}}} AS STRING) AS {{{p}}}" for p in columns)
    sql = render(
        f"SELECT {selects} FROM {{source}} AS src WHERE src.{{c0}} IS NOT NULL AND @v = 'x--'",
        tables={"source": "t"},
        columns=columns,
    )
    assert "`it's`" in sql and "`a--b`" in sql
    duck = to_duckdb(sql)
    assert '"it\'s"' in duck and '"a--b"' in duck and "$v = 'x--'" in duck
    with DuckDBWarehouse(tmp_path / "w.db") as wh:
        wh.con.register("rows", table)
        wh.con.execute('CREATE TABLE "t" AS SELECT * FROM rows')
        result = wh.query(sql, {"v": "x--"})
    assert result.column_names == SQL_NAMES
    assert result.to_pylist()[0] == {name: str(i) for i, name in enumerate(SQL_NAMES)}
    assert result.num_rows == 2


def test_shard_restriction_and_the_duckdb_reader_take_flexible_names(tmp_path):
    key = "row id größe"
    predicate = shard_restriction(key, 1, 3)
    assert predicate.startswith(f"ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(`{key}` AS STRING)")
    con = duckdb.connect()
    register_farm_fingerprint(con)
    con.register("t", pa.table({key: pa.array([*range(90), None], pa.int64())}))
    seen = collections.Counter()
    for index in range(3):
        sql = to_duckdb(f"SELECT `{key}` FROM t WHERE {shard_restriction(key, index, 3)}")
        seen.update(row[0] for row in con.sql(sql).fetchall())
    assert seen == collections.Counter([*range(90), None])
    db = tmp_path / "r.db"
    with duckdb.connect(str(db)) as w:
        w.execute('CREATE TABLE t ("it\'s" DOUBLE, "my feature" VARCHAR)')
        w.execute("INSERT INTO t VALUES (1.5, 'a'), (2.5, 'b')")
    source = DuckDBSource(db, "t", ["my feature", "it's"])
    batches = list(source.read_stream(0))
    assert batches[0].to_pydict() == {"my feature": ["a", "b"], "it's": [1.5, 2.5]}


def test_a_csv_with_flexible_names_is_checked_in_one_pass_and_prints_its_serving_names(tmp_path):
    from pipelines.local_input import serving_name_lines
    from vertex_imbalanced.warehouse.local_import import DataRequest, check_source, stage_source

    csv = tmp_path / "iris.csv"
    rows = [f"{i},{i % 7}.5,{i % 5},{i % 3}.25,{'ab'[i % 2]}" for i in range(60)]
    csv.write_text("row id,my feature,größe,sepal length (cm),species\n" + "\n".join(rows) + "\n")
    staged = stage_source(str(csv), tmp_path, key="row id", label="species")
    try:
        checked = check_source(staged, DataRequest(label="species", key="row id"))
        assert len(checked.problems) == 1
        assert "invalid column name 'sepal length (cm)'" in checked.problems[0]
        assert "e.g. to 'sepal length cm', or leave it out with --ignore" in checked.problems[0]
        fine = check_source(
            staged, DataRequest(label="species", key="row id", ignored=("sepal length (cm)",))
        )
    finally:
        staged.discard()
    assert fine.problems == () and fine.spec.numeric == ("my feature", "größe")
    assert serving_name_lines(fine.spec) == [
        "serving input: 'my feature' -> 'my_feature_ea938146' (the SavedModel signature's "
        "argument name)",
        "serving input: 'größe' -> 'groe_d353a267' (the SavedModel signature's argument name)",
    ]
