"""The decision rule: how calibrated class probabilities become one class id (numpy only).

One form covers every case: a matrix ``A`` of shape ``[C, C]`` and
``class_id = argmax(probabilities @ A)`` (ties go to the lowest class id, like ``np.argmax`` and
``tf.argmax``). The probabilities themselves are never changed (they stay calibrated to the true
prior); only the decision moves.

=================  ======================  ===========================================
kind               matrix ``A``            decision
=================  ======================  ===========================================
``argmax``         identity                the most probable class
``threshold``      ``diag(t, 1 - t)``      binary: class 1 iff ``p1 / (p0 + p1) > t``
``class_weights``  ``diag(w)``             ``argmax(p_c * w_c)``
``cost_matrix``    ``-K``                  Bayes decision for ``K[true, predicted]``: the
                                           class of least expected cost ``(p @ K)_j``
=================  ======================  ===========================================

:func:`choose_decision_rule` picks the rule on the **validation** split (never on test):

* **binary**: an exact search over every cut between distinct validation scores
  ``s = p1 / (p0 + p1)``, with cumulative (weighted) sums of positives and negatives, for the
  best macro F1 (O(n log n)); the threshold is the middle of the best cut's score interval, or
  0.5 when the interval holds 0.5 (the rule then equals argmax). Among equally good cuts the one
  nearest 0.5 wins.
* **multiclass**: coordinate ascent over per-class log-weights: starting from ``w = 1``, each
  class in turn tries every value of :data:`LOG_WEIGHT_GRID` (natural log of 1/16 ... 16 in
  quarter octaves, 33 values) with the other weights fixed and keeps the best macro F1 (ties:
  the weight nearest 1, then the current one); sweeps repeat until one changes nothing, at most
  :data:`MAX_SWEEPS`. Deterministic; cost O(sweeps x C x 33 x n).
* **cost matrix** (given by the user): the Bayes decision ``A = -K``; nothing is searched.

**Regularisation toward argmax.** The searched rule is fitted on the same validation rows it is
scored on, so its gain is optimistic and, on a small split, mostly noise. It is kept only when
its validation macro F1 beats argmax's by at least ``min_gain = 1 / n_min``, where ``n_min`` is
the smallest (unweighted) row count among the classes present in the validation split; that is
the recall change of one row of the rarest class (on iris's ~7 rows per class: 0.14, so a
balanced tiny table keeps argmax; with 1,000 rare rows: 0.001). Otherwise the rule is argmax
(``A`` = identity), which by construction is never worse than argmax on validation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vertex_imbalanced.errors import PipelineInputError

KINDS = ("argmax", "threshold", "class_weights", "cost_matrix")
"""The kinds of rule, see the module docstring."""
METRICS = ("macro_f1",)
"""Metrics :func:`choose_decision_rule` can maximise."""
LOG_WEIGHT_GRID = np.log(2.0) * np.arange(-16, 17) / 4
"""Per-class log-weights tried by the multiclass search: 1/16 ... 16 in quarter octaves."""
MAX_SWEEPS = 5
"""Most coordinate-ascent sweeps over the classes (the search stops earlier when stable)."""
_TIE = 1e-12


@dataclasses.dataclass(frozen=True)
class DecisionRule:
    """A decision rule ``class_id = argmax(probabilities @ matrix)`` and how it was chosen.

    Attributes:
        kind: one of :data:`KINDS`.
        matrix: ``A`` as a ``C x C`` tuple of rows.
        threshold: binary ``threshold`` rules: class 1 iff ``p1 / (p0 + p1) > threshold``.
        weights: ``class_weights`` rules: the per-class weights ``w`` (``A = diag(w)``).
        cost_matrix: ``cost_matrix`` rules: ``K[true, predicted]`` as given.
        metric: the validation metric the rule was chosen for (``macro_f1``).
        validation_value: that metric on the validation split at this rule (None: not measured).
        validation_argmax_value: the same metric at argmax, for comparison.
        validation_rows: validation rows the rule was chosen on.
        min_gain: the gain over argmax a searched rule needed (``1 / n_min``), None if unused.
        chosen_on: the split the rule was chosen on: ``validation``, or ``none`` for an argmax
            rule that nothing chose (e.g. a model that carries no rule).
        method: one sentence saying how the rule was chosen.
    """

    kind: str
    matrix: tuple[tuple[float, ...], ...]
    threshold: float | None = None
    weights: tuple[float, ...] | None = None
    cost_matrix: tuple[tuple[float, ...], ...] | None = None
    metric: str = "macro_f1"
    validation_value: float | None = None
    validation_argmax_value: float | None = None
    validation_rows: int = 0
    min_gain: float | None = None
    chosen_on: str = "validation"
    method: str = ""

    def __post_init__(self) -> None:
        _check_rule(self)

    @property
    def num_classes(self) -> int:
        """C, the side of :attr:`matrix`."""
        return len(self.matrix)

    def as_array(self) -> np.ndarray:
        """``A`` as a float64 ``[C, C]`` array."""
        return np.asarray(self.matrix, dtype=np.float64)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Class ids ``[n]`` (int64) of ``probabilities [n, C]``; see :func:`apply`."""
        return apply(self, probabilities)

    @classmethod
    def argmax(
        cls, num_classes: int, method: str = "argmax: no rule was chosen", chosen_on: str = "none"
    ) -> DecisionRule:
        """The identity rule for ``num_classes`` classes, not chosen on any split by default."""
        return cls("argmax", _rows(np.eye(num_classes)), chosen_on=chosen_on, method=method)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the ``decision_rule`` value of ``model_metadata.json``)."""
        data = dataclasses.asdict(self)
        for key in ("matrix", "cost_matrix"):
            if data[key] is not None:
                data[key] = [list(row) for row in data[key]]
        if data["weights"] is not None:
            data["weights"] = list(data["weights"])
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRule:
        """Inverse of :meth:`to_dict`.

        Raises:
            PipelineInputError: a missing, unknown or malformed field (named).
        """
        if not isinstance(data, Mapping):
            raise PipelineInputError(f"decision rule must be a JSON object, got {data!r:.200}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise PipelineInputError(f"decision rule has unknown fields {unknown}")
        for key in ("kind", "matrix"):
            if key not in data:
                raise PipelineInputError(f"decision rule has no {key!r}")
        values = dict(data)
        try:
            values["matrix"] = _rows(np.asarray(data["matrix"], dtype=np.float64))
            if data.get("cost_matrix") is not None:
                values["cost_matrix"] = _rows(np.asarray(data["cost_matrix"], dtype=np.float64))
            if data.get("weights") is not None:
                values["weights"] = tuple(float(w) for w in data["weights"])
        except (TypeError, ValueError) as exc:
            raise PipelineInputError(f"decision rule has a non-numeric matrix: {exc}") from exc
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> DecisionRule:
        """Inverse of :meth:`to_json`.

        Raises:
            PipelineInputError: not JSON, or see :meth:`from_dict`.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PipelineInputError(f"decision rule is not valid JSON: {text[:200]!r}") from exc
        return cls.from_dict(data)

    def summary(self) -> dict[str, Any]:
        """The ``operating_point`` block of ``metrics.json`` (kind, parameters, how chosen)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.weights is not None:
            out["weights"] = list(self.weights)
        if self.cost_matrix is not None:
            out["cost_matrix"] = [list(r) for r in self.cost_matrix]
        out.update(
            chosen_on=self.chosen_on,
            metric=self.metric,
            validation_metric=self.validation_value,
            validation_argmax_metric=self.validation_argmax_value,
            validation_rows=self.validation_rows,
            min_gain=self.min_gain,
            method=self.method,
        )
        return out


def _rows(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.atleast_2d(matrix))


def _check_rule(rule: DecisionRule) -> None:
    """Raise PipelineInputError naming the field of a malformed rule."""
    if rule.kind not in KINDS:
        raise PipelineInputError(f"decision rule kind {rule.kind!r} is not one of {list(KINDS)}")
    a = np.asarray(rule.matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise PipelineInputError(f"decision rule matrix must be C x C with C >= 2, got {a.shape}")
    if not np.isfinite(a).all():
        raise PipelineInputError("decision rule matrix holds NaN or infinite values")
    c = a.shape[0]
    if rule.kind == "threshold":
        t = rule.threshold
        if c != 2 or t is None or not 0.0 <= t <= 1.0:
            raise PipelineInputError(
                f"a threshold rule needs 2 classes and a threshold in [0, 1], got C={c}, "
                f"threshold={t!r}"
            )
    if rule.kind == "class_weights":
        w = rule.weights
        if w is None or len(w) != c or not all(math.isfinite(x) and x > 0 for x in w):
            raise PipelineInputError(
                f"a class_weights rule needs {c} finite positive weights, got {w!r}"
            )
    if rule.kind == "cost_matrix":
        k = None if rule.cost_matrix is None else np.asarray(rule.cost_matrix)
        if k is None or k.shape != (c, c) or not np.isfinite(k).all():
            raise PipelineInputError(f"a cost_matrix rule needs a finite {c} x {c} cost matrix")


def apply(rule: DecisionRule, probabilities: np.ndarray) -> np.ndarray:
    """Decide: ``argmax(probabilities @ rule.matrix)``, ties to the lowest class id.

    Args:
        rule: the decision rule (C classes).
        probabilities: ``[n, C]`` class probabilities.

    Returns:
        int64 class ids ``[n]``.

    Raises:
        ValueError: ``probabilities`` is not ``[n, C]``.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != rule.num_classes:
        raise ValueError(
            f"probabilities of shape {probs.shape} do not fit a rule for {rule.num_classes} classes"
        )
    if rule.kind == "argmax":  # exactly np.argmax, no product rounding
        return np.argmax(probs, axis=1).astype(np.int64)
    return np.argmax(probs @ rule.as_array(), axis=1).astype(np.int64)


