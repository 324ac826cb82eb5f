import dataclasses

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import LabelError, PipelineInputError
from vertex_imbalanced.reading.datasets import make_dataset, raise_source_errors
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.model import (
    PREPROCESSED_FEATURES,
    build_model,
    constant_columns,
    encoded_model,
)
from vertex_imbalanced.training.statistics import FeatureStats, NumericStats, compute_feature_stats
from vertex_imbalanced.training.strategy import set_mixed_precision

SPEC = FeatureSpec(label="label", numeric=("x", "n"), categorical=("color",), weight="w")
CLASSES = ("a", "b", "c")


def table(**overrides):
    cols = {
        "x": pa.array([1.0, None, 3.0, 5.0, None, 7.0], pa.float64()),
        "n": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "color": pa.array(["red", "red", None, "blue", "red", "blue"]),
        "label": pa.array(["a", "b", "a", "c", "a", "b"]),
        "w": pa.array([1.0, 2.0, 1.0, 3.0, 1.0, 0.5]),
    }
    cols.update(overrides)
    return pa.table(cols)


def stats_of(tbl, spec=SPEC, batch_rows=4):
    ds = make_dataset(ArrowTableSource(tbl, batch_rows=batch_rows), spec, classes=CLASSES)
    with raise_source_errors():
        return compute_feature_stats(ds, spec, len(CLASSES), description="t")


def test_feature_stats_weighted_moments_vocabulary_and_counts():
    stats = stats_of(table())
    x = np.array([1.0, 3.0, 5.0, 7.0])
    wx = np.array([1.0, 1.0, 3.0, 0.5])
    assert stats.numeric["x"].mean == pytest.approx(np.average(x, weights=wx))
    var = np.average((x - np.average(x, weights=wx)) ** 2, weights=wx)
    assert stats.numeric["x"].variance == pytest.approx(var)
    assert (stats.numeric["x"].present, stats.numeric["x"].missing) == (4, 2)
    n = np.arange(1, 7)
    w = np.array([1.0, 2.0, 1.0, 3.0, 1.0, 0.5])
    assert stats.numeric["n"].mean == pytest.approx(np.average(n, weights=w))
    assert stats.vocabularies["color"] == ("red", "blue", "")  # by count, NULL kept as ""
    assert stats.class_counts == (3, 2, 1)
    assert stats.weighted_class_counts == pytest.approx((3.0, 2.5, 3.0))
    assert FeatureStats.from_dict(stats.to_dict()) == stats


def test_feature_stats_rejects_all_null_numeric_column():
    with pytest.raises(PipelineInputError, match=r"'x' of t is NULL in all 6 rows"):
        stats_of(table(x=pa.array([None] * 6, pa.float64())))


def test_feature_stats_rejects_all_null_categorical_column():
    with pytest.raises(PipelineInputError, match=r"'color' of t is NULL"):
        stats_of(table(color=pa.array([None] * 6, pa.string())))


def test_feature_stats_count_infinite_values_as_missing():
    """The feeds read +-inf as missing (one rule for every feed, reading.datasets)."""
    stats = stats_of(table(x=pa.array([1.0, 2.0, float("inf"), 1.0, 1.0, -float("inf")])))
    assert (stats.numeric["x"].present, stats.numeric["x"].missing) == (4, 2)
    assert stats.numeric["x"].mean == pytest.approx(
        np.average([1.0, 2.0, 1.0, 1.0], weights=[1, 2, 3, 1])
    )


def test_feature_stats_rejects_zero_rows():
    with pytest.raises(PipelineInputError, match="zero rows"):
        stats_of(table().slice(0, 0))


def test_feature_stats_rejects_label_ids_outside_classes():
    batches = [
        (
            {"x": np.ones(2), "n": np.ones(2), "color": np.array([b"a", b"b"])},
            np.array([0, 3]),
            np.ones(2),
        )
    ]
    with pytest.raises(LabelError, match="class id 3, outside 0..2"):
        compute_feature_stats(batches, SPEC, 3)


def fixed_stats():
    return FeatureStats(
        rows=10,
        numeric={"x": NumericStats(4.0, 4.0, 8, 2), "n": NumericStats(2.0, 1.0, 10, 0)},
        vocabularies={"color": ("red", "blue")},
        class_counts=(5, 4, 1),
        weighted_class_counts=(5.0, 4.0, 1.0),
    )


