"""One streaming pass over the training dataset: the statistics the model's preprocessing needs.

Per numeric column the weighted mean and variance ignoring NaN (= NULL) and weighted quantiles
(:data:`QUANTILE_POINTS` + 1 of them, from a bounded sketch), per categorical column a
vocabulary (most frequent first), and the class counts and row count. Means and quantiles are
weighted by the example weights so that, after downsample + upweight, the imputed value, the
scaling and the bin edges are those of the original (not the downsampled) distribution. Only
O(columns x sketch + vocabulary) state is kept, so the pass works on tables that do not fit in
memory.

**The quantile sketch** (:class:`_QuantileSketch`) puts each value in a logarithmic bucket of
relative width :data:`SKETCH_RELATIVE_ACCURACY` (the DDSketch layout: bucket
``ceil(log|x| / log gamma)`` per sign, one bucket for ``|x| < 1e-9``) and keeps per bucket the
summed weight and the smallest and largest value seen. The state is at most a few thousand
buckets per column whatever the row count, it does not depend on the order the rows arrive in
(sums, minima and maxima), so the quantiles are the same on every worker and every run, and a
quantile is an actual training value whenever its bucket holds one distinct value (integer
counts below ~50, flags, codes); otherwise it is interpolated within the bucket, within the
bucket's relative width of the exact weighted quantile.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, PipelineInputError
from vertex_imbalanced.reading.record_packing import MISSING_CATEGORY


@dataclasses.dataclass(frozen=True)
class NumericStats:
    """Statistics of one numeric column (NaN = NULL excluded).

    Attributes:
        mean: weighted mean of the present values (the imputed value).
        variance: weighted population variance of the present values.
        present: number of non-NULL rows.
        missing: number of NULL rows.
        quantiles: weighted quantiles of the present values at ``q = i / QUANTILE_POINTS``,
            ``i = 0..QUANTILE_POINTS`` (first = minimum, last = maximum), non-decreasing; empty
            for statistics made without the sketch (the model then standardises the column).
        skewness: weighted sample skewness ``m3 / m2**1.5`` of the present values (``m_k`` the
            weighted central moments; ``scipy.stats.skew`` with ``bias=True`` for unit weights),
            0 for a constant column; ``None`` for statistics made without it.
        excess_kurtosis: weighted ``m4 / m2**2 - 3`` (``scipy.stats.kurtosis``, Fisher,
            ``bias=True``); 0 / ``None`` as for ``skewness``.
    """

    mean: float
    variance: float
    present: int
    missing: int
    quantiles: tuple[float, ...] = ()
    skewness: float | None = None
    excess_kurtosis: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Training statistics that parameterise the model's preprocessing layers.

    Attributes:
        rows: rows read.
        numeric: column -> :class:`NumericStats`.
        vocabularies: column -> tokens, most frequent first (may include ``""`` = NULL).
        class_counts: rows per class id (unweighted).
        weighted_class_counts: sum of example weights per class id.
        truncated: column -> training rows whose token was cut from the vocabulary (beyond
            ``max_vocabulary`` or below ``min_count``): they train the out-of-vocabulary id.
    """

    rows: int
    numeric: dict[str, NumericStats]
    vocabularies: dict[str, tuple[str, ...]]
    class_counts: tuple[int, ...]
    weighted_class_counts: tuple[float, ...]
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        data = dataclasses.asdict(self)
        data["vocabulary_sizes"] = {k: len(v) for k, v in self.vocabularies.items()}
        data["vocabularies"] = {k: list(v) for k, v in self.vocabularies.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rows=int(data["rows"]),
            numeric={k: NumericStats(**v) for k, v in data["numeric"].items()},
            vocabularies={k: tuple(v) for k, v in data["vocabularies"].items()},
            class_counts=tuple(int(c) for c in data["class_counts"]),
            weighted_class_counts=tuple(float(c) for c in data["weighted_class_counts"]),
            truncated={k: int(v) for k, v in data.get("truncated", {}).items()},
        )


