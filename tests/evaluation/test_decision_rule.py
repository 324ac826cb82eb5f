"""The decision rule: scikit-learn's f1_score as the oracle, Bayes decisions by hand, JSON."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.evaluation.decision_rule import (
    DecisionRule,
    apply,
    best_binary_threshold,
    choose_decision_rule,
)


def _binary(n, positive_share, seed, separation=1.5):
    """Calibrated-looking scores of a rare positive class, rounded to create ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_share).astype(np.int64)
    logit = rng.normal(separation * y - 2.5, 1.0)
    p1 = np.round(1 / (1 + np.exp(-logit)), 2)  # ties on purpose (and a quick oracle)
    return np.c_[1 - p1, p1], y


@pytest.mark.parametrize(("n", "share", "seed"), [(2000, 0.05, 0), (600, 0.3, 1), (300, 0.1, 2)])
def test_binary_threshold_equals_brute_force_search_with_sklearn(n, share, seed):
    probs, y = _binary(n, share, seed)
    w = np.random.default_rng(seed + 10).uniform(0.5, 2.0, n)
    for weights in (None, w):
        # Oracle: every cut t (predict 1 iff p1 > t) between and around the distinct scores.
        s = np.unique(probs[:, 1])
        cuts = np.r_[(s[:-1] + s[1:]) / 2, s[0] - 1e-9, s[-1]]
        oracle = max(
            f1_score(y, (probs[:, 1] > t).astype(int), average="macro", sample_weight=weights)
            for t in cuts
        )
        value, threshold = best_binary_threshold(
            probs, y, np.ones(n) if weights is None else weights
        )
        assert value == pytest.approx(oracle, abs=1e-12)
        decided = (probs[:, 1] > threshold).astype(int)
        at_t = f1_score(y, decided, average="macro", sample_weight=weights)
        assert at_t == pytest.approx(oracle, abs=1e-12)
        rule = choose_decision_rule(probs, y, sample_weight=weights)
        assert rule.kind == "threshold" and rule.threshold == threshold
        np.testing.assert_array_equal(apply(rule, probs), decided)
        assert rule.validation_value == pytest.approx(oracle, abs=1e-12)
        argmax = f1_score(y, probs.argmax(1), average="macro", sample_weight=weights)
        assert rule.validation_argmax_value == pytest.approx(argmax, abs=1e-12)
        assert rule.validation_value > rule.validation_argmax_value


def test_rare_positive_threshold_beats_argmax_that_never_predicts_it():
    probs, y = _binary(5000, 0.05, 3)
    assert (probs.argmax(1) == 1).sum() < 0.3 * y.sum()  # argmax rarely predicts the rare class
    rule = choose_decision_rule(probs, y)
    assert rule.kind == "threshold" and rule.threshold < 0.5
    assert rule.validation_value - rule.validation_argmax_value > 0.05
    np.testing.assert_allclose(rule.as_array(), np.diag([rule.threshold, 1 - rule.threshold]))


