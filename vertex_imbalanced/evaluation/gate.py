"""The registration gate: is the challenger good enough, and not worse than the champion?

Rule: ``value >= min_value`` and, when a champion with that metric exists,
``value >= champion_value - tolerance``. The champion's metrics come from the registry lookup
that runs before the gate (never from the challenger itself).
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


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Outcome of :func:`decide`.

    Attributes:
        passed: register the challenger.
        reason: one human-readable sentence with the numbers compared.
        metric: the metric compared.
        value: the challenger's value (None if it has none).
        champion_value: the champion's value (None without a comparable champion).
    """

    passed: bool
    reason: str
    metric: str = ""
    value: float | None = None
    champion_value: float | None = None


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


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    metric: str = "macro_f1",
    min_value: float = 0.0,
    tolerance: float = 0.0,
) -> GateDecision:
    """Decide whether to register the challenger.

    Args:
        challenger: the new model's ``metrics.json`` dict.
        champion: the current champion's metrics dict, or None / empty when there is none.
        metric: higher-is-better metric name (dotted for nested, e.g.
            ``test_at_best_threshold.f1``).
        min_value: the challenger must reach at least this value.
        tolerance: how far below the champion the challenger may be (>= 0).

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
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise PipelineInputError(f"tolerance must be a finite number >= 0, got {tolerance}")
    try:
        value = metric_value(challenger, metric)
    except KeyError:
        raise PipelineInputError(
            f"gate metric {metric!r} is not in the challenger's metrics; "
            f"available: {', '.join(_scalar_names(challenger))}"
        ) from None
    passed, reason, champ = _judge(metric, value, champion, min_value, tolerance)
    return GateDecision(passed, reason, metric, value, champ)


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
