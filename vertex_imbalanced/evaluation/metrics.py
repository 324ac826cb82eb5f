"""Streaming classification metrics in pure numpy (no TF, no scikit-learn).

Everything here is accumulated batch by batch, so a test table of any size is evaluated in
bounded memory:

* confusion matrix, log-loss sum, per-class probability sums and reliability bins:
  O(classes²) / O(classes x bins) — exact.
* ranking curves (ROC AUC, PR AUC, PR curve) for the positive class of a
  binary problem (or the micro-averaged one-vs-rest pairs of a multiclass one):
  :class:`ScoreCurve` keeps one row per *distinct* score with its positive/negative counts.
  While there are at most ``max_distinct`` distinct scores (default :data:`MAX_DISTINCT`) the
  curve is **exact** (equal to scikit-learn's ``roc_auc_score`` / ``average_precision_score``).
  Past that it switches, once and for good, to a fixed grid: each score is truncated to its
  float32 value with the lowest 10 mantissa bits cleared (relative resolution 2⁻¹³ ≈ 1.2e-4 at
  every magnitude, so small minority-class probabilities keep their resolution), at most ~1.04M
  bins. Scores inside one bin then count as ties; ``exact`` in the output says which mode was used.
  The curves are kept as arrays and thinned before they become JSON lists, so an evaluation
  holds about the same memory for 100k and 1M test rows (peak RSS of a process updating one
  3-class accumulator: 66 vs 67 MB; with an exact limit of 1M distinct scores and full curves
  as lists it was 91 vs 149 MB).

Conventions (the same as scikit-learn with ``labels=range(C)`` and ``zero_division=0``):

* A class that is never predicted has precision 0; a class absent from the data has recall 0;
  F1 = 2·TP / (2·TP + FP + FN), or 0 when that is 0/0. Each such case emits an
  :class:`~vertex_imbalanced.errors.UndefinedMetricWarning` and is listed in ``notes``. Absent classes stay in the macro
  average (they count as 0), exactly like scikit-learn given the full label list.
* Micro precision = recall = F1 = accuracy (single-label problems).
* Log loss clips probabilities to ``[eps, 1 - eps]`` with ``eps`` of their dtype (float32
  model outputs -> 1.19e-7), without renormalising, as scikit-learn does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vertex_imbalanced.errors import UndefinedMetricWarning
from vertex_imbalanced.evaluation.decision_rule import DecisionRule

RELIABILITY_BINS = 10
"""Equal-width probability bins of the calibration (reliability) diagram."""

VERTEX_THRESHOLDS: tuple[float, ...] = (
    *(round(0.05 * i, 2) for i in range(20)),
    0.96,
    0.97,
    0.98,
    0.99,
    1.0,
)
"""Confidence thresholds of Vertex AI's classification evaluation schema."""

MAX_DISTINCT = 250_000
"""Distinct scores a :class:`ScoreCurve` keeps exactly (~6 MB) before it switches to the grid."""

CURVE_POINTS = 200
"""Largest number of points kept when a curve is written to JSON / plotted."""

_COARSE_MASK = np.uint32(0xFFFFFC00)  # clear the 10 low mantissa bits of a float32


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _coarsen(scores: np.ndarray) -> np.ndarray:
    """Map scores onto the fixed float32 grid (monotone: a <= b implies coarse(a) <= coarse(b))."""
    f32 = np.clip(np.asarray(scores, dtype=np.float32), 0.0, None) + np.float32(0.0)
    return (f32.view(np.uint32) & _COARSE_MASK).view(np.float32).astype(np.float64)


