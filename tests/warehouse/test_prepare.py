import duckdb
import pytest

from vertex_imbalanced.config import FeatureSpec, ImbalanceConfig
from vertex_imbalanced.errors import LabelError, PipelineInputError, SchemaError
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri
from vertex_imbalanced.reading.sources.open import open_source
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb
from vertex_imbalanced.warehouse.prepare import (
    PreparedData,
    prepare_data,
    split_boundaries,
    table_prefix,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("prep") / "demo.db"
    uri = write_demo_duckdb(path, rows=20_000, seed=7)
    return path, uri


def _tables(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return sorted(
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        )


def _make(tmp_path, sql, name="t"):
    path = tmp_path / "bad.db"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")
    return path, duckdb_uri(path, name)


def _rows(uri, columns):
    source = open_source(uri, columns)
    return [
        r for i in range(source.num_streams) for b in source.read_stream(i) for r in b.to_pylist()
    ]


def test_prepare_writes_three_tables_with_inferred_spec(demo):
    path, uri = demo
    prepared = prepare_data(uri, FeatureSpec(label="label", key="id"), output_prefix="run-42")
    assert prepared.train_uri == duckdb_uri(path, "run_42_train")
    assert prepared.classes == ("0", "1", "2")
    assert prepared.spec.numeric == DEMO_SPEC.numeric
    assert prepared.spec.categorical == DEMO_SPEC.categorical
    counts = prepared.split_counts
    assert sum(sum(c.values()) for c in counts.values()) == 20_000
    total_train = sum(counts["train"].values())
    assert abs(total_train - 16_000) < 400
    # validation and test keep the original distribution and have no weight column
    for split in ("validation", "test"):
        rows = _rows(prepared.uri(split), ["id", "label"])
        assert len(rows) == sum(counts[split].values())
        assert sum(r["label"] == 2 for r in rows) == counts[split]["2"]
        with pytest.raises(SchemaError, match="sample_weight"):
            open_source(prepared.uri(split), ["sample_weight"])
    train = _rows(prepared.train_uri, ["id", "label", "sample_weight"])
    assert len(train) == sum(prepared.imbalance["kept_counts"].values()) < total_train
    assert PreparedData.from_json(prepared.to_json()) == prepared


def test_rerun_gives_identical_tables(demo):
    _, uri = demo
    first = prepare_data(uri, DEMO_SPEC, output_prefix="again")
    ids = sorted(r["id"] for r in _rows(first.train_uri, ["id"]))
    second = prepare_data(uri, DEMO_SPEC, output_prefix="again")
    assert second == first
    assert sorted(r["id"] for r in _rows(second.train_uri, ["id"])) == ids


def test_string_labels_through_declared_classes(tmp_path):
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, CASE WHEN range % 10 = 0 THEN 'fraud' ELSE 'ok' END AS y, "
        "range * 1.0 AS x FROM range(3000)",
    )
    spec = FeatureSpec(label="y", key="key", classes=("ok", "fraud"))
    prepared = prepare_data(uri, spec, output_prefix="s", imbalance=ImbalanceConfig(max_ratio=2))
    assert prepared.classes == ("ok", "fraud")
    report = prepared.imbalance_report
    assert report.keep_rates["fraud"] == 1.0 and report.keep_rates["ok"] < 0.3
    assert set(_tables(path)) == {"t", "s_train", "s_validation", "s_test"}


# --- bad input: a clear error naming the problem, and nothing written ---------------------


def _assert_nothing_written(path, before):
    assert _tables(path) == before


def test_missing_table(demo):
    path, _ = demo
    before = _tables(path)
    with pytest.raises(PipelineInputError, match="table nope does not exist"):
        prepare_data(duckdb_uri(path, "nope"), DEMO_SPEC, output_prefix="x")
    _assert_nothing_written(path, before)


def test_missing_column_suggests_the_closest(demo):
    path, uri = demo
    before = _tables(path)
    spec = FeatureSpec(label="label", key="id", numeric=("x1", "x_3"))
    with pytest.raises(SchemaError, match=r"no column 'x_3'; did you mean 'x3'\?"):
        prepare_data(uri, spec, output_prefix="x")
    with pytest.raises(SchemaError, match=r"no column 'lable'; did you mean 'label'\?"):
        prepare_data(uri, FeatureSpec(label="lable", key="id"), output_prefix="x")
    _assert_nothing_written(path, before)


@pytest.mark.parametrize(
    ("column_sql", "type_name"),
    [("{'a': 1} AS s", "STRUCT"), ("[1, 2] AS s", "ARRAY")],
)
def test_unsupported_column_type_is_named(tmp_path, column_sql, type_name):
    path, uri = _make(
        tmp_path,
        f"SELECT 'k' || range AS key, range % 2 AS y, range AS x, {column_sql} FROM range(50)",
    )
    before = _tables(path)
    with pytest.raises(SchemaError, match=rf"'s'.*{type_name}"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")
    with pytest.raises(SchemaError, match=rf"'s'.*{type_name}"):
        prepare_data(uri, FeatureSpec(label="y", key="key", numeric=("x", "s")), output_prefix="x")
    # listed as ignored, the column is fine (copied, never read)
    prepare_data(uri, FeatureSpec(label="y", key="key", ignored=("s",)), output_prefix="ok")
    assert _tables(path) == sorted([*before, "ok_test", "ok_train", "ok_validation"])


def test_empty_table(tmp_path):
    path, uri = _make(tmp_path, "SELECT 'k' AS key, 1 AS y, 1.0 AS x LIMIT 0")
    with pytest.raises(PipelineInputError, match="table t is empty"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")
    assert _tables(path) == ["t"]


def test_null_labels_name_column_count_and_a_key(tmp_path):
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, CASE WHEN range IN (17, 40, 99) THEN NULL ELSE range % 2 END "
        "AS y, range * 1.0 AS x FROM range(500)",
    )
    with pytest.raises(
        LabelError, match=r"'y' of t has 3 NULL value\(s\), e.g. the row with key='k(17|40|99)'"
    ):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")
    assert _tables(path) == ["t"]


def test_labels_outside_declared_classes(tmp_path):
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, CASE WHEN range = 7 THEN 'maybe' WHEN range % 2 = 0 "
        "THEN 'yes' ELSE 'no' END AS y, range * 1.0 AS x FROM range(500)",
    )
    spec = FeatureSpec(label="y", key="key", classes=("no", "yes"))
    with pytest.raises(LabelError, match=r"value 'maybe' \(1 row\(s\), e.g. key='k7'\) outside"):
        prepare_data(uri, spec, output_prefix="x")
    assert _tables(path) == ["t"]


def test_integer_labels_without_classes_sort_numerically_and_num_classes_fixes_0_to_n(tmp_path):
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, (range % 3 + 1) * 5 AS y, range % 7 AS x FROM range(300)",
    )
    spec = FeatureSpec(label="y", key="key")
    assert prepare_data(uri, spec, output_prefix="a").classes == ("5", "10", "15")
    with pytest.raises(
        LabelError, match=r"value '10' .* outside the declared classes \['0', '1', '2'\]"
    ):
        prepare_data(uri, spec, output_prefix="b", num_classes=3)
    assert "b_train" not in _tables(path)


