import dataclasses
import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, SchemaError
from vertex_imbalanced.reading.datasets import (
    DatasetReport,
    FeedOptions,
    feature_signature,
    make_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource


def typed_table() -> pa.Table:
    return pa.table(
        {
            "key": pa.array(["k0", "k1", "k2", "k3", "k4"]),
            "i64": pa.array([1, None, 3, -4, 5], pa.int64()),
            "f64": pa.array([0.5, 1.5, None, -2.25, 1e10], pa.float64()),
            "flag": pa.array([True, False, None, True, False]),
            "day": pa.array(
                [
                    dt.date(1970, 1, 2),
                    None,
                    dt.date(2024, 1, 1),
                    dt.date(1969, 12, 31),
                    dt.date(2000, 3, 1),
                ]
            ),
            "ts": pa.array(
                [
                    dt.datetime(1970, 1, 1, 12),
                    None,
                    dt.datetime(1970, 1, 3),
                    dt.datetime(1970, 1, 1),
                    dt.datetime(1970, 1, 1, 6),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "city": pa.array(["paris", None, "", "münchen", "paris"]),
            "zone": pa.array([7, 8, None, 7, 9], pa.int64()),
            "label": pa.array(["b", "a", "c", "a", "b"]),
        }
    )


SPEC = FeatureSpec(
    label="label",
    numeric=("i64", "f64", "flag", "day", "ts"),
    categorical=("city", "zone"),
    key="key",
    classes=("a", "b", "c"),
)


def collect(ds):
    feats, labels, weights = {}, [], []
    with raise_source_errors():
        batches = list(ds)
    for f, y, w in batches:
        for k, v in f.items():
            feats.setdefault(k, []).extend(v.numpy().tolist())
        labels.extend(y.numpy().tolist())
        weights.extend(w.numpy().tolist())
    return feats, labels, weights


def test_types_nulls_and_labels_follow_the_contract():
    feats, labels, weights = collect(make_dataset(ArrowTableSource(typed_table()), SPEC))
    assert labels == [1, 0, 2, 0, 1]
    assert weights == [1.0] * 5
    assert feats["i64"][:1] == [1.0] and math.isnan(feats["i64"][1]) and feats["i64"][3] == -4.0
    assert math.isnan(feats["f64"][2]) and feats["f64"][4] == pytest.approx(1e10)
    assert feats["flag"][:2] == [1.0, 0.0] and math.isnan(feats["flag"][2])
    assert feats["day"][0] == 1.0 and math.isnan(feats["day"][1]) and feats["day"][3] == -1.0
    assert feats["ts"][0] == pytest.approx(0.5) and feats["ts"][2] == pytest.approx(2.0)
    assert feats["city"] == [b"paris", b"", b"", "münchen".encode(), b"paris"]
    assert feats["zone"] == [b"7", b"8", b"", b"7", b"9"]


def test_signature_matches_dataset_element():
    ds = make_dataset(ArrowTableSource(typed_table()), SPEC)
    features_spec = ds.element_spec[0]
    sig = feature_signature(SPEC)
    assert set(features_spec) == set(sig)
    for name, ts in sig.items():
        assert features_spec[name].dtype == ts.dtype


def test_streams_batches_and_shards_cover_every_row_once():
    n = 10_007
    rng = np.random.default_rng(1)
    table = pa.table({"key": np.arange(n), "x": rng.normal(size=n), "label": rng.integers(0, 2, n)})
    spec = FeatureSpec(label="label", numeric=("x",), key="key")
    src = ArrowTableSource(table, num_streams=4, batch_rows=300)
    seen = []
    for shard in range(2):
        ds = make_dataset(src, spec, FeedOptions(shard_index=shard, num_shards=2, batch_size=128))
        for f, y, _ in ds:
            assert y.shape[0] <= 128
            seen.extend(f["x"].numpy().tolist())
    assert sorted(seen) == sorted(table.column("x").to_numpy().astype(np.float32).tolist())


def test_deterministic_order_with_seed():
    n = 5000
    table = pa.table({"x": np.arange(n, dtype=np.float64), "label": np.zeros(n, dtype=np.int64)})
    spec = FeatureSpec(label="label", numeric=("x",))
    src = ArrowTableSource(table, num_streams=3, batch_rows=100)

    def order():
        ds = make_dataset(src, spec, FeedOptions(shuffle_batches=20, seed=7, batch_size=64))
        return np.concatenate([f["x"].numpy() for f, _, _ in ds])

    first = order()
    assert np.array_equal(first, order())
    assert not np.array_equal(first, np.sort(first))


def test_weight_column_is_read():
    table = pa.table({"x": [1.0, 2.0], "label": [0, 1], "sample_weight": [4.0, 1.0]})
    spec = FeatureSpec(label="label", numeric=("x",), weight="sample_weight")
    _, _, weights = collect(make_dataset(ArrowTableSource(table), spec))
    assert weights == [4.0, 1.0]


def test_null_label_names_column_and_key():
    table = typed_table().set_column(8, "label", pa.array(["b", "a", None, "a", "b"]))
    with pytest.raises(LabelError, match=r"'label'.*NULL.*key='k2'"):
        collect(make_dataset(ArrowTableSource(table), SPEC))


def test_unknown_label_value_is_named():
    table = typed_table().set_column(8, "label", pa.array(["b", "a", "zebra", "a", "b"]))
    with pytest.raises(LabelError, match=r"'zebra'.*key='k2'"):
        collect(make_dataset(ArrowTableSource(table), SPEC))


def test_skip_policy_counts_and_reports_bad_labels():
    table = typed_table().set_column(8, "label", pa.array(["b", None, "zebra", "a", "b"]))
    report = DatasetReport()
    _, labels, _ = collect(
        make_dataset(ArrowTableSource(table), SPEC, FeedOptions(label_policy="skip"), report=report)
    )
    assert labels == [1, 0, 1]
    assert report.skipped_labels == 2 and report.rows_read == 3
    assert report.skipped_examples == ["k1", "k2"]


def test_integer_labels_without_classes_must_be_non_negative():
    table = pa.table({"x": [1.0, 2.0], "label": [0, -1], "key": ["a", "b"]})
    spec = FeatureSpec(label="label", numeric=("x",), key="key")
    with pytest.raises(LabelError, match=r"-1.*key='b'"):
        collect(make_dataset(ArrowTableSource(table), spec))


def test_integer_labels_outside_declared_classes():
    table = pa.table({"x": [1.0, 2.0], "label": [0, 3], "key": ["a", "b"]})
    spec = FeatureSpec(label="label", numeric=("x",), key="key", classes=("0", "1", "2"))
    with pytest.raises(LabelError, match=r"value 3 outside"):
        collect(make_dataset(ArrowTableSource(table), spec))


def test_float_label_is_rejected_up_front():
    table = pa.table({"x": [1.0], "label": [0.5]})
    with pytest.raises(LabelError, match="FLOAT64"):
        make_dataset(
            ArrowTableSource(table, name="proj.ds.t"), FeatureSpec(label="label", numeric=("x",))
        )


def test_misspelled_column_suggests_closest_name():
    spec = FeatureSpec(
        label="label", numeric=("f46",), categorical=("cty",), classes=("a", "b", "c")
    )
    with pytest.raises(SchemaError, match=r"no column 'f46'; did you mean 'f64'"):
        make_dataset(ArrowTableSource(typed_table(), name="p.d.t"), spec)


def test_struct_and_array_columns_are_unsupported():
    table = pa.table({"s": pa.array([{"a": 1}]), "arr": pa.array([[1, 2]]), "label": [0]})
    with pytest.raises(SchemaError, match=r"'s'.*STRUCT"):
        make_dataset(ArrowTableSource(table), FeatureSpec(label="label", numeric=("s",)))
    with pytest.raises(SchemaError, match=r"'arr'.*ARRAY"):
        make_dataset(ArrowTableSource(table), FeatureSpec(label="label", categorical=("arr",)))


def test_string_listed_as_numeric_is_rejected():
    with pytest.raises(SchemaError, match=r"'city'.*STRING.*numeric"):
        make_dataset(ArrowTableSource(typed_table()), FeatureSpec(label="label", numeric=("city",)))


def test_more_shards_than_streams_is_a_clear_error():
    table = pa.table({"x": [1.0], "label": [0]})
    with pytest.raises(ValueError, match="no stream"):
        make_dataset(
            ArrowTableSource(table),
            FeatureSpec(label="label", numeric=("x",)),
            FeedOptions(shard_index=1, num_shards=2),
        )


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"batch_size": 0}, "batch_size must be > 0"),
        ({"shuffle_batches": -1}, "shuffle_batches must be >= 0"),
        ({"num_shards": 0}, "num_shards must be >= 1"),
        ({"shard_index": 2, "num_shards": 2}, r"shard_index must be in \[0, num_shards\)"),
        ({"label_policy": "drop"}, "label_policy must be 'error' or 'skip'"),
        ({"prefetch": -1}, "prefetch must be >= 0"),
        ({"threads": 0}, "threads must be > 0"),
    ],
)
def test_feed_options_reject_settings_out_of_range_by_name(fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        FeedOptions(**fields)


def test_feed_options_are_one_frozen_value_shared_by_both_feeds():
    options = FeedOptions(batch_size=64, shuffle_batches=3, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError, match="seed"):
        options.seed = 2  # type: ignore[misc]
    assert options == FeedOptions(batch_size=64, shuffle_batches=3, seed=1)
