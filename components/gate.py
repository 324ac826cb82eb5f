"""KFP component: decide whether the challenger may be registered."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def gate(
    challenger_metrics: Input[Artifact],
    champion_metrics: str = "",
    metric: str = "macro_f1",
    min_value: float = 0.0,
    tolerance: float = 0.0,
    baseline_check: bool = True,
    baseline_min_tolerance: float = 0.02,
) -> NamedTuple("GateOutputs", [("passed", bool), ("reason", str)]):
    """Pass when the metric clears the minimum, the logistic baseline and the champion.

    ``metric`` >= ``min_value``; macro F1 not below the logistic baseline's by more than the
    baseline tolerance; ``metric`` >= champion's value - ``tolerance``.

    Args:
        challenger_metrics: the evaluate step's ``evaluation`` artifact (a directory holding
            ``metrics.json``) or a metrics JSON file.
        champion_metrics: the champion's metrics dict as JSON from the registry lookup;
            empty (or ``null`` / ``{}``) when there is no champion.
        metric: higher-is-better metric name (dotted for nested values).
        min_value: minimum the challenger must reach.
        tolerance: how far below the champion the challenger may be.
        baseline_check: reject a challenger whose macro F1 is below the logistic-regression
            baseline's (same test rows) by more than ``max(baseline_min_tolerance,
            2 * sqrt(F (1 - F) / n_min))`` (F: the baseline's macro F1, n_min: the smallest
            test class support); see :mod:`vertex_imbalanced.evaluation.gate`.
        baseline_min_tolerance: the floor of that tolerance.

    Returns:
        ``passed`` for ``dsl.If`` and a human-readable ``reason``.
    """
    from collections import namedtuple

    from vertex_imbalanced.evaluation.gate import decide, load_metrics, parse_champion

    decision = decide(
        load_metrics(challenger_metrics.path),
        parse_champion(champion_metrics),
        metric=metric,
        min_value=min_value,
        tolerance=tolerance,
        baseline_check=baseline_check,
        baseline_min_tolerance=baseline_min_tolerance,
    )
    print(("PASSED: " if decision.passed else "REJECTED: ") + decision.reason)
    return namedtuple("GateOutputs", ["passed", "reason"])(decision.passed, decision.reason)
