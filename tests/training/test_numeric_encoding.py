"""Issue 12 item 4: quantiles and moments from the statistics pass, the numeric encoding.

Default (``by_shape``): a column far from normal (scipy's skew / kurtosis beyond the limits) is
piecewise-linear encoded, the others are clipped to the training range and standardised."""

import dataclasses

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.reading.datasets import make_dataset, raise_source_errors
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.model import (
    KURTOSIS_LIMIT,
    PREPROCESSED_FEATURES,
    SKEW_LIMIT,
    bin_edges,
    build_model,
    encoded_model,
    far_from_normal,
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


def test_encoding_matches_the_formulas_and_stays_bounded():
    """Skewed counts: piecewise-linear; the 0/1 flag (skew 0.9): clipped and standardised."""
    stats = stats_of(frame())
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,), seed=1))
    s, flag = stats.numeric["skewed"], stats.numeric["flag"]
    assert far_from_normal(s) and not far_from_normal(flag)
    edges = bin_edges(s)
    x = np.array([np.nan, -5.0, 0.0, 7.0, 40.0, 1e7, 3e38], np.float32)
    f = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1e30], np.float32)  # 1e30: beyond training
    raw = {
        "skewed": tf.constant(x),
        "flag": tf.constant(f),
        "c": tf.constant([2.5, 9.0, 2.5, -1e30, 2.5, 2.5, 2.5]),  # constant: left out
    }
    out = preprocessed(model, raw)
    t = len(edges) - 1
    assert out.shape == (7, 1 + t + 1)  # [flag standardised, skewed's t bins, isnan(skewed)]
    standard = (np.clip(f, 0.0, 1.0) - flag.mean) / np.sqrt(flag.variance)
    np.testing.assert_allclose(out[:, 0], standard, rtol=1e-5)
    imputed = np.where(np.isnan(x), np.float32(s.mean), x).astype(np.float64)
    oracle = np.clip((imputed[:, None] - edges[:-1]) / np.diff(edges), 0.0, 1.0)
    np.testing.assert_allclose(out[:, 1 : 1 + t], oracle, atol=1e-5)
    np.testing.assert_array_equal(out[:, -1], [1, 0, 0, 0, 0, 0, 0])  # isnan(skewed)
    assert out[:, 1:].min() >= 0.0 and out[:, 1:].max() <= 1.0
    assert np.isfinite(model(raw).numpy()).all()
    # beyond the training range a value encodes as the training maximum: no blow-up
    assert edges[-1] < 1e7 < imputed.max()
    np.testing.assert_array_equal(out[5, 1:], out[6, 1:])
    np.testing.assert_array_equal(out[6, 0], out[1, 0])  # the flag's 1e30 encodes as its 1


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
    unknown = dataclasses.replace(stats.numeric["flag"], skewness=None, excess_kurtosis=None)
    assert far_from_normal(unknown)  # shape unknown (older statistics): piecewise-linear


def test_piecewise_linear_encoding_stays_finite_under_float16():
    """Encoded (in float32) before the float16 cast: 1e5 > float16's max stays a bounded 1."""
    from vertex_imbalanced.training.strategy import set_mixed_precision

    stats = stats_of(frame())
    previous = set_mixed_precision("mixed_float16")
    try:
        model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,)))
        raw = {n: tf.constant([1.0, 1e5], tf.float32) for n in SPEC.numeric}
        out = preprocessed(model, raw)
        flag = stats.numeric["flag"]  # standardised, clipped to its training range [0, 1]
        assert np.isfinite(out).all() and out[:, 1:].min() >= 0 and out[:, 1:].max() <= 1
        top = (1.0 - flag.mean) / np.sqrt(flag.variance)
        np.testing.assert_allclose(out[1, 0], top, rtol=1e-2)
        assert np.isfinite(model(raw).numpy()).all()
    finally:
        keras.config.set_dtype_policy(previous)


SHAPES = FeatureSpec(label="label", numeric=("normal", "uniform", "lognormal", "heavy", "rare"))


