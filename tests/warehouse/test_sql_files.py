"""Every sql/ file rendered, transpiled and run on DuckDB."""

from importlib import resources
from pathlib import Path

import pytest

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.engines import (
    DuckDBWarehouse,
    check_split_key,
    load_sql,
    render,
)
from vertex_imbalanced.warehouse.identifiers import TableRef

ROWS = 20_000
BOUNDS = {"train": (0, 7000), "validation": (7000, 8500), "test": (8500, 10_000)}
SQL_FILES = sorted(p.name for p in resources.files("sql").iterdir() if p.name.endswith(".sql"))


@pytest.fixture()
def wh(tmp_path):
    with DuckDBWarehouse(tmp_path / "sql.db") as warehouse:
        warehouse.con.execute(
            f"CREATE TABLE src AS SELECT 'k' || range AS key, CAST(range % 3 AS BIGINT) AS label, "
            f"range * 0.5 AS x FROM range({ROWS})"
        )
        yield warehouse


def _split(wh, split, table="src"):
    lo, hi = BOUNDS[split]
    sql = render(load_sql("split"), tables={"source": table}, columns={"key": "key"})
    return wh.query(sql, {"bucket_lo": lo, "bucket_hi": hi})


def _downsample(wh, rates, weights, bounds=BOUNDS["train"]):
    sql = render(
        load_sql("downsample"),
        tables={"source": "src"},
        columns={"key": "key", "label": "label", "weight": "sample_weight"},
    )
    names = sorted(rates)
    params = {
        "bucket_lo": bounds[0],
        "bucket_hi": bounds[1],
        "class_names": names,
        "keep_rates": [rates[c] for c in names],
        "class_weights": [weights[c] for c in names],
        "keep_salt": "keep:",
    }
    return wh.query(sql, params)


# SQL files exercised by other tests: file -> (tests folder, the function running it, which a
# test there must call).
COVERED_ELSEWHERE = {
    "feature_frequencies.sql": ("monitoring", "table_statistics"),
    "feature_histogram.sql": ("monitoring", "table_statistics"),
    "feature_quantiles.sql": ("monitoring", "table_statistics"),
    "prediction_distribution.sql": ("monitoring", "run_monitoring"),
    "statistics_store_latest.sql": ("monitoring", "StatisticsStore"),
    "statistics_store_row.sql": ("monitoring", "StatisticsStore"),
    # prepare_data(label_policy="skip") runs it on DuckDB and the BigQuery fake
    "split_labelled.sql": ("warehouse", "label_policy"),
    # the key's uniqueness, read by prepare_data and run_local's input check
    "key_stats.sql": ("warehouse", "key_stats"),
    # the optional prior-adjusted column of batch prediction, on DuckDB and the BigQuery fake
    "adjusted_probabilities.sql": ("batch_prediction", "adjusted_sql"),
}


def test_every_sql_file_is_exercised():
    here = {"class_stats.sql", "downsample.sql", "split.sql", "weighted_class_stats.sql"}
    assert set(SQL_FILES) == here | set(COVERED_ELSEWHERE)
    for name, (folder, word) in COVERED_ELSEWHERE.items():
        tests = Path(__file__).parents[1] / folder
        text = "".join(p.read_text() for p in tests.glob("test_*.py"))
        assert word in text, f"{name}: no test in tests/{folder} mentions {word!r}"


def test_split_sizes_match_ratios_and_splits_are_disjoint_and_complete(wh):
    keys = {s: _split(wh, s).column("key").to_pylist() for s in BOUNDS}
    for split, (lo, hi) in BOUNDS.items():
        expected = ROWS * (hi - lo) / 10_000
        assert abs(len(keys[split]) - expected) < 4 * expected**0.5, split
    union = set().union(*keys.values())
    assert len(union) == ROWS == sum(len(k) for k in keys.values())


