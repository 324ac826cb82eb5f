"""The logistic baseline's features come from the trainer's real model, loaded from model.keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.evaluation.baselines import (
    BoundedSample,
    TrainSample,
    features_model,
    sample_training_rows,
)
from vertex_imbalanced.training.model import build_model
from vertex_imbalanced.training.statistics import FeatureStats, NumericStats

STATS = FeatureStats(
    rows=100,
    numeric={"x": NumericStats(1.0, 4.0, 90, 10), "y": NumericStats(-2.0, 1.0, 100, 0)},
    vocabularies={"color": ("red", "blue")},
    class_counts=(60, 40),
    weighted_class_counts=(60.0, 40.0),
)


def _saved_and_loaded(tmp_path, spec):
    model = build_model(spec, STATS, ["a", "b"], Hyperparameters(hidden_units=(8,)))
    model.save(tmp_path / "model.keras")
    return keras.saving.load_model(tmp_path / "model.keras", compile=False)


def _has_column(matrix, column):
    return any(np.allclose(matrix[:, j], column, atol=1e-6) for j in range(matrix.shape[1]))


def test_features_are_the_trainers_preprocessing_not_a_learned_layer(tmp_path):
    """Layout-independent: whatever the trainer's encoding, these columns must be there."""
    spec = FeatureSpec(label="label", numeric=("x", "y"), categorical=("color",))
    sub = features_model(_saved_and_loaded(tmp_path, spec))
    assert sub is not None and not sub.trainable_weights  # nothing learned up to here
    out = sub(
        {
            "x": tf.constant([3.0, np.nan, 1.0]),
            "y": tf.constant([-2.0, 0.0, -1.0]),
            "color": tf.constant(["blue", "red", "blue"]),
        }
    ).numpy()
    assert np.isfinite(out).all()
    assert _has_column(out, [(3 - 1) / 2, 0.0, 0.0])  # x normalised, NULL imputed by the mean
    assert _has_column(out, [0.0, 2.0, 1.0])  # y normalised (mean -2, variance 1)
    assert _has_column(out, [0.0, 1.0, 0.0])  # x's missing indicator
    assert _has_column(out, [1.0, 0.0, 1.0]) and _has_column(out, [0.0, 1.0, 0.0])  # one-hot


def test_categorical_only_model_gives_one_hot_rows(tmp_path):
    spec = FeatureSpec(label="label", numeric=(), categorical=("color",))
    sub = features_model(_saved_and_loaded(tmp_path, spec))
    out = sub({"color": tf.constant(["red", "blue", "red"])}).numpy()
    assert set(np.unique(out)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out.sum(axis=1), [1, 1, 1])
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.array_equal(out[0], out[1])


def test_training_sample_is_uniform_bounded_and_counts_every_row():
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(20):  # 20 batches of 500 rows; class 1 weighted 3x
        y = rng.integers(0, 2, 500)
        batches.append(({"v": np.arange(500)}, y, np.where(y == 1, 3.0, 1.0)))
    sample = sample_training_rows(
        iter(batches),
        lambda raw, rows: raw["v"][rows][:, None].astype(np.float32),
        num_classes=2,
        expected_rows=10_000,
        max_rows=1000,
    )
    assert isinstance(sample, TrainSample)
    assert sample.rows == 10_000 and sample.rate == 0.1
    assert 850 <= sample.labels.size <= 1000
    all_y = np.concatenate([b[1] for b in batches])
    np.testing.assert_allclose(sample.class_weight_sums, [np.sum(all_y == 0), 3 * np.sum(all_y)])
    share = np.mean(sample.labels == 1)
    assert share == pytest.approx(np.mean(all_y == 1), abs=0.05)
    again = sample_training_rows(
        iter(batches),
        lambda raw, rows: raw["v"][rows][:, None].astype(np.float32),
        num_classes=2,
        expected_rows=10_000,
        max_rows=1000,
    )
    np.testing.assert_array_equal(again.features, sample.features)  # seeded: same sample


