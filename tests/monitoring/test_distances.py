"""Distances against independent oracles: scipy's Jensen-Shannon distance and a numpy L-infinity."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.monitoring.distances import (
    categorical_buckets,
    feature_distances,
    jensen_shannon,
    l_infinity,
    resolve_thresholds,
)


@pytest.mark.parametrize("seed", range(5))
def test_jensen_shannon_is_square_of_scipy_distance_base_2(seed):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 50, 23).astype(float)
    q = rng.integers(0, 50, 23).astype(float)
    q[:3] = 0  # empty bins on one side only
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


def test_jensen_shannon_bounds():
    assert jensen_shannon([5, 5, 0], [5, 5, 0]) == 0.0
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)


def test_l_infinity_over_union_with_null_and_unseen_values_matches_numpy():
    reference = {"values": {"a": 60, "b": 30}, "other": 0, "null": 10}
    current = {"values": {"a": 20, "z": 50}, "other": 5, "null": 25}
    p, q = categorical_buckets(reference, current)
    keys = sorted(set(p) | set(q))
    pv = np.array([p.get(k, 0) for k in keys], float)
    qv = np.array([q.get(k, 0) for k in keys], float)
    expected = np.max(np.abs(pv / pv.sum() - qv / qv.sum()))
    d, where = l_infinity(p, q)
    assert d == pytest.approx(expected)
    assert d == pytest.approx(0.5)  # 'a' went from 60 % to 20 %... 'z' unseen at 50 %
    assert where in ("a", "z")
    assert "z" in q and "b" in p and q.get("b", 0) == 0  # unseen and vanished values both count


def test_unlisted_values_merge_into_other_when_reference_has_a_rest():
    reference = {"values": {"a": 50}, "other": 40, "null": 10}
    current = {"values": {"a": 50, "z": 30}, "other": 10, "null": 10}
    p, q = categorical_buckets(reference, current)
    assert q == {"a": 50, "__null__": 10, "__other__": 40}
    assert l_infinity(p, q)[0] == pytest.approx(0.0)


def test_feature_distances_use_thresholds_and_alert_strictly_above():
    ref = {
        "features": {"x": {"type": "numeric", "edges": [0, 1], "histogram": [0, 10, 0], "null": 0}}
    }
    cur = {
        "features": {"x": {"type": "numeric", "edges": [0, 1], "histogram": [0, 0, 10], "null": 0}}
    }
    (d,) = feature_distances(ref, cur, {"x": 0.99})
    assert d.distance == pytest.approx(1.0) and d.alert
    (d,) = feature_distances(ref, ref, {"x": 0.3})
    assert d.distance == 0 and not d.alert


def test_feature_distances_refuse_other_edges():
    ref = {
        "features": {"x": {"type": "numeric", "edges": [0, 1], "histogram": [0, 1, 0], "null": 0}}
    }
    cur = {
        "features": {"x": {"type": "numeric", "edges": [0, 2], "histogram": [0, 1, 0], "null": 0}}
    }
    with pytest.raises(PipelineInputError, match="other bin edges"):
        feature_distances(ref, cur, {"x": 0.3})


def test_thresholds_default_overrides_and_bad_values():
    assert resolve_thresholds(["x", "c"], {"c": 0.1}, 0.3) == {"x": 0.3, "c": 0.1}
    with pytest.raises(PipelineInputError, match=r"unknown feature\(s\) \['nope'\]"):
        resolve_thresholds(["x"], {"nope": 0.1}, 0.3)
    with pytest.raises(PipelineInputError, match=r"\(0, 1\]"):
        resolve_thresholds(["x"], {"x": 0}, 0.3)