def test_float_label_refused_text_labels_sorted_lexically(tmp_path):
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, CAST(range % 2 AS DOUBLE) AS y, range AS x FROM range(100)",
    )
    with pytest.raises(LabelError, match="'y'.*FLOAT64"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")
    path, uri = _make(
        tmp_path,
        "SELECT 'k' || range AS key, ['stayed', 'churned', 'Zed'][range % 3 + 1] AS y, "
        "range % 7 AS x FROM range(300)",
    )
    prepared = prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")
    assert prepared.classes == ("Zed", "churned", "stayed")  # code point order


def test_one_class_only(tmp_path):
    _, uri = _make(tmp_path, "SELECT 'k' || range AS key, 0 AS y, range AS x FROM range(100)")
    with pytest.raises(LabelError, match="only class '0'"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="x")


def test_zero_training_rows(tmp_path):
    path, uri = _make(
        tmp_path, "SELECT 'k' || range AS key, range % 2 AS y, range AS x FROM range(20)"
    )
    with pytest.raises(PipelineInputError, match="zero training rows"):
        prepare_data(
            uri,
            FeatureSpec(label="y", key="key"),
            output_prefix="x",
            split_ratios=(0.0001, 0.5, 0.4999),
        )
    assert _tables(path) == ["t"]


@pytest.mark.parametrize(
    "spec_kwargs",
    [
        {"label": "y; DROP TABLE t", "key": "key"},
        {"label": "y", "key": "key`; DROP TABLE t; --"},
        {"label": "y", "key": "key", "numeric": ("x') OR (1",)},
    ],
)
def test_injection_in_the_spec_is_rejected(tmp_path, spec_kwargs):
    with pytest.raises(PipelineInputError, match="invalid column name"):
        FeatureSpec(**spec_kwargs)


@pytest.mark.parametrize("table", ["t; DROP TABLE t", "t`", "t'", 't"x'])
def test_injection_in_the_table_name_is_rejected_before_sql(tmp_path, table):
    path, _ = _make(tmp_path, "SELECT 'k' AS key, 1 AS y, 1 AS x")
    with pytest.raises(PipelineInputError):
        prepare_data(
            f"duckdb://{path}?table={table}", FeatureSpec(label="y", key="key"), output_prefix="x"
        )
    assert _tables(path) == ["t"]


def test_settings_errors(demo):
    _, uri = demo
    with pytest.raises(PipelineInputError, match="split ratios"):
        prepare_data(uri, DEMO_SPEC, output_prefix="x", split_ratios=(0.8, 0.3, 0.1))
    with pytest.raises(PipelineInputError, match="key column"):
        prepare_data(uri, FeatureSpec(label="label"), output_prefix="x")
    with pytest.raises(PipelineInputError, match="only supported for BigQuery"):
        prepare_data(uri, DEMO_SPEC, output_prefix="x", output_dataset="other")


def test_output_may_not_overwrite_the_source(tmp_path):
    path, uri = _make(
        tmp_path, "SELECT 'k' || range AS key, range % 2 AS y, range AS x FROM range(50)", "p_train"
    )
    with pytest.raises(PipelineInputError, match="overwrite the source"):
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="p")
    assert _tables(path) == ["p_train"]


