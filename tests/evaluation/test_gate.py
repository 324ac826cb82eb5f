"""The gate's rule, its boundaries and its errors."""

from __future__ import annotations

import math

import pytest

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.evaluation.gate import baseline_tolerance, decide

CHALLENGER = {
    "macro_f1": 0.70,
    "pr_auc": 0.40,
    "log_loss": 0.3,
    "per_class": {"ok": {"f1": 0.9}, "fraud": {"f1": 0.55}},
}


def test_no_champion_passes_on_minimum_alone():
    d = decide(CHALLENGER, None, min_value=0.5)
    assert d.passed and "no champion" in d.reason and d.value == 0.70
    assert decide(CHALLENGER, {}, min_value=0.5).passed


def test_below_minimum_fails_even_without_champion():
    d = decide(CHALLENGER, None, min_value=0.75)
    assert not d.passed
    assert d.reason == "macro_f1 0.7000 is below the minimum 0.7500"


@pytest.mark.parametrize(
    ("champion", "tolerance", "passed"),
    [
        (0.69, 0.0, True),  # better
        (0.70, 0.0, True),  # equal counts as not worse
        (0.72, 0.0, False),  # worse
        (0.72, 0.02, True),  # worse, but within the tolerance (boundary included)
        (0.80, 0.05, False),  # worse beyond the tolerance
    ],
)
def test_champion_comparison(champion, tolerance, passed):
    d = decide(CHALLENGER, {"macro_f1": champion}, min_value=0.5, tolerance=tolerance)
    assert d.passed is passed
    assert d.champion_value == champion
    assert f"{champion:.4f}" in d.reason


def test_other_and_nested_metrics():
    assert not decide(CHALLENGER, {"pr_auc": 0.5}, metric="pr_auc").passed
    d = decide(CHALLENGER, {"per_class": {"fraud": {"f1": 0.5}}}, "per_class.fraud.f1")
    assert d.passed and d.value == 0.55


def test_champion_without_the_metric_falls_back_to_minimum():
    d = decide(CHALLENGER, {"accuracy": 0.99}, min_value=0.6)
    assert d.passed and "champion has no macro_f1" in d.reason


def test_null_or_nan_challenger_value_fails():
    assert not decide({"macro_f1": None}, None).passed
    assert not decide({"macro_f1": math.nan}, None).passed


def test_bad_settings_are_named():
    with pytest.raises(PipelineInputError, match="'macro_f2' is not in.*macro_f1, pr_auc"):
        decide(CHALLENGER, None, metric="macro_f2")
    with pytest.raises(PipelineInputError, match="lower-is-better"):
        decide(CHALLENGER, None, metric="log_loss")
    with pytest.raises(PipelineInputError, match="tolerance"):
        decide(CHALLENGER, None, tolerance=-0.1)
    with pytest.raises(PipelineInputError, match="baseline_min_tolerance"):
        decide(CHALLENGER, None, baseline_min_tolerance=math.nan)


def _with_baseline(value, baseline, supports):
    return {
        "macro_f1": value,
        "per_class": {f"c{i}": {"f1": 0.5, "support": n} for i, n in enumerate(supports)},
        "baselines": {"prior": {"macro_f1": 0.1}, "logistic_regression": {"macro_f1": baseline}},
    }


def test_baseline_tolerance_is_two_binomial_standard_errors_with_a_floor():
    assert baseline_tolerance(0.97, 7) == pytest.approx(2 * math.sqrt(0.97 * 0.03 / 7))  # iris
    assert baseline_tolerance(0.97, 7) == pytest.approx(0.129, abs=1e-3)
    assert baseline_tolerance(0.58, 78) == pytest.approx(0.112, abs=1e-3)  # lending_club-sized
    assert baseline_tolerance(0.9, 5000) == 0.02  # a big test split: the floor
    assert baseline_tolerance(0.9, 5000, min_tolerance=0.0) == pytest.approx(0.00849, abs=1e-5)
    assert baseline_tolerance(0.9, 0) == 0.02


@pytest.mark.parametrize(
    ("value", "supports", "passed"),
    [
        (0.685, [9000, 2500], True),  # within the 0.02 floor (2 SE = 0.018 here)
        (0.680, [9000, 2500], True),  # on the boundary: not below
        (0.670, [9000, 2500], False),  # below the baseline by more than the tolerance
        (0.620, [900, 50], True),  # small test split: tolerance 2 sqrt(.21 / 50) = 0.130
        (0.560, [900, 50], False),
    ],
)
def test_gate_rejects_below_the_logistic_baseline_by_more_than_the_tolerance(
    value, supports, passed
):
    d = decide(_with_baseline(value, 0.70, supports), None, min_value=0.5)
    assert d.passed is passed
    assert d.baseline_value == 0.70
    assert d.baseline_tolerance == pytest.approx(
        max(0.02, 2 * math.sqrt(0.7 * 0.3 / min(supports)))
    )
    expected = "below the logistic-regression baseline's 0.7000" if not passed else "logistic"
    assert expected in d.reason
    # The check is an option: off, only the minimum and the champion decide.
    assert decide(_with_baseline(value, 0.70, supports), None, baseline_check=False).passed


def test_baseline_check_runs_before_the_champion_and_is_skipped_without_a_baseline():
    challenger = _with_baseline(0.60, 0.70, [9000, 2500])
    d = decide(challenger, {"macro_f1": 0.50}, min_value=0.5)
    assert not d.passed and d.champion_value is None and "baseline" in d.reason
    challenger.pop("baselines")
    d = decide(challenger, {"macro_f1": 0.50}, min_value=0.5)
    assert d.passed and "no logistic baseline in the metrics" in d.reason
