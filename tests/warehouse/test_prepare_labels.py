"""prepare_data's classes: BOOL / text / INT labels, class inference, the label policy.

Issue 11 cases 1 (text and BOOL labels, inferred or declared classes) and 11 (NULL labels
skipped and counted). Tables are built in DuckDB; the expected counts come from DuckDB queries
of the same rows, not from the code under test.
"""

import duckdb
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri
from vertex_imbalanced.reading.sources.open import open_source
from vertex_imbalanced.warehouse.prepare import SPLITS, infer_classes, prepare_data


def make(tmp_path, sql):
    path = tmp_path / "labels.db"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE OR REPLACE TABLE t AS {sql}")
    return path, duckdb_uri(path, "t")


def tables(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return sorted(
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        )


def read_labels(uri, label):
    source = open_source(uri, [label], num_streams=1)
    return [v for batch in source.read_stream(0) for v in batch.column(0).to_pylist()]


BOOL_TABLE = (
    "SELECT 'k' || range AS key, range % 4 = 0 AS is_fraud, "
    "CAST(range AS DOUBLE) AS x FROM range(800)"
)


def test_bool_label_classes_are_false_true_and_the_reader_maps_them(tmp_path):
    _, uri = make(tmp_path, BOOL_TABLE)
    prepared = prepare_data(uri, FeatureSpec(label="is_fraud", key="key"), output_prefix="r")
    assert prepared.classes == ("false", "true")
    total = sum(sum(c.values()) for c in prepared.split_counts.values())
    assert total == 800
    assert sum(c["true"] for c in prepared.split_counts.values()) == 200
    assert prepared.skipped_labels == dict.fromkeys(SPLITS, 0)
    # The declared order wins; YAML booleans and any case spell the same classes.
    spec = FeatureSpec(label="is_fraud", key="key", classes=[True, False])
    assert spec.classes == ("true", "false")
    assert prepare_data(uri, spec, output_prefix="d").classes == ("true", "false")
    spec = FeatureSpec(label="is_fraud", key="key", classes=("FALSE", "True"))
    assert prepare_data(uri, spec, output_prefix="c").classes == ("false", "true")


def test_bool_label_with_other_declared_classes_is_refused(tmp_path):
    path, uri = make(tmp_path, BOOL_TABLE)
    spec = FeatureSpec(label="is_fraud", key="key", classes=("no", "yes"))
    with pytest.raises(LabelError, match=r"'is_fraud' is BOOL: declare its classes as false, true"):
        prepare_data(uri, spec, output_prefix="r")
    assert tables(path) == ["t"]


@pytest.mark.parametrize(
    ("values", "arrow_type", "expected"),
    [
        (["10", "2", "-1", "0"], pa.int64(), ("-1", "0", "2", "10")),
        (["stayed", "churned", "Bad", "bad"], pa.string(), ("Bad", "bad", "churned", "stayed")),
        (["true", "false"], pa.bool_(), ("false", "true")),
        (["ü", "u", "z"], pa.string(), ("u", "z", "ü")),
    ],
)
def test_infer_classes_sorts_numbers_numerically_and_text_lexically(values, arrow_type, expected):
    assert infer_classes(values, arrow_type) == expected


def test_classes_come_from_the_train_split(tmp_path):
    # 'rare' occurs only in rows whose key falls in validation/test: not a class of train.
    with duckdb.connect() as con:
        from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint

        register_farm_fingerprint(con)
        keys = [f"k{i}" for i in range(400)]
        buckets = [
            con.execute("SELECT ABS(MOD(FARM_FINGERPRINT(?), 10000))", [k]).fetchone()[0]
            for k in keys
        ]
    rare = [k for k, b in zip(keys, buckets, strict=True) if b >= 9000][:3]
    sql = (
        "SELECT 'k' || range AS key, CASE WHEN 'k' || range IN "
        f"({', '.join(repr(k) for k in rare)}) THEN 'rare' WHEN range % 3 = 0 THEN 'bad' "
        "ELSE 'good' END AS y, range * 1.0 AS x FROM range(400)"
    )
    path, uri = make(tmp_path, sql)
    with pytest.raises(LabelError, match=r"value 'rare' \(3 row\(s\).*outside the classes of the train split \['bad', 'good'\]"):  # fmt: skip
        prepare_data(uri, FeatureSpec(label="y", key="key"), output_prefix="r")
    assert tables(path) == ["t"]
    spec = FeatureSpec(label="y", key="key", label_policy="skip")
    prepared = prepare_data(uri, spec, output_prefix="r")
    assert prepared.classes == ("bad", "good")
    assert sum(prepared.skipped_labels.values()) == 3
    assert prepared.skipped_labels["train"] == 0


def test_null_labels_skipped_and_counted_per_split(tmp_path):
    sql = (
        "SELECT 'k' || range AS key, CASE WHEN range % 10 = 3 THEN NULL WHEN range % 4 = 0 "
        "THEN 'churned' ELSE 'stayed' END AS churn, range * 1.0 AS x FROM range(2000)"
    )
    path, uri = make(tmp_path, sql)
    with pytest.raises(LabelError, match=r"has 200 NULL value\(s\).*--label-policy skip"):
        prepare_data(uri, FeatureSpec(label="churn", key="key"), output_prefix="r")
    assert tables(path) == ["t"]

    spec = FeatureSpec(label="churn", key="key", label_policy="skip")
    prepared = prepare_data(uri, spec, output_prefix="r")
    assert prepared.classes == ("churned", "stayed")
    assert sum(prepared.skipped_labels.values()) == 200
    assert sum(sum(c.values()) for c in prepared.split_counts.values()) == 1800
    assert prepared.spec.label_policy == "skip"
    for split in ("validation", "test"):
        labels = read_labels(prepared.uri(split), "churn")
        assert None not in labels
        assert len(labels) == sum(prepared.split_counts[split].values())
    # Every NULL-label row is accounted for in exactly one split.
    with duckdb.connect(str(path), read_only=True) as con:
        kept = sum(
            con.execute(f"SELECT count(*) FROM r_{split}").fetchone()[0]
            for split in ("validation", "test")
        )
    assert kept == sum(sum(prepared.split_counts[s].values()) for s in ("validation", "test"))
    train = read_labels(prepared.train_uri, "churn")
    assert None not in train


def test_feature_statistics_describe_the_train_split_and_travel_in_the_json(tmp_path):
    sql = (
        "SELECT 'k' || range AS key, CASE WHEN range % 4 = 0 THEN 'churned' ELSE 'stayed' END "
        "AS churn, range * 1.0 AS x, ['a', 'b'][range % 2 + 1] AS c FROM range(1000)"
    )
    _, uri = make(tmp_path, sql)
    prepared = prepare_data(uri, FeatureSpec(label="churn", key="key"), output_prefix="r")
    stats = prepared.feature_statistics
    train = prepared.split_counts["train"]
    assert stats["row_count"] == sum(train.values())
    assert stats["class_prior"] == pytest.approx({c: n / sum(train.values()) for c, n in train.items()})  # fmt: skip
    assert set(stats["features"]) == {"x", "c"}
    assert sum(stats["features"]["c"]["values"].values()) == sum(train.values())
    assert type(prepared).from_json(prepared.to_json()) == prepared
    plain = prepare_data(uri, FeatureSpec(label="churn", key="key"), output_prefix="s", feature_statistics=False)  # fmt: skip
    assert plain.feature_statistics is None
