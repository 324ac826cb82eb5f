"""Keys and id-like columns (issue 11 case 8): warnings with counts, NULL keys spread, ids left out."""

import logging

import duckdb
import pytest

from vertex_imbalanced.config import FeatureSpec, ImbalanceConfig
from vertex_imbalanced.errors import SchemaError
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri, parse_duckdb_uri
from vertex_imbalanced.warehouse.data_checks import ID_LIKE_MIN_ROWS
from vertex_imbalanced.warehouse.local_import import (
    DataRequest,
    check_source,
    describe_roles,
    stage_source,
)
from vertex_imbalanced.warehouse.prepare import prepare_data

NONE = ImbalanceConfig(mode="none")  # every train row kept: the split tables hold all rows


def make(tmp_path, select: str, name="src.db"):
    path = tmp_path / name
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE t AS {select}")
    return path, duckdb_uri(path, "t")


def rows_of(uri: str, sql: str) -> list[tuple]:
    path, ref = parse_duckdb_uri(uri)
    with duckdb.connect(path, read_only=True) as con:
        return con.execute(sql.replace("{t}", ref.duckdb)).fetchall()


# The numbers: 9,409 distinct keys over 26,217 rows.
GROUPED = (
    "SELECT 'c' || (range % 9409) AS customer, range % 2 AS y, range % 13 AS n_items, "
    "(range * 7919 % 1000) / 10.0 AS amount FROM range(26217)"
)


def test_a_key_that_is_not_unique_is_a_group_split_with_a_warning_and_counts(tmp_path, caplog):
    _, uri = make(tmp_path, GROUPED)
    with caplog.at_level(logging.WARNING):
        prepared = prepare_data(
            uri,
            FeatureSpec(label="y", key="customer"),
            output_prefix="g",
            imbalance=NONE,
            feature_statistics=False,
        )
    key = prepared.data_checks["key"]
    assert (key["row_count"], key["distinct_keys"], key["null_keys"]) == (26217, 9409, 0)
    assert key["shared_key_rows"] == 26217  # every customer has 2 or 3 rows
    assert (key["example_key"], key["example_rows"]) == ("c0", 3)
    [line] = prepared.data_checks["warnings"]
    assert "key column 'customer' of t is not unique: 9,409 distinct values over 26,217 " in line
    assert "(a group split)" in line
    assert line in caplog.text
    # each customer is in exactly one split
    seen = {}
    for split in ("train", "validation", "test"):
        for (customer,) in rows_of(prepared.uri(split), "SELECT DISTINCT customer FROM {t}"):
            assert seen.setdefault(customer, split) == split
    assert len(seen) == 9409


# 20 % NULL keys (611 of 3,055 rows); rows 0-9 are also exact duplicates of rows 10-19.
NULL_KEYS = (
    "SELECT CASE WHEN range % 5 = 0 THEN NULL ELSE 'k' || range END AS id, "
    "(range % 20) % 2 AS y, (range % 20) * 1.5 + (range // 20) * 0.001 AS x, "
    "CASE WHEN range < 20 THEN 'dup' ELSE 'r' || range END AS note FROM range(3055)"
)


def test_null_keys_spread_over_the_splits_deterministically_with_a_warning(tmp_path):
    _, uri = make(tmp_path, NULL_KEYS)
    spec = FeatureSpec(label="y", key="id", numeric=("x",), categorical=("note",))
    first = prepare_data(uri, spec, output_prefix="a", imbalance=NONE, feature_statistics=False)
    key = first.data_checks["key"]
    assert (key["null_keys"], key["row_count"], key["shared_key_rows"]) == (611, 3055, 0)
    spread = key["null_keys_by_split"]
    assert sum(spread.values()) == 611
    # binomial(611, 0.1): 61 expected in validation and test; before, all 611 were in train
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        expected = 611 * share
        assert abs(spread[split] - expected) < 4 * (expected * (1 - share)) ** 0.5, spread
    for split, n in spread.items():  # the tables hold them
        assert rows_of(first.uri(split), "SELECT count(*) FROM {t} WHERE id IS NULL") == [(n,)]
    [line] = first.data_checks["warnings"]
    assert "key column 'id' of t is NULL in 611 of 3,055 rows (20.0 %)" in line
    assert f"train {spread['train']}, validation {spread['validation']}" in line
    again = prepare_data(uri, spec, output_prefix="b", imbalance=NONE, feature_statistics=False)
    assert again.data_checks["key"] == key
    for split in ("train", "validation", "test"):
        sql = "SELECT x, note FROM {t} WHERE id IS NULL ORDER BY 1, 2"
        assert rows_of(first.uri(split), sql) == rows_of(again.uri(split), sql)


def test_exact_duplicate_rows_without_a_key_stay_in_one_split(tmp_path):
    _, uri = make(
        tmp_path,
        "SELECT NULL::VARCHAR AS id, range % 2 AS y, (range % 40) * 1.0 AS x FROM range(4000)",
    )
    prepared = prepare_data(
        uri,
        FeatureSpec(label="y", key="id", numeric=("x",)),
        output_prefix="d",
        imbalance=NONE,
        feature_statistics=False,
    )
    where = {}
    for split in ("train", "validation", "test"):
        for (x,) in rows_of(prepared.uri(split), "SELECT DISTINCT x FROM {t}"):
            assert where.setdefault(x, split) == split  # 100 copies of each row, one split
    assert len(where) == 40