def _thin(n: int, limit: int = CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` points spread over ``n``, first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


class ScoreCurve:
    """Streaming ranking curve of one score against a binary truth (see the module docstring).

    Args:
        max_distinct: distinct scores kept exactly before switching to the fixed grid.
    """

    def __init__(self, max_distinct: int = MAX_DISTINCT) -> None:
        self.max_distinct = max_distinct
        self.exact = True
        self._values = np.empty(0, dtype=np.float64)
        self._pos = np.empty(0, dtype=np.int64)
        self._neg = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def update(self, scores: np.ndarray, is_positive: np.ndarray) -> None:
        """Add a batch of scores (higher = more positive) and their truth (bool)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        truth = np.asarray(is_positive, dtype=bool).ravel()
        if scores.shape != truth.shape:
            raise ValueError(f"{scores.size} scores but {truth.size} labels")
        if not self.exact:
            scores = _coarsen(scores)
        self._pending.append((scores, truth))
        self._pending_rows += scores.size
        if self._pending_rows >= max(1 << 16, self._values.size):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        scores = np.concatenate([self._values, *(s for s, _ in self._pending)])
        truth = np.concatenate([t for _, t in self._pending])
        pos_w = np.concatenate([self._pos, truth.astype(np.int64)])
        neg_w = np.concatenate([self._neg, (~truth).astype(np.int64)])
        self._pending, self._pending_rows = [], 0
        self._merge(scores, pos_w, neg_w)
        if self.exact and self._values.size > self.max_distinct:
            self.exact = False
            self._merge(_coarsen(self._values), self._pos, self._neg)

    def _merge(self, scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        values, inverse = np.unique(scores, return_inverse=True)
        self._values = values
        self._pos = np.bincount(inverse, weights=pos, minlength=values.size).astype(np.int64)
        self._neg = np.bincount(inverse, weights=neg, minlength=values.size).astype(np.int64)

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thresholds (descending) and TP / FP counts of ``score >= threshold``."""
        self._compact()
        order = slice(None, None, -1)
        thresholds = self._values[order]
        return thresholds, np.cumsum(self._pos[order]), np.cumsum(self._neg[order])

    @property
    def positives(self) -> int:
        """Number of positive examples seen."""
        self._compact()
        return int(self._pos.sum())

    @property
    def negatives(self) -> int:
        """Number of negative examples seen."""
        self._compact()
        return int(self._neg.sum())

    def _roc_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``fpr``, ``tpr``, ``thresholds`` as arrays (from (0, 0) at threshold inf)."""
        thresholds, tps, fps = self._cumulative()
        p, n = (tps[-1], fps[-1]) if tps.size else (0, 0)
        tpr = np.r_[0.0, _safe_div(tps, p)]
        fpr = np.r_[0.0, _safe_div(fps, n)]
        return fpr, tpr, np.r_[math.inf, thresholds]

    def _pr_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``precision``, ``recall``, ``thresholds`` as arrays, highest threshold first."""
        thresholds, tps, fps = self._cumulative()
        p = tps[-1] if tps.size else 0
        return _safe_div(tps, tps + fps), _safe_div(tps, p), thresholds

    def roc_curve(self) -> dict[str, list[float]]:
        """Full ROC curve: ``fpr``, ``tpr``, ``thresholds`` (starting at (0, 0), threshold inf)."""
        fpr, tpr, thresholds = self._roc_arrays()
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}

    def roc_auc(self) -> float | None:
        """Area under the ROC curve (trapezoids; ties count half), None without both classes."""
        if self.positives == 0 or self.negatives == 0:
            return None
        fpr, tpr, _ = self._roc_arrays()
        return float(np.trapezoid(tpr, fpr))

    def pr_curve(self) -> dict[str, list[float]]:
        """Precision / recall at each distinct threshold, highest threshold first."""
        precision, recall, thresholds = self._pr_arrays()
        return {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "thresholds": thresholds.tolist(),
        }

    def average_precision(self) -> float | None:
        """PR AUC as average precision, sum of (R_i - R_i-1) * P_i (sklearn's definition)."""
        if self.positives == 0:
            return None
        precision, recall, _ = self._pr_arrays()
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def summary(self, limit: int = CURVE_POINTS) -> dict[str, Any]:
        """Curves thinned to at most ``limit`` points each, for JSON and plots.

        Thinned as arrays: only the kept points become Python floats.
        """
        fpr, tpr, roc_t = self._roc_arrays()
        precision, recall, pr_t = self._pr_arrays()
        ri = _thin(fpr.size, limit)
        pi = _thin(recall.size, limit)
        roc = {"fpr": fpr[ri], "tpr": tpr[ri], "thresholds": roc_t[ri]}
        pr = {"precision": precision[pi], "recall": recall[pi], "thresholds": pr_t[pi]}
        return {
            "exact": self.exact,
            "distinct_scores": int(self._values.size),
            "roc": {k: [_finite(x) for x in v.tolist()] for k, v in roc.items()},
            "pr": {k: v.tolist() for k, v in pr.items()},
        }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows = truth)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    return {
        "precision": _safe_div(tp, predicted),
        "recall": _safe_div(tp, support),
        "f1": _safe_div(2 * tp, predicted + support),
        "support": support,
        "predicted": predicted,
    }


def summarize_confusion(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class and macro / weighted / micro averages from a confusion matrix.

    Args:
        cm: square matrix, ``cm[i, j]`` = examples of true class i predicted as j.
        classes: class names in id order.

    Returns:
        Dict with ``accuracy``, ``{macro,weighted,micro}_{precision,recall,f1}``,
        ``per_class`` and ``notes`` (the undefined metrics that were set to 0).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not fit {len(classes)} classes")
    s = per_class_scores(cm)
    total = int(cm.sum())
    notes = []
    for i, name in enumerate(classes):
        if s["predicted"][i] == 0:
            notes.append(f"class {name!r} was never predicted: precision set to 0")
        if s["support"][i] == 0:
            notes.append(f"class {name!r} is absent from the data: recall set to 0")
    for note in notes:
        warnings.warn(note, UndefinedMetricWarning, stacklevel=2)
    weights = s["support"] / total if total else np.zeros(len(classes))
    accuracy = float(np.trace(cm) / total) if total else 0.0
    out: dict[str, Any] = {"accuracy": accuracy}
    for metric in ("precision", "recall", "f1"):
        out[f"macro_{metric}"] = float(np.mean(s[metric]))
        out[f"weighted_{metric}"] = float(np.sum(s[metric] * weights))
        out[f"micro_{metric}"] = accuracy
    out["per_class"] = {
        name: {
            "precision": float(s["precision"][i]),
            "recall": float(s["recall"][i]),
            "f1": float(s["f1"][i]),
            "support": int(s["support"][i]),
        }
        for i, name in enumerate(classes)
    }
    out["notes"] = notes
    return out


def log_loss_sum(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Sum over rows of -log(p[true class]), clipped like scikit-learn (see module docstring)."""
    probs = np.asarray(probabilities)
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    eps = np.finfo(probs.dtype).eps
    picked = np.clip(probs[np.arange(len(labels)), labels], eps, 1 - eps)
    return float(-np.sum(np.log(picked.astype(np.float64))))


class ClassificationAccumulator:
    """Accumulates everything the evaluation reports, one batch at a time.

    The headline confusion matrix (and every metric derived from it) is counted at the
    operating point, the decision ``rule`` (:mod:`vertex_imbalanced.evaluation.decision_rule`);
    the argmax confusion matrix is always counted beside it. Ranking curves, log loss,
    calibration and Vertex's confidence-threshold counts depend on the probabilities only.

    Args:
        classes: class names in id order (at least two).
        rule: the decision rule for the class ids; None: argmax.
        max_distinct: see :class:`ScoreCurve`.
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        rule: DecisionRule | None = None,
        max_distinct: int = MAX_DISTINCT,
    ) -> None:
        self.classes = tuple(str(c) for c in classes)
        c = len(self.classes)
        if c < 2:
            raise ValueError(f"need at least two classes, got {list(self.classes)}")
        rule = rule or DecisionRule.argmax(c)
        if rule.num_classes != c:
            raise ValueError(f"a decision rule for {rule.num_classes} classes cannot decide {c}")
        self.rule = rule
        self.num_examples = 0
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.argmax_confusion = np.zeros((c, c), dtype=np.int64)
        self.log_loss_total = 0.0
        self.probability_sums = np.zeros(c, dtype=np.float64)
        nb = RELIABILITY_BINS
        self.reliability_count = np.zeros((c, nb), dtype=np.int64)
        self.reliability_prob = np.zeros((c, nb), dtype=np.float64)
        self.reliability_hits = np.zeros((c, nb), dtype=np.int64)
        nt = len(VERTEX_THRESHOLDS) + 1
        # [class, is_true_class, bin]: bin j holds scores with exactly j thresholds <= score.
        self.threshold_hist = np.zeros((c, 2, nt), dtype=np.int64)
        self.top1_hist = np.zeros((2, nt), dtype=np.int64)  # [is_correct, bin]
        self.curve = ScoreCurve(max_distinct)

    @property
    def binary(self) -> bool:
        """True for two classes (class id 1 is the positive class)."""
        return len(self.classes) == 2

    def update(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """Add a batch.

        Args:
            labels: int class ids, shape [n].
            probabilities: shape [n, C], rows summing to ~1, no NaN (the caller checks).

        Raises:
            ValueError: on shape mismatch or a label outside 0..C-1.
        """
        labels = np.asarray(labels).astype(np.int64).ravel()
        probs = np.asarray(probabilities)
        c = len(self.classes)
        if probs.ndim != 2 or probs.shape != (labels.size, c):
            raise ValueError(
                f"probabilities of shape {probs.shape} do not fit {labels.size} labels x {c} classes"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"label ids must be in 0..{c - 1}, got {labels.min()}..{labels.max()}")
        n = labels.size
        if n == 0:
            return
        predicted = np.argmax(probs, axis=1)
        decided = predicted if self.rule.kind == "argmax" else self.rule.apply(probs)
        self.argmax_confusion += np.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
        self.confusion += np.bincount(labels * c + decided, minlength=c * c).reshape(c, c)
        self.log_loss_total += log_loss_sum(labels, probs)
        p64 = probs.astype(np.float64)
        self.probability_sums += p64.sum(axis=0)
        onehot = np.zeros((n, c), dtype=bool)
        onehot[np.arange(n), labels] = True
        self._update_reliability(p64, onehot)
        self._update_thresholds(p64, onehot, predicted, labels)
        if self.binary:
            self.curve.update(p64[:, 1], labels == 1)
        else:
            self.curve.update(p64.ravel(), onehot.ravel())
        self.num_examples += n

    def _update_reliability(self, p64: np.ndarray, onehot: np.ndarray) -> None:
        nb = RELIABILITY_BINS
        bins = np.minimum((p64 * nb).astype(np.int64), nb - 1)
        flat = np.arange(p64.shape[1]) * nb + bins  # [n, C] flat index into [C, nb]
        size = p64.shape[1] * nb
        self.reliability_count += np.bincount(flat.ravel(), minlength=size).reshape(-1, nb)
        self.reliability_prob += np.bincount(
            flat.ravel(), weights=p64.ravel(), minlength=size
        ).reshape(-1, nb)
        self.reliability_hits += np.bincount(flat[onehot], minlength=size).reshape(-1, nb)

    def _update_thresholds(
        self, p64: np.ndarray, onehot: np.ndarray, predicted: np.ndarray, labels: np.ndarray
    ) -> None:
        t = np.asarray(VERTEX_THRESHOLDS)
        nt = t.size + 1
        c = p64.shape[1]
        bins = np.searchsorted(t, p64, side="right")
        flat = (np.arange(c) * 2 + onehot) * nt + bins
        self.threshold_hist += np.bincount(flat.ravel(), minlength=c * 2 * nt).reshape(c, 2, nt)
        top = p64[np.arange(len(labels)), predicted]
        tbins = np.searchsorted(t, top, side="right")
        correct = (predicted == labels).astype(np.int64)
        self.top1_hist += np.bincount(correct * nt + tbins, minlength=2 * nt).reshape(2, nt)

    def calibration(self) -> dict[str, dict[str, float]]:
        """Per class: mean predicted probability vs observed share of the class."""
        n = max(self.num_examples, 1)
        support = self.confusion.sum(axis=1)
        return {
            name: {
                "mean_predicted": float(self.probability_sums[i] / n),
                "observed_share": float(support[i] / n),
            }
            for i, name in enumerate(self.classes)
        }

    def reliability(self) -> dict[str, dict[str, list]]:
        """Per class reliability diagram: per probability bin, count / mean predicted / observed."""
        edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
        return {
            name: {
                "bin_edges": edges.tolist(),
                "count": self.reliability_count[i].tolist(),
                "mean_predicted": _safe_div(
                    self.reliability_prob[i], self.reliability_count[i]
                ).tolist(),
                "observed": _safe_div(self.reliability_hits[i], self.reliability_count[i]).tolist(),
            }
            for i, name in enumerate(self.classes)
        }

    def class_threshold_counts(self, index: int) -> list[dict[str, Any]]:
        """One-vs-rest counts of ``p[index] >= t`` for each Vertex threshold t."""
        return _threshold_rows(self.threshold_hist[index, 1], self.threshold_hist[index, 0])

    def micro_threshold_counts(self) -> list[dict[str, Any]]:
        """Micro-averaged one-vs-rest counts over all classes for each Vertex threshold."""
        return _threshold_rows(self.threshold_hist[:, 1].sum(0), self.threshold_hist[:, 0].sum(0))

    def top1_threshold_counts(self) -> list[dict[str, int]]:
        """For each Vertex threshold: top-1 predictions at or above it, correct and wrong."""
        correct = _ge_counts(self.top1_hist[1])
        wrong = _ge_counts(self.top1_hist[0])
        return [
            {"threshold": t, "correct": int(a), "wrong": int(b)}
            for t, a, b in zip(VERTEX_THRESHOLDS, correct, wrong, strict=True)
        ]

    def result(self) -> dict[str, Any]:
        """The metrics dict (``metrics.json`` schema of docs/ARCHITECTURE.md), binary extras aside."""
        if self.num_examples == 0:
            raise ValueError("no examples were accumulated")
        out: dict[str, Any] = {"classes": list(self.classes), "num_examples": self.num_examples}
        out.update(summarize_confusion(self.confusion, self.classes))
        out["log_loss"] = self.log_loss_total / self.num_examples
        out["confusion_matrix"] = self.confusion.tolist()
        out["calibration"] = self.calibration()
        out["reliability"] = self.reliability()
        if self.binary:
            out["positive_class"] = self.classes[1]
            out["roc_auc"] = self.curve.roc_auc()
            out["pr_auc"] = self.curve.average_precision()
            out["curves"] = self.curve.summary()
        else:
            out["micro_roc_auc"] = self.curve.roc_auc()
            out["micro_pr_auc"] = self.curve.average_precision()
        out["curve_exact"] = self.curve.exact
        out["threshold_counts"] = {
            "overall": self.micro_threshold_counts(),
            "top1": self.top1_threshold_counts(),
            "per_class": {
                name: self.class_threshold_counts(i) for i, name in enumerate(self.classes)
            },
        }
        out["operating_point"] = self.rule.summary()
        out["argmax"] = argmax_metrics(self.argmax_confusion, self.classes)
        return out


def argmax_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The decision-dependent metrics of the argmax decision, from its confusion matrix.

    Returns:
        ``accuracy``, ``{macro,weighted}_{precision,recall,f1}``, ``per_class`` and
        ``confusion_matrix`` (undefined-metric notes are not repeated here).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        s = summarize_confusion(cm, classes)
    keys = [f"{a}_{m}" for a in ("macro", "weighted") for m in ("precision", "recall", "f1")]
    out = {k: s[k] for k in ("accuracy", *keys, "per_class")}
    out["confusion_matrix"] = np.asarray(cm).tolist()
    return out


def _ge_counts(hist: np.ndarray) -> np.ndarray:
    """From bin counts (bin j = j thresholds <= score) to counts of score >= each threshold."""
    # score >= t_i  <=>  more than i thresholds are <= score  <=>  bin > i.
    tail = np.cumsum(hist[::-1])[::-1]
    return tail[1:]


def _threshold_rows(pos_hist: np.ndarray, neg_hist: np.ndarray) -> list[dict[str, Any]]:
    tp = _ge_counts(pos_hist)
    fp = _ge_counts(neg_hist)
    p, n = int(pos_hist.sum()), int(neg_hist.sum())
    return [
        {"threshold": t, "tp": int(a), "fp": int(b), "fn": p - int(a), "tn": n - int(b)}
        for t, a, b in zip(VERTEX_THRESHOLDS, tp, fp, strict=True)
    ]
