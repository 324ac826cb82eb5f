"""Per-class keep rates and weights from the training split's class counts.

Modes (``ImbalanceConfig.mode``):

- ``downsample_upweight``: classes above the target are kept at rate ``r < 1`` and every kept
  example weighs ``1 / r``, so weighted class totals equal the original counts (in expectation).
- ``downsample_only``: the same sample with weight 1 (diagnostic: shows what upweighting fixes).
- ``class_weight``: everything kept; weight ``n / (K * n_c)`` (inverse frequency, mean 1 over
  examples, K = classes present).
- ``none``: everything kept, weight 1.

The target: at most ``max_ratio`` times the smallest class, and/or at most ``target_share`` of
the kept rows for any one class; when both are set the smaller keep rate wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vertex_imbalanced.config import DOWNSAMPLING_MODES, ImbalanceConfig


@dataclasses.dataclass(frozen=True)
class ImbalancePlan:
    """What to do per class, before any table is written."""

    mode: str
    keep_rates: dict[str, float]
    weights: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ImbalanceReport:
    """What was done to the training split (counts measured on the written table)."""

    mode: str
    original_counts: dict[str, int]
    keep_rates: dict[str, float]
    kept_counts: dict[str, int]
    weighted_counts: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImbalanceReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mode=data["mode"],
            original_counts={k: int(v) for k, v in data["original_counts"].items()},
            keep_rates={k: float(v) for k, v in data["keep_rates"].items()},
            kept_counts={k: int(v) for k, v in data["kept_counts"].items()},
            weighted_counts={k: float(v) for k, v in data["weighted_counts"].items()},
        )


def _share_cap(counts: list[int], share: float) -> float:
    """Largest per-class cap T with T / sum(min(n, T)) <= share (the equal-counts cap if none)."""

    def largest_share(cap: float) -> float:
        return cap / sum(min(n, cap) for n in counts)

    lo, hi = float(min(counts)), float(max(counts))
    if largest_share(hi) <= share:
        return hi
    if largest_share(lo) > share:  # unreachable share (< 1/K): make every class equal
        return lo
    for _ in range(100):  # largest_share is non-decreasing in the cap: bisect
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if largest_share(mid) <= share else (lo, mid)
    return lo


def keep_rates(counts: Mapping[str, int], config: ImbalanceConfig) -> dict[str, float]:
    """Keep rate per class: ``cap / n`` for classes above the cap, 1 for the rest.

    Args:
        counts: training rows per class (classes with 0 rows are kept at rate 1).
        config: the target (``max_ratio`` and/or ``target_share``).

    Returns:
        Class -> keep rate in (0, 1].
    """
    present = [n for n in counts.values() if n > 0]
    cap = float("inf")
    if present and config.max_ratio is not None:
        cap = min(cap, config.max_ratio * min(present))
    if present and config.target_share is not None:
        cap = min(cap, _share_cap(present, config.target_share))
    return {c: (cap / n if n > cap else 1.0) for c, n in counts.items()}


def plan(counts: Mapping[str, int], config: ImbalanceConfig) -> ImbalancePlan:
    """Keep rates and per-class weights for ``config.mode``.

    Args:
        counts: training rows per class, before downsampling.
        config: imbalance settings.

    Returns:
        The plan; weights apply to every kept row of the class.
    """
    ones = {c: 1.0 for c in counts}
    if config.mode in DOWNSAMPLING_MODES:
        rates = keep_rates(counts, config)
        if config.mode == "downsample_only":
            return ImbalancePlan(config.mode, rates, dict(ones))
        return ImbalancePlan(config.mode, rates, {c: 1.0 / r for c, r in rates.items()})
    if config.mode == "class_weight":
        total = sum(counts.values())
        present = sum(1 for n in counts.values() if n > 0)
        weights = {c: (total / (present * n) if n > 0 else 1.0) for c, n in counts.items()}
        return ImbalancePlan(config.mode, dict(ones), weights)
    return ImbalancePlan(config.mode, dict(ones), dict(ones))