def _stream(rows, batch, seed=0):
    rng = np.random.default_rng(seed)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        yield rng.random((n, 3)), np.arange(start, start + n)


def test_bounded_sample_of_a_short_stream_is_the_whole_stream_in_order():
    sample = BoundedSample(max_rows=1000)
    parts = list(_stream(700, 64))
    for probs, ids in parts:
        sample.add(probs, ids)
    probs, ids = sample.arrays()
    np.testing.assert_array_equal(ids, np.arange(700))
    np.testing.assert_array_equal(probs, np.concatenate([p for p, _ in parts]))
    assert sample.rows == 700
    assert BoundedSample(5).arrays() is None


def test_bounded_sample_is_uniform_holds_at_most_twice_the_bound_and_is_seeded():
    sample = BoundedSample(max_rows=2000)
    for probs, ids in _stream(100_000, 4096):
        sample.add(probs, ids)
    probs, ids = sample.arrays()
    assert sample.rows == 100_000 and ids.size == 2000 and probs.shape == (2000, 3)
    assert sample.held_max <= 2 * 2000 + 4096  # never more than the bound, twice, plus a batch
    assert np.all(np.diff(ids) > 0)  # distinct rows, in stream order
    # uniform over the stream: each tenth of it holds about a tenth of the sample
    counts = np.bincount(ids // 10_000, minlength=10)
    assert counts.min() >= 150 and counts.max() <= 250
    again = BoundedSample(max_rows=2000)
    for p, i in _stream(100_000, 4096):
        again.add(p, i)
    np.testing.assert_array_equal(again.arrays()[1], ids)


def test_bounded_sample_refuses_bad_input():
    with pytest.raises(ValueError, match="max_rows"):
        BoundedSample(0)
    with pytest.raises(ValueError, match="lengths"):
        BoundedSample(3).add(np.zeros(2), np.zeros(3))


def test_evaluate_featurizer_is_the_eager_sub_model_on_any_batch_size_and_row_subset(tmp_path):
    """The evaluate step's traced featurizer gives the eager sub-model's features.

    Batches of several sizes (the traced graph generalises its batch dimension) and row subsets
    (the training sample) must give the same rows, to float32 rounding.
    """
    from vertex_imbalanced.evaluation.evaluate import LoadedModel, _featurizer

    spec = FeatureSpec(label="label", numeric=("x", "y"), categorical=("color",))
    sub = features_model(_saved_and_loaded(tmp_path, spec))
    loaded = LoadedModel(tmp_path, None, ("color", "x", "y"), ("a", "b"), {})
    featurize, note = _featurizer(loaded)
    assert note is None
    rng = np.random.default_rng(3)
    for n in (5, 7, 64, 1):
        raw = {
            "x": tf.constant(np.where(rng.random(n) < 0.2, np.nan, rng.normal(2, 1, n))),
            "y": tf.constant(rng.normal(-1, 1, n)),
            "color": tf.constant(rng.choice(["red", "blue", "green"], n)),
        }
        raw = {k: tf.cast(v, tf.float32) if v.dtype == tf.float64 else v for k, v in raw.items()}
        expected = sub(raw, training=False).numpy()
        np.testing.assert_allclose(featurize(raw), expected, rtol=1e-6, atol=1e-6)
        rows = np.flatnonzero(rng.random(n) < 0.5)
        np.testing.assert_allclose(featurize(raw, rows), expected[rows], rtol=1e-6, atol=1e-6)


def test_the_component_and_pipeline_default_sample_is_the_library_bound():
    import inspect

    from components.evaluate import evaluate
    from pipelines.training_pipeline import build_pipeline
    from vertex_imbalanced.evaluation.baselines import MAX_TRAIN_ROWS

    pipeline = build_pipeline()
    for func in (evaluate.python_func, pipeline.pipeline_func):
        default = inspect.signature(func).parameters["baseline_max_rows"].default
        assert default == MAX_TRAIN_ROWS, func