def test_split_is_deterministic_across_connections(tmp_path, wh):
    first = sorted(_split(wh, "validation").column("key").to_pylist())
    wh.close()
    with DuckDBWarehouse(tmp_path / "sql.db") as again:
        assert sorted(_split(again, "validation").column("key").to_pylist()) == first


def test_split_keeps_all_source_columns(wh):
    assert _split(wh, "test").schema.names == ["key", "label", "x"]


def test_class_stats_count_each_split_and_null_labels(wh):
    wh.con.execute("UPDATE src SET label = NULL WHERE x < 50")  # 100 rows
    sql = render(
        load_sql("class_stats"),
        tables={"source": "src"},
        columns={"key": "key", "label": "label"},
    )
    rows = wh.query(sql, {"train_end": 7000, "validation_end": 8500}).to_pylist()
    assert sum(r["row_count"] for r in rows) == ROWS
    assert sum(r["row_count"] for r in rows if r["label_value"] is None) == 100
    null_examples = {r["example_key"] for r in rows if r["label_value"] is None}
    assert all(int(k[1:]) < 100 for k in null_examples)
    for split in BOUNDS:
        table = _split(wh, split)
        stats = {r["label_value"]: r["row_count"] for r in rows if r["split"] == split}
        assert sum(stats.values()) == table.num_rows
        assert stats["1"] == table.column("label").to_pylist().count(1)


def test_downsample_keeps_rate_share_with_weights_and_only_train_rows(wh):
    rates = {"0": 0.25, "1": 1.0, "2": 0.5}
    weights = {"0": 4.0, "1": 1.0, "2": 2.0}
    out = _downsample(wh, rates, weights)
    assert out.schema.names == ["key", "label", "x", "sample_weight"]
    assert str(out.schema.field("sample_weight").type) == "double"
    train = _split(wh, "train")
    assert set(out.column("key").to_pylist()) <= set(train.column("key").to_pylist())
    labels = train.column("label").to_pylist()
    kept = out.column("label").to_pylist()
    for cls, rate in rates.items():
        n = labels.count(int(cls))
        k = kept.count(int(cls))
        assert abs(k - rate * n) <= 4 * (n * rate * (1 - rate)) ** 0.5 + 1e-9, cls
        ws = {
            w
            for w, lab in zip(out.column("sample_weight").to_pylist(), kept, strict=True)
            if lab == int(cls)
        }
        assert ws == {weights[cls]}
    assert (
        _downsample(wh, rates, weights).column("key").to_pylist() == out.column("key").to_pylist()
    )


def test_downsample_hash_is_independent_of_the_split_hash(wh):
    # Keep rate 0.5 on a single bucket range: if keeping reused the split hash, whole bucket
    # ranges would be kept or dropped together; with a salted hash about half of each survives.
    half = {"0": 0.5, "1": 0.5, "2": 0.5}
    ones = dict.fromkeys(half, 1.0)
    for bounds in [(0, 2000), (2000, 4000), (4000, 10_000)]:
        n = _downsample(wh, dict.fromkeys(half, 1.0), ones, bounds).num_rows
        k = _downsample(wh, half, ones, bounds).num_rows
        assert abs(k - n / 2) < 4 * (n / 4) ** 0.5


def test_weighted_class_stats_sums_rows_and_weights(wh):
    wh.create_table(
        TableRef.parse("w"),
        "SELECT 'a' AS lab, 2.0 AS wt UNION ALL SELECT 'a', 3.0 UNION ALL SELECT 'b', 1.5",
        {},
    )
    sql = render(
        load_sql("weighted_class_stats"),
        tables={"table": "w"},
        columns={"label": "lab", "weight": "wt"},
    )
    rows = {
        r["label_value"]: (r["row_count"], r["weight_sum"]) for r in wh.query(sql, {}).to_pylist()
    }
    assert rows == {"a": (2, 5.0), "b": (1, 1.5)}