RAW = {
    "x": tf.constant([4.0, np.nan, 6.0, np.nan], tf.float32),
    "n": tf.constant([2.0, 3.0, np.nan, 1.0], tf.float32),
    "color": tf.constant(["red", "", "purple", "blue"]),
}


def preprocessed(model, raw):
    """The inner model's fixed preprocessing of ``raw`` through the outer model's lookups."""
    inner = encoded_model(model)
    features = keras.Model(inner.input, inner.get_layer(PREPROCESSED_FEATURES).output)
    ids = model.get_layer("lookup_color")(raw["color"])
    encoded = {
        "numeric": tf.stack([raw["x"], raw["n"]], axis=-1),
        "categorical": tf.cast(ids[:, None], tf.int32),
    }
    return features(encoded).numpy()


def test_preprocessing_imputes_mean_flags_missing_and_one_hots_what_training_saw():
    model = build_model(SPEC, fixed_stats(), CLASSES, Hyperparameters(hidden_units=(4,)))
    out = preprocessed(model, RAW)
    # [normalised x, normalised n] + [isnan x] (n was never NULL in training: no indicator)
    # + one-hot [red, blue]: no training row was out of vocabulary or NULL, so "purple" and ""
    # (NULL) weigh exactly zero instead of meeting untrained weights
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 1.0, 0.0], atol=1e-6)  # (x - 4) / 2
    np.testing.assert_allclose(out[:, 1], [0.0, 1.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_array_equal(out[:, 2], [0, 1, 0, 1])
    np.testing.assert_array_equal(out[:, 3:], [[1, 0], [0, 0], [0, 0], [0, 1]])
    probs = model(RAW).numpy()
    assert probs.shape == (4, 3) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_one_hot_keeps_oov_and_null_positions_when_training_rows_took_them():
    stats = dataclasses.replace(
        fixed_stats(), vocabularies={"color": ("red", "", "blue")}, truncated={"color": 3}
    )
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,)))
    out = preprocessed(model, RAW)
    # one-hot [oov, red, "", blue]
    np.testing.assert_array_equal(
        out[:, 3:], [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    )


def test_constant_numeric_feature_is_left_out_so_serving_values_cannot_move_the_output():
    stats = dataclasses.replace(
        fixed_stats(),
        numeric={"x": NumericStats(4.0, 4.0, 8, 2), "n": NumericStats(0.0, 0.0, 10, 0)},
    )
    assert constant_columns(SPEC, stats) == ["n"]
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,)))
    assert preprocessed(model, RAW).shape == (4, 4)  # [x] + [isnan x] + one-hot [red, blue]
    shifted = dict(RAW, n=tf.constant([1.0, 1e6, -3.0, 1.0], tf.float32))
    np.testing.assert_array_equal(model(shifted).numpy(), model(RAW).numpy())


def test_regularisers_and_dropout_follow_hyperparameters():
    hp = Hyperparameters(hidden_units=(8, 4), dropout=0.3, l1=0.01, l2=0.02)
    model = build_model(SPEC, fixed_stats(), CLASSES, hp)
    inner = encoded_model(model)
    hidden = inner.get_layer("hidden_0")
    assert hidden.kernel_regularizer.get_config() == pytest.approx({"l1": 0.01, "l2": 0.02})
    assert inner.get_layer("dropout_1").rate == 0.3
    assert inner.get_layer("logits").units == 3
    assert len(model.losses) == 3  # one kernel penalty per Dense layer
    plain = build_model(SPEC, fixed_stats(), CLASSES, Hyperparameters(l1=0, l2=0, dropout=0))
    plain_layers = encoded_model(plain).layers
    assert not plain.losses and not any("dropout" in layer.name for layer in plain_layers)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_output_float32(policy):
    previous = set_mixed_precision(policy)
    try:
        model = build_model(SPEC, fixed_stats(), CLASSES, Hyperparameters(hidden_units=(4,)))
        assert encoded_model(model).get_layer("hidden_0").compute_dtype != "float32"
        assert encoded_model(model).get_layer("logits").compute_dtype == "float32"
        out = model(RAW)
        assert out.dtype == tf.float32
        np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, rtol=1e-3)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == "float32"