ID_TABLE = (
    "SELECT 'k' || range AS key, range % 3 = 0 AS y, range + 1000 AS customer_id, "
    "md5(range::VARCHAR) AS uuid, range * 0.37 AS amount, range % 9 AS n_items, "
    "['a', 'b', 'c'][range % 3 + 1] AS color FROM range(1000)"
)


def test_id_like_columns_are_left_out_of_inferred_features_and_recorded(tmp_path, caplog):
    _, uri = make(tmp_path, ID_TABLE)
    with caplog.at_level(logging.WARNING):
        prepared = prepare_data(
            uri, FeatureSpec(label="y", key="key"), output_prefix="i", feature_statistics=False
        )
    spec = prepared.spec
    assert spec.numeric == ("amount", "n_items")  # FLOAT64 is never id-like
    assert spec.categorical == ("color",)
    assert spec.ignored == ("customer_id", "uuid")
    train_rows = sum(prepared.split_counts["train"].values())
    assert prepared.data_checks["id_like"] == {"customer_id": train_rows, "uuid": train_rows}
    lines = prepared.data_checks["warnings"]
    assert lines[0].startswith(
        f"column 'customer_id' (INT64) looks like a row id: it has a different value in each "
        f"of the {train_rows:,} train rows, so it is left out of the features"
    )
    assert "column 'uuid' (STRING) looks like a row id" in lines[1]
    assert all(line in caplog.text for line in lines)


def test_an_explicit_feature_list_keeps_an_id_like_column(tmp_path):
    _, uri = make(tmp_path, ID_TABLE)
    spec = FeatureSpec(label="y", key="key", numeric=("customer_id", "amount"))
    prepared = prepare_data(uri, spec, output_prefix="e", feature_statistics=False)
    assert prepared.spec.numeric == ("customer_id", "amount")
    assert prepared.data_checks["id_like"] == {} and prepared.data_checks["warnings"] == []


def test_small_tables_and_only_id_like_features(tmp_path):
    small = ID_TABLE.replace("range(1000)", f"range({ID_LIKE_MIN_ROWS})")
    _, uri = make(tmp_path, small)
    prepared = prepare_data(
        uri, FeatureSpec(label="y", key="key"), output_prefix="s", feature_statistics=False
    )
    assert "customer_id" in prepared.spec.numeric  # too few train rows to call anything an id
    _, uri = make(
        tmp_path, "SELECT 'k' || range AS key, range % 2 AS y, range AS n FROM range(500)", "o.db"
    )
    with pytest.raises(SchemaError, match=r"every feature column looks like a row id \('n'\)"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="o")


def local_check(tmp_path, source, **request):
    staged = stage_source(source, tmp_path, key=request["key"], label=request["label"])
    try:
        return check_source(staged, DataRequest(**request))
    finally:
        staged.discard()


def test_run_local_input_check_says_which_columns_look_like_ids_and_warns_on_keys(tmp_path):
    _, uri = make(tmp_path, ID_TABLE)
    checked = local_check(tmp_path, uri, label="y", key="key")
    assert checked.problems == ()
    assert checked.spec.ignored == ("customer_id", "uuid")
    assert set(checked.id_like) == {"customer_id", "uuid"}
    roles = describe_roles(checked.spec, checked.types, checked.id_like)
    assert "ignored: customer_id (looks like a row id)" in roles
    assert any("'customer_id' (INT64) looks like a row id" in w for w in checked.warnings)
    # a role given in a feature config overrides the detection
    kept = local_check(tmp_path, uri, label="y", key="key", numeric=("customer_id",))
    assert kept.spec.numeric == ("customer_id",) and kept.id_like == {}
    _, uri = make(tmp_path, NULL_KEYS, "n.db")
    warned = local_check(tmp_path, uri, label="y", key="id")
    assert any("is NULL in 611 of 3,055 rows (20.0 %)" in w for w in warned.warnings)


# Case 2 for typed tables: a STRING column of amounts with R's and pandas' markers among them.
TEXT_NUMBERS = (
    "SELECT 'k' || range AS key, range % 2 AS y, "
    "CASE WHEN range % 20 = 0 THEN 'NA' WHEN range % 20 = 1 THEN 'N/A' "
    "ELSE CAST(range % 997 AS VARCHAR) END AS income, ['a', 'b'][range % 2 + 1] AS color "
    "FROM range(2000)"
)


def test_text_columns_of_numbers_in_a_table_are_named_with_their_markers_not_rewritten(tmp_path):
    _, uri = make(tmp_path, TEXT_NUMBERS)
    spec = FeatureSpec(label="y", key="key", na_values=("NA", "N/A", "?"))
    prepared = prepare_data(uri, spec, output_prefix="t", feature_statistics=False)
    train = sum(prepared.split_counts["train"].values())
    [line] = prepared.data_checks["warnings"]
    markers = rows_of(
        prepared.uri("train"), "SELECT count(*) FROM {t} WHERE income IN ('NA', 'N/A')"
    )
    assert line.startswith(
        f"column 'income' is STRING but {train - markers[0][0]:,} of its {train:,} values in the "
        "train split are numbers"
    )
    assert f"; {markers[0][0]:,} values are missing-value markers (NA, N/A, ?)" in line
    assert "SAFE_CAST(NULLIF(`income`, 'NA') AS FLOAT64)" in line
    assert markers[0][0] > 0  # the markers are still values: nothing was rewritten
    assert prepared.spec.categorical == ("income", "color")
    explicit = FeatureSpec(label="y", key="key", categorical=("income", "color"))
    quiet = prepare_data(uri, explicit, output_prefix="q", feature_statistics=False)
    assert quiet.data_checks["warnings"] == []