def test_table_prefix_and_boundaries():
    assert table_prefix("training-pipeline-2026/11 27") == "training_pipeline_2026_11_27"
    with pytest.raises(PipelineInputError):
        table_prefix("---")
    assert split_boundaries((0.8, 0.1, 0.1)) == (8000, 9000)
    assert split_boundaries((0.7, 0.2, 0.1)) == (7000, 9000)


def test_prepared_data_file_round_trips_and_bad_files_name_the_problem(tmp_path):
    prepared = PreparedData(
        train_uri="duckdb:///w.db?table=r_train",
        validation_uri="duckdb:///w.db?table=r_validation",
        test_uri="duckdb:///w.db?table=r_test",
        classes=("a", "b"),
        spec=FeatureSpec(label="y", numeric=("x",), key="id"),
        split_counts={"train": {"a": 8, "b": 2}},
        imbalance={"mode": "none"},
    )
    path = tmp_path / "prepared.json"
    path.write_text(prepared.to_json())
    assert PreparedData.read(path) == prepared
    with pytest.raises(PipelineInputError, match=r"prepared-data JSON .*missing\.json"):
        PreparedData.read(tmp_path / "missing.json")
    path.write_text('{"train_uri": "duckdb:///w.db?table=t"}')
    with pytest.raises(PipelineInputError, match="classes"):
        PreparedData.read(path)


@pytest.mark.parametrize(
    ("key_sql", "type_name"),
    [
        ("i * 1.5", "DOUBLE"),
        ("CAST(i AS DECIMAL(10, 2))", "DECIMAL"),
        ("TIMESTAMP '2024-01-01'", "TIMESTAMP"),
    ],
)
def test_a_key_whose_text_differs_between_engines_is_refused_before_any_table(
    tmp_path, key_sql, type_name
):
    # the split hashes the key's text: FLOAT64 1.0 is "1.0" in DuckDB but "1" in BigQuery
    path, uri = _make(
        tmp_path, f"SELECT {key_sql} AS k, i % 2 AS y, i * 0.5 AS x FROM range(50) t(i)"
    )
    with pytest.raises(SchemaError, match=r"'k'") as caught:
        prepare_data(uri, FeatureSpec(label="y", key="k"), output_prefix="run")
    assert "\n" not in str(caught.value)
    _assert_nothing_written(path, ["t"])
