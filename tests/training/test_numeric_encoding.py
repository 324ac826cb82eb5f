"""Issue 12 item 4: quantiles from the statistics pass, piecewise-linear numeric encoding."""

import dataclasses

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.reading.datasets import make_dataset, raise_source_errors
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.model import (
    PREPROCESSED_FEATURES,
    bin_edges,
    build_model,
    encoded_model,
)
from vertex_imbalanced.training.statistics import (
    QUANTILE_POINTS,
    SKETCH_RELATIVE_ACCURACY,
    FeatureStats,
    NumericStats,
    compute_feature_stats,
)

SPEC = FeatureSpec(label="label", numeric=("skewed", "flag", "c"), weight="w")
CLASSES = ("a", "b")


def weighted_quantiles(values, weights, points=QUANTILE_POINTS):
    """Oracle: the smallest value whose cumulative weight reaches ``q * total``."""
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    targets = np.linspace(0, cumulative[-1], points + 1)
    return values[np.minimum(np.searchsorted(cumulative, targets), values.size - 1)]


def frame(rows=3000, seed=0):
    rng = np.random.default_rng(seed)
    skewed = np.round(rng.lognormal(3.0, 2.0, rows))  # heavy-tailed counts, many ties
    skewed[rng.random(rows) < 0.05] = np.nan
    cols = {
        "skewed": pa.array(skewed, pa.float64(), from_pandas=True),
        "flag": pa.array((rng.random(rows) < 0.3).astype(np.float64)),
        "c": pa.array(np.full(rows, 2.5)),
        "label": pa.array(np.where(rng.random(rows) < 0.4, "a", "b")),
        "w": pa.array(rng.uniform(0.5, 4.0, rows)),
    }
    return pa.table(cols)


def stats_of(tbl, batch_rows=256):
    ds = make_dataset(ArrowTableSource(tbl, batch_rows=batch_rows), SPEC, classes=CLASSES)
    with raise_source_errors():
        return compute_feature_stats(ds, SPEC, len(CLASSES), description="t")


def test_quantiles_are_the_weighted_quantiles_and_do_not_depend_on_row_order():
    tbl = frame()
    stats = stats_of(tbl)
    skewed = tbl["skewed"].to_numpy(zero_copy_only=False)
    present = ~np.isnan(skewed)
    expected = weighted_quantiles(skewed[present], tbl["w"].to_numpy()[present])
    q = np.array(stats.numeric["skewed"].quantiles)
    assert q.shape == (QUANTILE_POINTS + 1,) and np.all(np.diff(q) >= 0)
    assert (q[0], q[-1]) == (np.nanmin(skewed), np.nanmax(skewed))
    # within the sketch's bucket width; exact where a bucket holds one integer (values < 50)
    np.testing.assert_allclose(q, expected, rtol=2 * SKETCH_RELATIVE_ACCURACY)
    np.testing.assert_array_equal(q[expected < 50], expected[expected < 50])
    assert stats.numeric["flag"].quantiles[0] == 0.0 and stats.numeric["flag"].quantiles[-1] == 1.0
    shuffled = tbl.take(np.random.default_rng(1).permutation(tbl.num_rows))
    again = stats_of(shuffled, batch_rows=97)
    for name in SPEC.numeric:
        assert again.numeric[name].quantiles == stats.numeric[name].quantiles
    assert FeatureStats.from_dict(stats.to_dict()) == stats


def test_bin_edges_merge_equal_quantiles_and_follow_the_row_count():
    flag = NumericStats(0.3, 0.21, 1000, 0, quantiles=(0.0,) * 40 + (1.0,) * 25)
    np.testing.assert_array_equal(bin_edges(flag), [0.0, 1.0])  # one bin: a 0/1 column
    grid = tuple(float(v) for v in range(QUANTILE_POINTS + 1))
    assert len(bin_edges(NumericStats(32.0, 1.0, 10_000, 0, grid))) == 33  # MAX_BINS bins
    assert len(bin_edges(NumericStats(32.0, 1.0, 160, 0, grid))) == 6  # 160 rows // 32 = 5 bins
    assert len(bin_edges(NumericStats(32.0, 1.0, 20, 0, grid))) == 2  # fewer rows: one bin
    assert bin_edges(NumericStats(1.0, 1.0, 10, 0)).size == 0  # no quantiles: none


def preprocessed(model, raw):
    inner = encoded_model(model)
    features = keras.Model(inner.input, inner.get_layer(PREPROCESSED_FEATURES).output)
    return features({"numeric": tf.stack([raw[n] for n in SPEC.numeric], axis=-1)}).numpy()


def test_piecewise_linear_encoding_matches_the_formula_and_stays_bounded():
    stats = stats_of(frame())
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,), seed=1))
    s = stats.numeric["skewed"]
    edges = bin_edges(s)
    x = np.array([np.nan, -5.0, 0.0, 7.0, 40.0, 1e7, 3e38], np.float32)
    raw = {
        "skewed": tf.constant(x),
        "flag": tf.constant([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]),
        "c": tf.constant([2.5, 9.0, 2.5, -1e30, 2.5, 2.5, 2.5]),  # constant: left out
    }
    out = preprocessed(model, raw)
    imputed = np.where(np.isnan(x), np.float32(s.mean), x).astype(np.float64)
    oracle = np.clip((imputed[:, None] - edges[:-1]) / np.diff(edges), 0.0, 1.0)
    t = len(edges) - 1  # the widest column: no padding for it
    np.testing.assert_allclose(out[:, :t], oracle, atol=1e-5)
    np.testing.assert_array_equal(out[:, t], [0, 1, 1, 0, 1, 0, 0])  # the flag: bin [0, 1]
    np.testing.assert_array_equal(out[:, t + 1 : 2 * t], 0.0)  # its padding bins
    np.testing.assert_array_equal(out[:, -1], [1, 0, 0, 0, 0, 0, 0])  # isnan(skewed)
    assert out.shape == (7, 2 * t + 1) and out.min() >= 0.0 and out.max() <= 1.0
    probs = model(raw).numpy()
    assert np.isfinite(probs).all()
    # beyond the training range a value encodes as the training maximum: no blow-up
    assert edges[-1] < 1e7 < imputed.max()
    np.testing.assert_array_equal(out[5], out[6])


def test_statistics_without_quantiles_fall_back_to_standardising():
    stats = stats_of(frame())
    bare = dataclasses.replace(
        stats,
        numeric={n: dataclasses.replace(s, quantiles=()) for n, s in stats.numeric.items()},
    )
    model = build_model(SPEC, bare, CLASSES, Hyperparameters(hidden_units=(4,)))
    raw = {n: tf.constant([stats.numeric[n].mean], tf.float32) for n in SPEC.numeric}
    out = preprocessed(model, raw)
    assert out.shape == (1, 3)  # [skewed, flag] standardised + isnan(skewed)
    np.testing.assert_allclose(out[0, :2], 0.0, atol=1e-5)


def test_piecewise_linear_encoding_stays_finite_under_float16():
    """Encoded (in float32) before the float16 cast: 1e5 > float16's max stays a bounded 1."""
    from vertex_imbalanced.training.strategy import set_mixed_precision

    stats = stats_of(frame())
    previous = set_mixed_precision("mixed_float16")
    try:
        model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,)))
        raw = {n: tf.constant([1.0, 1e5], tf.float32) for n in SPEC.numeric}
        out = preprocessed(model, raw)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert np.isfinite(model(raw).numpy()).all()
    finally:
        keras.config.set_dtype_policy(previous)