QUANTILE_POINTS = 64
"""Quantiles kept per numeric column: ``q = 0, 1/64, ..., 1`` (65 values)."""
SKETCH_RELATIVE_ACCURACY = 0.01
"""Relative half-width of a sketch bucket: ``gamma = (1 + a) / (1 - a)``."""
SKETCH_ZERO = 1e-9
"""Values with ``|x|`` below this share the zero bucket."""
_LOG_GAMMA = math.log((1 + SKETCH_RELATIVE_ACCURACY) / (1 - SKETCH_RELATIVE_ACCURACY))
_KEY_OFFSET = 2 - math.floor(math.log(SKETCH_ZERO) / _LOG_GAMMA)
"""Shifts the log-bucket index of ``|x| >= SKETCH_ZERO`` to >= 1 (0 = the zero bucket)."""


class _QuantileSketch:
    """Weighted log-bucket sketch: per bucket key, summed weight, min and max (module docstring).

    Keys sort like the values: negative values get negative keys (larger ``|x|``, smaller key),
    the zero bucket is 0.
    """

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.weight = np.zeros(0, np.float64)
        self.low = np.zeros(0, np.float64)
        self.high = np.zeros(0, np.float64)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._pending_size = 0

    @staticmethod
    def bucket_keys(values: np.ndarray) -> np.ndarray:
        """The bucket key of each (finite) value."""
        magnitude = np.abs(values)
        tiny = magnitude < SKETCH_ZERO
        with np.errstate(divide="ignore"):
            index = np.ceil(np.log(np.where(tiny, 1.0, magnitude)) / _LOG_GAMMA) + _KEY_OFFSET
        return np.where(tiny, 0, np.sign(values) * index).astype(np.int64)

    def update(self, values: np.ndarray, weights: np.ndarray) -> None:
        """Add finite ``values`` with their ``weights`` (float64 arrays of one length)."""
        if not values.size:
            return
        self._pending.append(self._reduce(self.bucket_keys(values), weights, values, values))
        self._pending_size += self._pending[-1][0].size
        if self._pending_size > 4 * max(self.keys.size, 1024):
            self._compact()

    @staticmethod
    def _reduce(keys, weight, low, high) -> tuple[np.ndarray, ...]:
        order = np.argsort(keys, kind="stable")
        keys, weight, low, high = keys[order], weight[order], low[order], high[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return (
            keys[starts],
            np.add.reduceat(weight, starts),
            np.minimum.reduceat(low, starts),
            np.maximum.reduceat(high, starts),
        )

    def _compact(self) -> None:
        if self._pending:
            parts = [(self.keys, self.weight, self.low, self.high), *self._pending]
            merged = (np.concatenate([p[i] for p in parts]) for i in range(4))
            self.keys, self.weight, self.low, self.high = self._reduce(*merged)
            self._pending, self._pending_size = [], 0

    def quantiles(self, points: int = QUANTILE_POINTS) -> tuple[float, ...]:
        """Weighted quantiles at ``q = i / points``, ``i = 0..points`` (empty without weight).

        A quantile falls in the bucket where the cumulative weight reaches ``q * total``; it is
        interpolated linearly between the bucket's smallest and largest value by the fraction
        of the bucket's weight below it (exact when the bucket holds one distinct value).
        """
        self._compact()
        positive = self.weight > 0
        weight, low, high = self.weight[positive], self.low[positive], self.high[positive]
        total = float(weight.sum())
        if not weight.size or total <= 0:
            return ()
        cumulative = np.cumsum(weight)
        targets = np.linspace(0.0, total, points + 1)
        bucket = np.minimum(np.searchsorted(cumulative, targets, side="left"), weight.size - 1)
        below = cumulative[bucket] - weight[bucket]
        fraction = np.clip((targets - below) / weight[bucket], 0.0, 1.0)
        values = low[bucket] + fraction * (high[bucket] - low[bucket])
        values[0], values[-1] = low[0], high[-1]
        return tuple(float(v) for v in np.maximum.accumulate(values))


class _Moments:
    """Weighted count / mean / M2 / M3 / M4, merged batch by batch, NaN excluded.

    The pairwise update of Chan et al. for M2, extended to M3 and M4 by Pebay (2008, "Formulas
    for robust, one-pass parallel computation of covariances and arbitrary-order statistical
    moments", eq. 2.1), with weights in place of counts.
    """

    def __init__(self) -> None:
        self.weight = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.m3 = 0.0
        self.m4 = 0.0
        self.present = 0
        self.missing = 0
        self.non_finite = 0
        self.sketch = _QuantileSketch()

    def update(self, values: np.ndarray, weights: np.ndarray) -> None:
        nan = np.isnan(values)
        self.missing += int(nan.sum())
        self.present += int(values.size - nan.sum())
        finite = np.isfinite(values)
        self.non_finite += int((~finite & ~nan).sum())
        values, weights = values[finite].astype(np.float64), weights[finite].astype(np.float64)
        self.sketch.update(values, weights)
        w = float(weights.sum())
        if w <= 0:
            return
        mean = float(np.dot(weights, values) / w)
        # The feed's values are float32 (|x| < 3.5e38), so even x**4 stays far inside float64.
        centred = values - mean
        squared = centred * centred
        m2 = float(np.dot(weights, squared))
        m3 = float(np.dot(weights, squared * centred))
        m4 = float(np.dot(weights, squared * squared))
        a, total = self.weight, self.weight + w
        d = mean - self.mean
        d2 = d * d
        self.m4 += (
            m4
            + d2 * d2 * a * w * (a * a - a * w + w * w) / (total * total * total)
            + 6 * d2 * (a * a * m2 + w * w * self.m2) / (total * total)
            + 4 * d * (a * m3 - w * self.m3) / total
        )
        self.m3 += (
            m3 + d2 * d * a * w * (a - w) / (total * total) + 3 * d * (a * m2 - w * self.m2) / total
        )
        self.m2 += m2 + d2 * a * w / total
        self.mean += d * w / total
        self.weight = total

    def shape(self) -> tuple[float, float]:
        """``(skewness, excess kurtosis)``; ``(0, 0)`` for a constant column."""
        m2 = self.m2 / self.weight
        if m2 <= 1e-12 * max(1.0, self.mean * self.mean):
            return 0.0, 0.0
        return (self.m3 / self.weight) / (m2 * math.sqrt(m2)), (self.m4 / self.weight) / (
            m2 * m2
        ) - 3.0


def compute_feature_stats(
    dataset: Any,
    spec: FeatureSpec,
    num_classes: int,
    *,
    description: str = "the training data",
    max_vocabulary: int = 1000,
    min_count: int = 1,
) -> FeatureStats:
    """Read ``dataset`` once (``(features, label, weight)`` batches from ``make_dataset``).

    Args:
        dataset: an iterable of ``(features dict, label, weight)`` batches.
        spec: which columns are numeric / categorical.
        num_classes: number of declared classes; a label id >= this is an error.
        description: table name for error messages.
        max_vocabulary: keep at most this many tokens per categorical column (most frequent).
        min_count: drop tokens seen fewer times (they fall into the OOV bucket).

    Returns:
        The statistics.

    Raises:
        PipelineInputError: zero rows; a feature column that is NULL in every row; a numeric
            column holding infinite values.
        LabelError: a label id outside ``0..num_classes-1``.
    """
    moments = {name: _Moments() for name in spec.numeric}
    counters = {name: collections.Counter() for name in spec.categorical}
    class_counts = np.zeros(num_classes, np.int64)
    weighted = np.zeros(num_classes, np.float64)
    rows = 0
    for features, label, weight in dataset:
        label = np.asarray(label)
        weight = np.asarray(weight, dtype=np.float64)
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            bad = int(label[(label < 0) | (label >= num_classes)][0])
            raise LabelError(
                f"label column {spec.label!r} of {description} holds class id {bad}, outside "
                f"0..{num_classes - 1} for the {num_classes} declared classes"
            )
        rows += label.size
        class_counts += np.bincount(label, minlength=num_classes)
        weighted += np.bincount(label, weights=weight, minlength=num_classes)
        for name in spec.numeric:
            moments[name].update(np.asarray(features[name]), weight)
        for name in spec.categorical:
            values, counts = np.unique(np.asarray(features[name]), return_counts=True)
            counters[name].update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    if rows == 0:
        raise PipelineInputError(
            f"{description} has zero rows; nothing to train on (check the source table and, "
            "with downsampling, the keep rates)"
        )
    vocabularies = _vocabularies(counters, description, max_vocabulary, min_count)
    truncated = {}
    for name, counter in counters.items():
        kept = {t.encode("utf-8") for t in vocabularies[name]}
        truncated[name] = int(sum(v for k, v in counter.items() if k not in kept))
    return FeatureStats(
        rows=rows,
        numeric=_numeric_stats(moments, description),
        vocabularies=vocabularies,
        class_counts=tuple(int(c) for c in class_counts),
        weighted_class_counts=tuple(float(c) for c in weighted),
        truncated=truncated,
    )


def _numeric_stats(moments: Mapping[str, _Moments], description: str) -> dict[str, NumericStats]:
    out = {}
    for name, m in moments.items():
        if m.non_finite:
            raise PipelineInputError(
                f"numeric column {name!r} of {description} holds {m.non_finite} infinite "
                "value(s); replace them (or NULL them) in SQL"
            )
        if m.present == 0 or m.weight <= 0:
            raise PipelineInputError(
                f"feature column {name!r} of {description} is NULL in all {m.missing} rows; "
                "drop it from the feature config (list it under 'ignored')"
            )
        variance = max(m.m2 / m.weight, 0.0)
        skewness, kurtosis = m.shape()
        out[name] = NumericStats(
            mean=float(m.mean),
            variance=float(variance),
            present=m.present,
            missing=m.missing,
            quantiles=m.sketch.quantiles(),
            skewness=float(skewness),
            excess_kurtosis=float(kurtosis),
        )
        if not math.isfinite(out[name].variance):
            raise PipelineInputError(f"numeric column {name!r} of {description} overflows float64")
    return out


def _vocabularies(
    counters: Mapping[str, collections.Counter],
    description: str,
    max_vocabulary: int,
    min_count: int,
) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, counter in counters.items():
        tokens = {k.decode("utf-8", "replace"): v for k, v in counter.items()}
        if set(tokens) <= {MISSING_CATEGORY}:
            raise PipelineInputError(
                f"feature column {name!r} of {description} is NULL (or empty) in all "
                f"{sum(tokens.values())} rows; drop it from the feature config "
                "(list it under 'ignored')"
            )
        ranked = sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0]))
        usable = (t for t, c in ranked if c >= min_count and is_lookup_token(t))
        out[name] = tuple(usable)[:max_vocabulary]
    return out


def is_lookup_token(token: str) -> bool:
    r"""Whether ``token`` can be a ``StringLookup`` vocabulary entry exactly as it is.

    Keras turns the vocabulary into a numpy string array, which drops trailing NUL characters
    (``"a\x00"`` would become ``"a"``, ``"\x00"`` a second ``""``). Such values are left out of
    the vocabulary, so the training feed and the served model both map them to the
    out-of-vocabulary id (counted in :attr:`FeatureStats.truncated`).
    """
    return not token.endswith("\x00")


def class_counts_text(classes: Sequence[str], counts: Sequence[float]) -> str:
    """``"a=10, b=3"`` for messages."""
    return ", ".join(f"{c}={n:g}" for c, n in zip(classes, counts, strict=True))
