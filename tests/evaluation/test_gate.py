"""The gate's rule, its boundaries and its errors."""

from __future__ import annotations

import math

import pytest

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.evaluation.gate import decide

CHALLENGER = {
    "macro_f1": 0.70,
    "pr_auc": 0.40,
    "log_loss": 0.3,
    "test_at_best_threshold": {"f1": 0.55},
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
    d = decide(CHALLENGER, {"test_at_best_threshold": {"f1": 0.5}}, "test_at_best_threshold.f1")
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
