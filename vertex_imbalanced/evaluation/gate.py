"""The registration gate: is the challenger good enough, better than a baseline, not worse than the champion?

Rule, in this order:

1. ``value >= min_value`` (``value``: the gate metric at the model's operating point);
2. with ``baseline_check`` (on by default): the challenger's ``macro_f1`` must not fall below the
   logistic-regression baseline's ``macro_f1`` (``metrics.json["baselines"]``, same test rows)
   by more than :func:`baseline_tolerance` ``= max(baseline_min_tolerance, 2 * sqrt(F (1 - F) /
   n_min))``: two binomial standard errors of an F1 near the baseline's ``F`` measured on
   ``n_min`` rows, where ``n_min`` is the smallest non-zero class support of the test split
   (the class whose F1 is noisiest), floored at 0.02. On iris (~7 test rows a class, F = 0.97)
   that is 0.13; on lending_club's ~80 rare rows (F = 0.58) 0.11; with 5,000 rows of the rarest
   class it is the 0.02 floor. Metrics without a logistic baseline skip this check (said in the
   reason);
3. when a champion with the metric exists: ``value >= champion_value - tolerance``. The
   champion's metrics come from the registry lookup that runs before the gate (never from the
   challenger itself).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vertex_imbalanced.artifacts import metrics_path
from vertex_imbalanced.errors import PipelineInputError

LOWER_IS_BETTER = frozenset({"log_loss"})
"""Metrics the gate refuses: its rule assumes that higher is better."""
BASELINE = "logistic_regression"
"""The baseline of ``metrics.json["baselines"]`` the gate compares with."""
BASELINE_METRIC = "macro_f1"
"""The metric compared with the baseline (at the operating point of each)."""
DEFAULT_BASELINE_MIN_TOLERANCE = 0.02
"""Floor of the baseline tolerance (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Outcome of :func:`decide`.

    Attributes:
        passed: register the challenger.
        reason: one human-readable sentence with the numbers compared.
        metric: the metric compared.
        value: the challenger's value (None if it has none).
        champion_value: the champion's value (None without a comparable champion).
        baseline_value: the logistic baseline's macro F1 (None when not compared).
        baseline_tolerance: how far below it the challenger's macro F1 could be.
    """

    passed: bool
    reason: str
    metric: str = ""
    value: float | None = None
    champion_value: float | None = None
    baseline_value: float | None = None
    baseline_tolerance: float | None = None


def metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """Read a metric by name; dotted names reach nested dicts (``per_class.fraud.recall``).

    Returns:
        The value as float, or None when it is present but null / NaN.

    Raises:
        KeyError: the metric (or a part of its path) is not in ``metrics``.
    """
    node: Any = metrics
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(part)
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise PipelineInputError(f"metric {metric!r} is not a number: {node!r}")
    value = float(node)
    return value if math.isfinite(value) else None


def _scalar_names(metrics: Mapping[str, Any]) -> list[str]:
    return sorted(
        k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    )


def baseline_tolerance(
    baseline_f1: float, n_min: int, min_tolerance: float = DEFAULT_BASELINE_MIN_TOLERANCE
) -> float:
    """``max(min_tolerance, 2 * sqrt(F (1 - F) / n_min))``: two binomial standard errors.

    Args:
        baseline_f1: the baseline's macro F1 ``F`` (clipped to [0, 1]).
        n_min: the smallest non-zero class support of the test split.
        min_tolerance: the floor.

    Returns:
        The tolerance (``min_tolerance`` when ``n_min`` < 1).
    """
    f = min(max(float(baseline_f1), 0.0), 1.0)
    if n_min < 1:
        return float(min_tolerance)
    return max(float(min_tolerance), 2.0 * math.sqrt(f * (1.0 - f) / n_min))


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    metric: str = "macro_f1",
    min_value: float = 0.0,
    tolerance: float = 0.0,
    *,
    baseline_check: bool = True,
    baseline_min_tolerance: float = DEFAULT_BASELINE_MIN_TOLERANCE,
) -> GateDecision:
    """Decide whether to register the challenger.

    Args:
        challenger: the new model's ``metrics.json`` dict.
        champion: the current champion's metrics dict, or None / empty when there is none.
        metric: higher-is-better metric name (dotted for nested, e.g. ``per_class.fraud.f1``).
        min_value: the challenger must reach at least this value.
        tolerance: how far below the champion the challenger may be (>= 0).
        baseline_check: reject a challenger whose macro F1 is below the logistic baseline's by
            more than :func:`baseline_tolerance`.
        baseline_min_tolerance: the floor of that tolerance (>= 0).

    Returns:
        The decision with a reason naming the numbers.

    Raises:
        PipelineInputError: bad settings, or a metric the challenger's metrics do not contain.
    """
    if metric in LOWER_IS_BETTER:
        raise PipelineInputError(
            f"gate metric {metric!r} is lower-is-better; use e.g. macro_f1, weighted_f1, pr_auc"
        )
    if not math.isfinite(min_value):
        raise PipelineInputError(f"min_value must be a finite number, got {min_value}")
    for name, number in (
        ("tolerance", tolerance),
        ("baseline_min_tolerance", baseline_min_tolerance),
    ):
        if not (math.isfinite(number) and number >= 0):
            raise PipelineInputError(f"{name} must be a finite number >= 0, got {number}")
    try:
        value = metric_value(challenger, metric)
    except KeyError:
        raise PipelineInputError(
            f"gate metric {metric!r} is not in the challenger's metrics; "
            f"available: {', '.join(_scalar_names(challenger))}"
        ) from None
    verdict = None
    if baseline_check and value is not None and value >= min_value:
        verdict = _against_baseline(challenger, baseline_min_tolerance)
        if verdict is not None and not verdict[0]:
            return GateDecision(False, verdict[1], metric, value, None, *verdict[2:])
    passed, reason, champ = _judge(metric, value, champion, min_value, tolerance)
    extra: tuple[float | None, float | None] = (None, None)
    if verdict is not None:
        reason, extra = f"{reason}; {verdict[1]}", verdict[2:]
    elif baseline_check and value is not None and value >= min_value:
        reason += "; no logistic baseline in the metrics, so no baseline check"
    return GateDecision(passed, reason, metric, value, champ, *extra)


def _judge(
    metric: str,
    value: float | None,
    champion: Mapping[str, Any] | None,
    min_value: float,
    tolerance: float,
) -> tuple[bool, str, float | None]:
    """``(passed, reason, champion's value)``: the one place the gate's rule is written.

    The champion is read only once the challenger has reached the minimum.
    """
    if value is None:
        return False, f"challenger has no value for {metric} (null/NaN)", None
    if value < min_value:
        return False, f"{metric} {value:.4f} is below the minimum {min_value:.4f}", None
    minimum = f"{metric} {value:.4f} >= minimum {min_value:.4f}"
    if not champion:
        return True, f"{minimum}; no champion to compare with", None
    try:
        champ = metric_value(champion, metric)
    except KeyError:
        champ = None
    if champ is None:
        return True, f"{minimum}; the champion has no {metric}, so only the minimum applies", None
    floor = champ - tolerance
    if value < floor:
        reason = (
            f"{metric} {value:.4f} is below the champion's {champ:.4f} minus tolerance "
            f"{tolerance:.4f} (= {floor:.4f})"
        )
        return False, reason, champ
    return True, f"{minimum} and >= champion {champ:.4f} minus tolerance {tolerance:.4f}", champ


def _against_baseline(
    challenger: Mapping[str, Any], min_tolerance: float
) -> tuple[bool, str, float, float] | None:
    """``(passed, reason, baseline F1, tolerance)``; None without a logistic baseline."""
    block = (challenger.get("baselines") or {}).get(BASELINE) or {}
    base = block.get(BASELINE_METRIC)
    value = challenger.get(BASELINE_METRIC)
    if not isinstance(base, int | float) or not isinstance(value, int | float):
        return None
    supports = [int(row.get("support", 0)) for row in (challenger.get("per_class") or {}).values()]
    n_min = min((n for n in supports if n > 0), default=0)
    tol = baseline_tolerance(base, n_min, min_tolerance)
    floor = base - tol
    if value < floor:
        return (
            False,
            f"{BASELINE_METRIC} {value:.4f} is below the logistic-regression baseline's "
            f"{base:.4f} minus tolerance {tol:.4f} (= {floor:.4f}; n_min {n_min} test rows)",
            float(base),
            tol,
        )
    return (
        True,
        f"{BASELINE_METRIC} {value:.4f} >= logistic baseline {base:.4f} minus tolerance {tol:.4f}",
        float(base),
        tol,
    )


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics JSON file, or ``metrics.json`` inside a directory (the evaluate artifact).

    Raises:
        PipelineInputError: the file is missing or is not a JSON object.
    """
    file = metrics_path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineInputError(f"cannot read challenger metrics {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineInputError(f"challenger metrics {file} is not a JSON object")
    return data


def parse_champion(text: str | None) -> dict[str, Any] | None:
    """Champion metrics from the lookup step's JSON string; None for '', 'null' or '{}'.

    Raises:
        PipelineInputError: the text is not JSON or not an object.
    """
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PipelineInputError(f"champion metrics are not valid JSON: {text[:200]!r}") from exc
    if data is None:
        return None
    if not isinstance(data, dict):
        raise PipelineInputError(f"champion metrics must be a JSON object, got {text[:200]!r}")
    return data or None