def _three_class(n, seed):
    """Calibrated probabilities of a 3-class problem where class 2 is rare and hard."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    centers = np.array([[0.0, 0.0], [1.2, 0.0], [0.7, 0.8]])
    x = centers[y] + rng.normal(0, 0.6, (n, 2))
    log_prior = np.log([0.6, 0.3, 0.1])
    logits = -((x[:, None, :] - centers[None]) ** 2).sum(-1) / (2 * 0.36) + log_prior
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), y


def test_multiclass_weights_beat_argmax_on_a_constructed_case():
    probs, y = _three_class(3000, 4)
    rule = choose_decision_rule(probs, y)
    argmax = f1_score(y, probs.argmax(1), average="macro")
    decided = apply(rule, probs)
    assert rule.kind == "class_weights"
    assert rule.validation_value == pytest.approx(f1_score(y, decided, average="macro"))
    assert rule.validation_value > argmax + 0.02
    assert rule.weights[2] > max(rule.weights[:2])  # the rare class is up-weighted (relative)
    np.testing.assert_allclose(rule.as_array(), np.diag(rule.weights))


@pytest.mark.parametrize("seed", range(6))
def test_multiclass_rule_is_never_worse_than_argmax_on_validation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    probs = rng.dirichlet(np.ones(4) * rng.uniform(0.3, 3), size=n)
    y = rng.integers(0, 4, n)
    rule = choose_decision_rule(probs, y)
    argmax = f1_score(y, probs.argmax(1), average="macro", labels=range(4))
    at_rule = f1_score(y, apply(rule, probs), average="macro", labels=range(4))
    assert at_rule >= argmax - 1e-12
    assert rule.kind in ("argmax", "class_weights")
    if rule.kind == "argmax":
        np.testing.assert_array_equal(apply(rule, probs), probs.argmax(1))


def test_tiny_validation_set_keeps_argmax_when_the_gain_is_within_noise():
    # iris-sized: 8 rows per class; a handful of rows can be "fixed" by weights, which is noise.
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], 8)
    probs = rng.dirichlet([1, 1, 1], size=24) * 0.4 + np.eye(3)[y] * 0.6
    probs[[0, 9], :] = [[0.3, 0.36, 0.34], [0.35, 0.33, 0.32]]  # two near misses
    rule = choose_decision_rule(probs, y)
    assert rule.min_gain == pytest.approx(1 / 8)
    assert rule.kind == "argmax" and "within noise" in rule.method
    np.testing.assert_array_equal(rule.as_array(), np.eye(3))
    # The same pattern with 100x the rows clears the bar.
    big_probs, big_y = np.tile(probs, (100, 1)), np.tile(y, 100)
    assert choose_decision_rule(big_probs, big_y).min_gain == pytest.approx(1 / 800)


def test_cost_matrix_rule_is_the_bayes_decision_by_hand():
    probs = np.array(
        [
            [0.7, 0.18, 0.12],
            [0.5, 0.1, 0.4],
            [0.2, 0.5, 0.3],
            [0.34, 0.33, 0.33],
            [0.97, 0.02, 0.01],
        ]
    )
    y = np.array([0, 2, 1, 2, 0])
    cost = np.array([[0.0, 1.0, 1.0], [5.0, 0.0, 1.0], [10.0, 2.0, 0.0]])  # K[true, predicted]
    rule = choose_decision_rule(probs, y, cost_matrix=cost)
    expected = []
    for p in probs:  # expected cost of predicting j: sum_i p_i K[i, j]
        costs = [sum(p[i] * cost[i, j] for i in range(3)) for j in range(3)]
        expected.append(int(np.argmin(costs)))
    # e.g. row 0: predicting 0 costs .18*5 + .12*10 = 2.1, 1 costs .7 + .24 = .94, 2 costs .88
    assert expected == [2, 2, 2, 2, 0]  # the costly misses of class 2 dominate; argmax differs
    np.testing.assert_array_equal(apply(rule, probs), expected)
    assert rule.kind == "cost_matrix"
    np.testing.assert_array_equal(rule.as_array(), -cost)
    assert rule.validation_value == pytest.approx(f1_score(y, expected, average="macro"))


def test_json_round_trip_and_apply_agree():
    probs, y = _three_class(800, 6)
    for rule in (
        choose_decision_rule(probs, y),
        choose_decision_rule(*_binary(500, 0.2, 7)),
        choose_decision_rule(probs, y, cost_matrix=1 - np.eye(3)),
        DecisionRule.argmax(3),
    ):
        back = DecisionRule.from_json(rule.to_json())
        assert back == rule
        assert DecisionRule.from_dict(rule.to_dict()) == rule
    rule = choose_decision_rule(probs, y)
    np.testing.assert_array_equal(
        DecisionRule.from_json(rule.to_json()).apply(probs), apply(rule, probs)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "magic", "matrix": [[1, 0], [0, 1]]}, "kind 'magic'"),
        ({"kind": "argmax", "matrix": [[1, 0, 0], [0, 1, 0]]}, "C x C"),
        ({"kind": "threshold", "matrix": [[0.3, 0], [0, 0.7]]}, "threshold in"),
        ({"kind": "class_weights", "matrix": [[1, 0], [0, 1]], "weights": [1, -1]}, "positive"),
        ({"kind": "argmax", "matrix": [[1, 0], [0, "x"]]}, "non-numeric"),
        ({"kind": "argmax", "matrix": [[1, 0], [0, 1]], "colour": 1}, "unknown fields"),
        ({"matrix": [[1, 0], [0, 1]]}, "no 'kind'"),
    ],
)
def test_malformed_rules_are_named(data, message):
    with pytest.raises(PipelineInputError, match=message):
        DecisionRule.from_dict(data)


def test_bad_inputs_are_named():
    probs = np.full((4, 2), 0.5)
    with pytest.raises(PipelineInputError, match="metric 'accuracy'"):
        choose_decision_rule(probs, [0, 1, 0, 1], metric="accuracy")
    with pytest.raises(PipelineInputError, match="labels must be in 0..1"):
        choose_decision_rule(probs, [0, 1, 2, 1])
    with pytest.raises(PipelineInputError, match="3 labels for 4 rows"):
        choose_decision_rule(probs, [0, 1, 0])
    with pytest.raises(PipelineInputError, match="sample_weight"):
        choose_decision_rule(probs, [0, 1, 0, 1], sample_weight=[1, 1, -1, 1])
    with pytest.raises(PipelineInputError, match="cost_matrix must be a finite 2 x 2"):
        choose_decision_rule(probs, [0, 1, 0, 1], cost_matrix=np.ones((3, 3)))
    with pytest.raises(PipelineInputError, match="NaN"):
        choose_decision_rule(np.array([[np.nan, 1.0]]), [0])
    empty = choose_decision_rule(np.zeros((0, 2)), np.zeros(0, np.int64))
    assert empty.kind == "argmax" and "no rows" in empty.method