def shapes_table(rows=4000, seed=3):
    rng = np.random.default_rng(seed)
    normal = rng.normal(10.0, 3.0, rows)
    normal[rng.random(rows) < 0.1] = np.nan
    cols = {
        "normal": pa.array(normal, pa.float64(), from_pandas=True),
        "uniform": pa.array(rng.uniform(-1.0, 1.0, rows)),  # kurtosis -1.2: near enough
        "lognormal": pa.array(rng.lognormal(0.0, 1.0, rows)),  # skew ~6: far
        "heavy": pa.array(rng.standard_t(3, rows)),  # symmetric, kurtosis large: far
        "rare": pa.array((rng.random(rows) < 0.02).astype(np.float64)),  # skew ~7: far
        "label": pa.array(np.where(rng.random(rows) < 0.5, "a", "b")),
    }
    return pa.table(cols)


@pytest.mark.parametrize("weighted", [False, True])
def test_skewness_and_kurtosis_match_scipy_and_pick_the_encoding(weighted):
    """Moments merged over batches == scipy on the whole column (integer weights = repeats)."""
    tbl = shapes_table()
    spec = SHAPES
    if weighted:
        weights = np.random.default_rng(4).integers(1, 5, tbl.num_rows).astype(np.float64)
        tbl = tbl.append_column("w", pa.array(weights))
        spec = dataclasses.replace(SHAPES, weight="w")
    ds = make_dataset(ArrowTableSource(tbl, batch_rows=333), spec, classes=CLASSES)
    with raise_source_errors():
        stats = compute_feature_stats(ds, spec, len(CLASSES), description="t")
    for name in SHAPES.numeric:
        x = tbl[name].to_numpy(zero_copy_only=False).astype(np.float32).astype(np.float64)
        x = x[~np.isnan(x)]  # the feed's float32 values
        if weighted:
            w = tbl["w"].to_numpy()[~np.isnan(tbl[name].to_numpy(zero_copy_only=False))]
            x = np.repeat(x, w.astype(int))
        skew, kurt = scipy_stats.skew(x), scipy_stats.kurtosis(x)
        got = stats.numeric[name]
        np.testing.assert_allclose(got.skewness, skew, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.excess_kurtosis, kurt, rtol=1e-6, atol=1e-9)
        far = abs(skew) > SKEW_LIMIT or kurt > KURTOSIS_LIMIT
        assert far_from_normal(got) == far == (name in ("lognormal", "heavy", "rare")), name
    assert FeatureStats.from_dict(stats.to_dict()) == stats
    model = build_model(spec, stats, CLASSES, Hyperparameters(hidden_units=(4,)))
    first = encoded_model(model).get_layer(PREPROCESSED_FEATURES).output.shape[-1]
    # 2 standardised + 3 far columns x the widest column's bins + isnan(normal)
    widest = max(len(bin_edges(stats.numeric[n])) - 1 for n in ("lognormal", "heavy", "rare"))
    assert first == 2 + 3 * widest + 1


def test_moments_of_a_constant_column_and_of_float32_extremes():
    extreme = np.r_[np.full(49, 0.0), 3e38]  # near float32's maximum: x**4 fits in float64
    tbl = pa.table(
        {
            "normal": pa.array(np.full(50, 4.0)),
            "uniform": pa.array(extreme),
            "lognormal": pa.array(np.arange(50.0)),
            "heavy": pa.array(np.arange(50.0)),
            "rare": pa.array(np.arange(50.0)),
            "label": pa.array(["a", "b"] * 25),
        }
    )
    ds = make_dataset(ArrowTableSource(tbl, batch_rows=7), SHAPES, classes=CLASSES)
    with raise_source_errors():
        stats = compute_feature_stats(ds, SHAPES, len(CLASSES), description="t")
    assert (stats.numeric["normal"].skewness, stats.numeric["normal"].excess_kurtosis) == (0, 0)
    x = extreme.astype(np.float32).astype(np.float64)
    got = stats.numeric["uniform"]
    np.testing.assert_allclose(got.skewness, scipy_stats.skew(x), rtol=1e-6)
    np.testing.assert_allclose(got.excess_kurtosis, scipy_stats.kurtosis(x), rtol=1e-6)
    assert far_from_normal(got)