# --- Choosing a rule -------------------------------------------------------------------------


def choose_decision_rule(
    probabilities: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    metric: str = "macro_f1",
    cost_matrix: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> DecisionRule:
    """Choose the decision rule on the validation split (see the module docstring).

    Args:
        probabilities: validation probabilities ``[n, C]`` (finite, C >= 2).
        labels: validation class ids ``[n]`` in ``0..C-1``.
        sample_weight: optional non-negative weights ``[n]`` (counts in the confusion matrix).
        metric: the metric to maximise (:data:`METRICS`).
        cost_matrix: ``K[true, predicted]`` ``[C, C]``: use the Bayes decision ``A = -K``
            instead of a search.

    Returns:
        The rule, with the validation metric at the rule and at argmax.

    Raises:
        PipelineInputError: an unknown metric, mis-shaped or non-finite inputs, a label out of
            range, negative weights, or a cost matrix of the wrong shape.
    """
    if metric not in METRICS:
        raise PipelineInputError(f"decision rule metric {metric!r} is not one of {list(METRICS)}")
    probs, y, w = _check_inputs(probabilities, labels, sample_weight)
    c = probs.shape[1]
    n = int(y.size)
    if cost_matrix is not None:
        return _cost_rule(probs, y, w, cost_matrix)
    if n == 0 or w.sum() <= 0:
        return DecisionRule.argmax(
            c, "argmax: the validation split has no rows to choose on", chosen_on="validation"
        )
    base = macro_f1(_confusion(y, np.argmax(probs, axis=1), w, c))
    present = np.bincount(y, minlength=c)
    min_gain = 1.0 / int(present[present > 0].min())
    if c == 2:
        value, threshold = best_binary_threshold(probs, y, w)
        found = dict(threshold=threshold, matrix=_rows(np.diag([threshold, 1.0 - threshold])))
        kind, what = "threshold", f"threshold {threshold:.6g} from an exact search over cut points"
    else:
        value, weights = best_class_weights(probs, y, w)
        found = dict(weights=tuple(weights.tolist()), matrix=_rows(np.diag(weights)))
        kind, what = "class_weights", "per-class weights from coordinate ascent on log-weights"
    common = dict(
        metric=metric,
        validation_argmax_value=base,
        validation_rows=n,
        min_gain=min_gain,
    )
    gain = value - base
    if gain < min_gain - _TIE:
        return DecisionRule(
            "argmax",
            _rows(np.eye(c)),
            validation_value=base,
            method=(
                f"argmax: the best {what} gained {gain:+.4f} macro F1 on validation, less than "
                f"min_gain {min_gain:.4f} = 1 / {int(round(1 / min_gain))} rows of the rarest "
                "class (within noise)"
            ),
            **common,
        )
    return DecisionRule(
        kind,
        validation_value=value,
        method=f"{what}: macro F1 {value:.4f} vs argmax {base:.4f} on validation",
        **found,
        **common,
    )


def _check_inputs(
    probabilities: Any, labels: Any, sample_weight: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise PipelineInputError(f"probabilities must be [n, C] with C >= 2, got {probs.shape}")
    if not np.isfinite(probs).all():
        raise PipelineInputError("probabilities hold NaN or infinite values")
    y = np.asarray(labels).ravel()
    if y.size != probs.shape[0]:
        raise PipelineInputError(f"{y.size} labels for {probs.shape[0]} rows of probabilities")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise PipelineInputError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    c = probs.shape[1]
    if y.size and (y.min() < 0 or y.max() >= c):
        raise PipelineInputError(f"labels must be in 0..{c - 1}, got {y.min()}..{y.max()}")
    if sample_weight is None:
        return probs, y, np.ones(y.size)
    w = np.asarray(sample_weight, dtype=np.float64).ravel()
    if w.size != y.size or not np.isfinite(w).all() or (w < 0).any():
        raise PipelineInputError(
            f"sample_weight must be {y.size} finite values >= 0 (got {w.size} values)"
        )
    return probs, y, w


def _cost_rule(probs: np.ndarray, y: np.ndarray, w: np.ndarray, cost: Any) -> DecisionRule:
    c = probs.shape[1]
    k = np.asarray(cost, dtype=np.float64)
    if k.shape != (c, c) or not np.isfinite(k).all():
        raise PipelineInputError(
            f"cost_matrix must be a finite {c} x {c} matrix K[true, predicted], got shape {k.shape}"
        )
    rule = DecisionRule("cost_matrix", _rows(-k), cost_matrix=_rows(k))
    if y.size == 0:
        return dataclasses.replace(rule, method="Bayes decision for the given cost matrix")
    at_rule = macro_f1(_confusion(y, apply(rule, probs), w, c))
    at_argmax = macro_f1(_confusion(y, np.argmax(probs, axis=1), w, c))
    return dataclasses.replace(
        rule,
        validation_value=at_rule,
        validation_argmax_value=at_argmax,
        validation_rows=int(y.size),
        method="Bayes decision for the given cost matrix (least expected cost; no search)",
    )


def _confusion(y: np.ndarray, pred: np.ndarray, w: np.ndarray, c: int) -> np.ndarray:
    """Weighted confusion matrix ``[true, predicted]``."""
    return np.bincount(y * c + pred, weights=w, minlength=c * c).reshape(c, c)


def macro_f1(confusion: np.ndarray) -> float:
    """Macro F1 of a (weighted) confusion matrix ``[true, predicted]``; 0/0 counts as 0."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def best_binary_threshold(
    probabilities: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray
) -> tuple[float, float]:
    """Exact best macro F1 over all cuts of ``s = p1 / (p0 + p1)``: ``(macro F1, threshold)``.

    The decision is ``s > threshold``. Every distinct score is a candidate cut (plus "nothing
    positive"); the threshold is the middle of the chosen cut's interval ``[next lower score,
    score)``, or 0.5 when the interval holds 0.5; equally good cuts: the one nearest 0.5.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    total = probs[:, 0] + probs[:, 1]
    s = np.divide(probs[:, 1], total, out=np.zeros(len(total)), where=total > 0)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    pos = np.where(labels[order] == 1, sample_weight[order], 0.0)
    neg = np.where(labels[order] == 1, 0.0, sample_weight[order])
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # last row of each group
    tp = np.r_[0.0, np.cumsum(pos)[ends]]  # cut k: the k highest groups are positive
    fp = np.r_[0.0, np.cumsum(neg)[ends]]
    fn, tn = tp[-1] - tp, fp[-1] - fp
    values = s_sorted[ends]  # distinct scores, descending
    hi = np.r_[1.0, values]  # cut k: threshold in [lo_k, hi_k)
    lo = np.r_[values, 0.0]
    f1_pos = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_neg = _ratio(2 * tn, 2 * tn + fn + fp)
    macro = (f1_pos + f1_neg) / 2
    valid = lo < hi
    valid[0] = True  # nothing positive: threshold in [max score, 1]
    macro = np.where(valid, macro, -np.inf)
    holds_half = (lo <= 0.5) & ((hi > 0.5) | (np.arange(hi.size) == 0))
    distance = np.where(holds_half, 0.0, np.minimum(np.abs(lo - 0.5), np.abs(hi - 0.5)))
    best = macro.max()
    candidates = np.flatnonzero(macro >= best - _TIE)
    k = int(candidates[np.argmin(distance[candidates])])
    threshold = 0.5 if holds_half[k] else float((lo[k] + hi[k]) / 2)
    return float(macro[k]), threshold


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def best_class_weights(
    probabilities: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray
) -> tuple[float, np.ndarray]:
    """Coordinate ascent on per-class log-weights for macro F1: ``(macro F1, weights [C])``.

    Exactly reproduces ``argmax(p * w)`` (ties to the lowest id) while one weight moves: a row
    goes to class ``c`` iff ``p_c w_c`` beats the best other score (or ties it with a lower id).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    c = probs.shape[1]
    log_w = np.zeros(c)
    grid = LOG_WEIGHT_GRID
    best = macro_f1(_confusion(labels, np.argmax(probs, axis=1), sample_weight, c))
    for _ in range(MAX_SWEEPS):
        changed = False
        for k in range(c):
            scores = probs * np.exp(log_w)
            others = scores.copy()
            others[:, k] = -np.inf
            other_id = np.argmax(others, axis=1)
            other = others[np.arange(len(other_id)), other_id]
            values = np.empty(grid.size)
            for i, g in enumerate(grid):
                mine = probs[:, k] * math.exp(g)
                wins = (mine > other) | ((mine == other) & (k < other_id))
                pred = np.where(wins, k, other_id)
                values[i] = macro_f1(_confusion(labels, pred, sample_weight, c))
            top = values.max()
            current = values[np.argmin(np.abs(grid - log_w[k]))]
            if top > current + _TIE:  # move only for a real improvement
                near = np.flatnonzero(values >= top - _TIE)
                log_w[k] = grid[near[np.argmin(np.abs(grid[near]))]]
                best, changed = top, True
            else:
                best = max(best, current)
        if not changed:
            break
    weights = np.exp(log_w)
    final = macro_f1(_confusion(labels, np.argmax(probs * weights, axis=1), sample_weight, c))
    return final, weights
