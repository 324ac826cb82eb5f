"""Oracle tests: every streamed metric equals scikit-learn's on the same labels/probabilities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from vertex_imbalanced.errors import UndefinedMetricWarning
from vertex_imbalanced.evaluation.decision_rule import DecisionRule, apply
from vertex_imbalanced.evaluation.metrics import (
    MAX_DISTINCT,
    VERTEX_THRESHOLDS,
    ClassificationAccumulator,
    ScoreCurve,
    summarize_confusion,
)

TOL = 1e-6


def _make(n: int, c: int, seed: int, absent: tuple[int, ...] = (), skew: float = 1.5):
    """Labels with a skewed prior and noisy-but-informative softmax probabilities."""
    rng = np.random.default_rng(seed)
    prior = np.exp(-skew * np.arange(c))
    prior[list(absent)] = 0
    prior /= prior.sum()
    y = rng.choice(c, size=n, p=prior)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.2
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return y, p.astype(np.float32)


def _accumulate(y, p, batch: int = 97, **kwargs) -> ClassificationAccumulator:
    acc = ClassificationAccumulator([f"c{i}" for i in range(p.shape[1])], **kwargs)
    for start in range(0, len(y), batch):
        acc.update(y[start : start + batch], p[start : start + batch])
    return acc


def _check_against_sklearn(y, p, res, pred=None):
    c = p.shape[1]
    labels = list(range(c))
    pred = p.argmax(axis=1) if pred is None else pred
    np.testing.assert_array_equal(
        res["confusion_matrix"], skm.confusion_matrix(y, pred, labels=labels)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prec, rec, f1, sup = skm.precision_recall_fscore_support(
            y, pred, labels=labels, zero_division=0
        )
        report = skm.classification_report(
            y, pred, labels=labels, output_dict=True, zero_division=0
        )
    for i in range(c):
        got = res["per_class"][f"c{i}"]
        assert got["precision"] == pytest.approx(prec[i], abs=TOL)
        assert got["recall"] == pytest.approx(rec[i], abs=TOL)
        assert got["f1"] == pytest.approx(f1[i], abs=TOL)
        assert got["support"] == sup[i]
        assert got["f1"] == pytest.approx(report[str(i)]["f1-score"], abs=TOL)
    for avg in ("macro", "weighted", "micro"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ap, ar, af, _ = skm.precision_recall_fscore_support(
                y, pred, labels=labels, average=avg, zero_division=0
            )
        assert res[f"{avg}_precision"] == pytest.approx(ap, abs=TOL)
        assert res[f"{avg}_recall"] == pytest.approx(ar, abs=TOL)
        assert res[f"{avg}_f1"] == pytest.approx(af, abs=TOL)
    assert res["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=TOL)
    assert res["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"], abs=TOL)
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert res["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=labels), abs=TOL)


@pytest.mark.parametrize(
    ("c", "absent", "seed"),
    [(2, (), 0), (3, (), 1), (10, (), 2), (3, (1,), 3), (10, (4, 7), 4)],
    ids=["binary", "3-class", "10-class", "3-class-absent", "10-class-absent"],
)
def test_matches_sklearn(c, absent, seed):
    y, p = _make(1500, c, seed, absent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        res = _accumulate(y, p).result()
    _check_against_sklearn(y, p, res)
    for k in absent:
        assert res["per_class"][f"c{k}"]["support"] == 0
        assert any(f"'c{k}' is absent" in note for note in res["notes"])
    if c == 2:
        assert res["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=TOL)
        assert res["pr_auc"] == pytest.approx(skm.average_precision_score(y, p[:, 1]), abs=TOL)
        assert res["curve_exact"] is True
    else:
        onehot = np.eye(c)[y]
        assert res["micro_roc_auc"] == pytest.approx(
            skm.roc_auc_score(onehot, p, average="micro"), abs=TOL
        )
        assert res["micro_pr_auc"] == pytest.approx(
            skm.average_precision_score(onehot, p, average="micro"), abs=TOL
        )


def test_class_never_predicted_warns_and_sets_precision_zero():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]] + [[0.6, 0.3, 0.1]] * 3,
        dtype=np.float32,
    )  # class 2 never predicted
    with pytest.warns(UndefinedMetricWarning, match="'c2' was never predicted"):
        res = _accumulate(y, p, batch=4).result()
    assert res["per_class"]["c2"]["precision"] == 0.0
    assert res["per_class"]["c2"]["f1"] == 0.0
    _check_against_sklearn(y, p, res)


def test_binary_curves_with_ties_match_sklearn():
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.05).astype(int)
    score = np.round(rng.random(3000) * 0.6 + 0.4 * y, 2)  # heavy ties
    p = np.stack([1 - score, score], axis=1)
    acc = _accumulate(y, p, batch=256)
    res = acc.result()
    assert res["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=TOL)
    assert res["pr_auc"] == pytest.approx(skm.average_precision_score(y, score), abs=TOL)
    prec, rec, thr = skm.precision_recall_curve(y, score)
    curve = acc.curve.pr_curve()
    # sklearn lists thresholds ascending and stops at full recall; compare on sklearn's points.
    ours = dict(
        zip(curve["thresholds"], zip(curve["precision"], curve["recall"], strict=True), strict=True)
    )
    for t, pr, rc in zip(thr, prec[:-1], rec[:-1], strict=True):
        assert ours[t] == pytest.approx((pr, rc), abs=TOL)


@pytest.mark.parametrize(("c", "seed"), [(2, 7), (4, 8)], ids=["binary", "4-class"])
def test_metrics_at_the_operating_point_match_sklearn_on_the_decided_labels(c, seed):
    y, p = _make(900, c, seed)
    if c == 2:
        rule = DecisionRule("threshold", ((0.3, 0.0), (0.0, 0.7)), threshold=0.3)
    else:
        weights = (1.0, 1.5, 2.5, 4.0)
        rule = DecisionRule("class_weights", tuple(map(tuple, np.diag(weights))), weights=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        res = _accumulate(y, p, rule=rule).result()
    decided = apply(rule, p)
    if c == 2:
        np.testing.assert_array_equal(decided, (p[:, 1] > 0.3).astype(int))
    assert (decided != p.argmax(1)).any()
    _check_against_sklearn(y, p, res, pred=decided)
    labels = list(range(c))
    pr, rc, f1, sup = skm.precision_recall_fscore_support(
        y, decided, labels=labels, zero_division=0
    )
    for i in labels:
        assert res["per_class"][f"c{i}"]["f1"] == pytest.approx(f1[i], abs=TOL)
    assert res["operating_point"]["kind"] == rule.kind
    # The argmax figures stay beside the headline, under their own key.
    argmax = res["argmax"]
    np.testing.assert_array_equal(
        argmax["confusion_matrix"], skm.confusion_matrix(y, p.argmax(1), labels=labels)
    )
    assert argmax["macro_f1"] == pytest.approx(
        skm.f1_score(y, p.argmax(1), labels=labels, average="macro", zero_division=0), abs=TOL
    )


def test_curve_switches_to_bounded_grid_and_stays_close():
    rng = np.random.default_rng(8)
    y = (rng.random(20000) < 0.1).astype(bool)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    curve = ScoreCurve(max_distinct=1000)
    for start in range(0, y.size, 4096):
        curve.update(s[start : start + 4096], y[start : start + 4096])
    assert curve.roc_auc() == pytest.approx(skm.roc_auc_score(y, s), abs=1e-3)
    assert curve.average_precision() == pytest.approx(skm.average_precision_score(y, s), abs=2e-3)
    assert curve.exact is False
    assert curve.summary()["distinct_scores"] <= 2**14  # ~1.2e-4 relative grid over [0, 1]
    assert curve.positives == y.sum() and curve.negatives == (~y).sum()


def test_calibration_and_vertex_threshold_counts():
    y, p = _make(600, 3, 9)
    acc = _accumulate(y, p)
    cal = acc.calibration()
    for i in range(3):
        assert cal[f"c{i}"]["mean_predicted"] == pytest.approx(p[:, i].mean(), abs=TOL)
        assert cal[f"c{i}"]["observed_share"] == pytest.approx((y == i).mean(), abs=TOL)
    rows = acc.class_threshold_counts(1)
    for row in rows:
        t = row["threshold"]
        assert row["tp"] == int(((p[:, 1] >= t) & (y == 1)).sum())
        assert row["fp"] == int(((p[:, 1] >= t) & (y != 1)).sum())
        assert row["tp"] + row["fn"] == int((y == 1).sum())
    assert [r["threshold"] for r in rows] == list(VERTEX_THRESHOLDS)
    rel = acc.reliability()["c0"]
    assert sum(rel["count"]) == 600


def test_summarize_confusion_rejects_wrong_shape():
    with pytest.raises(ValueError, match="does not fit 3 classes"):
        summarize_confusion(np.zeros((2, 2)), ["a", "b", "c"])


def test_update_rejects_bad_labels():
    acc = ClassificationAccumulator(["a", "b"])
    with pytest.raises(ValueError, match=r"label ids must be in 0\.\.1"):
        acc.update(np.array([0, 2]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="no examples"):
        acc.result()


def test_summary_thins_the_full_curves_and_the_exact_limit_bounds_the_curve():
    rng = np.random.default_rng(11)
    y = rng.random(60_000) < 0.2
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    curve = ScoreCurve(max_distinct=80_000)
    for start in range(0, y.size, 4096):
        curve.update(s[start : start + 4096], y[start : start + 4096])
    assert curve.exact  # 60k distinct scores: below the limit, the curve is exact
    full_roc, full_pr, summary = curve.roc_curve(), curve.pr_curve(), curve.summary()
    ri = np.unique(np.linspace(0, len(full_roc["fpr"]) - 1, 200).round().astype(int))
    pi = np.unique(np.linspace(0, len(full_pr["recall"]) - 1, 200).round().astype(int))
    assert summary["roc"]["tpr"] == [full_roc["tpr"][i] for i in ri]
    assert summary["roc"]["thresholds"][0] is None  # +inf is written as null
    assert summary["roc"]["thresholds"][1:] == [full_roc["thresholds"][i] for i in ri[1:]]
    assert summary["pr"]["precision"] == [full_pr["precision"][i] for i in pi]
    assert curve.roc_auc() == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    for start in range(0, y.size, 4096):  # 120k distinct scores: past the limit, on the grid
        curve.update(s[start : start + 4096] + 1e-9, y[start : start + 4096])
    distinct = curve.summary()["distinct_scores"]
    assert not curve.exact and distinct < 80_000
    assert curve.roc_auc() == pytest.approx(skm.roc_auc_score(np.r_[y, y], np.r_[s, s]), abs=1e-3)
    assert MAX_DISTINCT == 250_000 and ScoreCurve().max_distinct == MAX_DISTINCT