@pytest.mark.parametrize(
    "bad", ["x; DROP TABLE src", "key`; DROP TABLE src; --", "key') OR (1", 'key"']
)
def test_injection_is_rejected_before_any_sql_runs(wh, bad):
    with pytest.raises(PipelineInputError):
        render(load_sql("split"), tables={"source": "src"}, columns={"key": bad})
    with pytest.raises(PipelineInputError):
        render(load_sql("split"), tables={"source": "src; DROP TABLE src"}, columns={"key": "key"})
    assert wh.con.execute("SELECT count(*) FROM src").fetchall() == [(ROWS,)]


# --- key text parity (issue 13 item 12) --------------------------------------------------------
# Values from BigQuery's documentation: CAST(FLOAT64 AS STRING) "Returns an approximate string
# representation"; CAST(TIMESTAMP '2008-12-25 15:30:00+00' AS STRING) is '2008-12-25 15:30:00+00'
# (UTC); NUMERIC 1.5 is '1.5'; DATE text is YYYY-MM-DD; BOOL text is "true"/"false".
REFUSED_KEYS = {
    "DOUBLE": ("1.0", "floating point"),
    "FLOAT": ("0.1", "floating point"),
    "DECIMAL(38, 9)": ("1.5", "decimal"),
    "TIMESTAMPTZ": ("'2008-12-25 15:30:00+00'", "timestamp"),
    "TIMESTAMP": ("'2008-12-25 15:30:00'", "timestamp"),
    "BLOB": ("'\\xC2\\xA9'", "binary"),
}
ACCEPTED_KEYS = {  # DuckDB type, value, BigQuery's documented text of the value
    "BIGINT": ("-9223372036854775808", "-9223372036854775808"),
    "INTEGER": ("42", "42"),
    "VARCHAR": ("'k 1'", "k 1"),
    "DATE": ("'2008-12-25'", "2008-12-25"),
    "BOOLEAN": ("true", "true"),
}


def _key_table(wh, duck_type, value):
    wh.con.execute(f"CREATE OR REPLACE TABLE keys AS SELECT CAST({value} AS {duck_type}) AS k")
    return wh.table_schema(TableRef.parse("keys"))


@pytest.mark.parametrize("duck_type", sorted(REFUSED_KEYS))
def test_keys_without_one_text_on_both_engines_are_refused(wh, duck_type):
    value, kind = REFUSED_KEYS[duck_type]
    schema = _key_table(wh, duck_type, value)
    with pytest.raises(SchemaError) as caught:
        check_split_key(schema, "k", "main.keys")
    message = str(caught.value)
    assert "\n" not in message
    assert f"key column 'k' of main.keys has type {schema.field('k').type} ({kind})" in message
    assert "use an INT64 or STRING key column" in message


@pytest.mark.parametrize("duck_type", sorted(ACCEPTED_KEYS))
def test_accepted_keys_have_bigquerys_documented_text_on_duckdb(wh, duck_type):
    value, documented = ACCEPTED_KEYS[duck_type]
    schema = _key_table(wh, duck_type, value)
    check_split_key(schema, "k", "main.keys")  # accepted
    text = wh.query("SELECT CAST(k AS STRING) AS t FROM keys", {}).column("t").to_pylist()
    assert text == [documented]


def test_refused_types_really_differ_from_bigquerys_documented_text(wh):
    """Why they are refused: DuckDB's text of the documented values is not BigQuery's."""
    wh.con.execute("SET TimeZone = 'America/Los_Angeles'")
    cases = {
        "CAST(1.0 AS FLOAT64)": "1",  # BigQuery's text per the measurement
        "CAST(1.5 AS NUMERIC)": "1.5",
        "TIMESTAMP '2008-12-25 15:30:00+00'": "2008-12-25 15:30:00+00",
    }
    for expr, bigquery_text in cases.items():
        sql = f"SELECT CAST({expr} AS STRING) AS t"
        assert wh.query(sql, {}).column("t")[0].as_py() != bigquery_text, expr
