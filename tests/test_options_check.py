"""options_check: one line per bad value, each naming its option (issue 11 case 9)."""

import math

import pytest

from vertex_imbalanced.errors import InputProblemsError, PipelineInputError
from vertex_imbalanced.options_check import (
    Problems,
    finite_number,
    hyperparameter_problems,
    int_list,
    matches,
    parse_ratios,
    split_ratios,
)
from vertex_imbalanced.registry.local import validate_model_name


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_named(value):
    assert finite_number("--min-metric", value) == f"--min-metric: {value} is not a finite number"


def test_bounds_and_types():
    assert finite_number("--min-metric", 0.5, minimum=0, maximum=1) is None
    assert (
        finite_number("--min-metric", 1.5, maximum=1) == "--min-metric: 1.5 is above the maximum 1"
    )
    assert (
        finite_number("--tolerance", -0.1, minimum=0) == "--tolerance: -0.1 is below the minimum 0"
    )
    assert finite_number("--x", 0.0, above=0) == "--x: 0.0 must be greater than 0"
    assert finite_number("--x", "3") == "--x: '3' is not a number"
    assert finite_number("--x", True) == "--x: True is not a number"
    assert finite_number("--x", None) is None


def test_int_lists_name_every_bad_item():
    problems = Problems()
    assert int_list("--hidden-units", "64, 32", problems) == (64, 32)
    assert int_list("--hidden-units", "64,x,0,", problems) is None
    assert problems.lines == [
        "--hidden-units: '64,x,0,' has item(s) ['x', '0', ''] that are not positive integers "
        "(e.g. 64,32)"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0.8,0.1,0.1", None),
        ("0.8,0.2,0.1", "--split-ratios: (0.8, 0.2, 0.1) sums to 1.1, not 1"),
        ("0.8,0.2", "--split-ratios: needs three numbers (train, validation, test), got 2"),
        ("1,0,0", "--split-ratios: 0.0 must be greater than 0.0"),
        ("nan,0.5,0.5", "--split-ratios: nan is not a finite number"),
        ("a,0.5,0.5", "--split-ratios: 'a' is not a number"),
    ],
)
def test_split_ratios(text, problem):
    problems = Problems()
    parse_ratios("--split-ratios", text, problems)
    assert problems.lines == ([problem] if problem else [])


def test_split_ratios_of_numbers():
    assert split_ratios("r", (0.7, 0.2, 0.1)) is None


def test_patterns_and_hyperparameters():
    assert matches("--model-name", "churn-v2", validate_model_name) is None
    assert matches("--model-name", "bad name!", validate_model_name).startswith(
        "--model-name: invalid model name 'bad name!'"
    )
    lines = hyperparameter_problems(
        {"epochs": 0, "learning_rate": math.nan, "batch_size": 32},
        {"epochs": "--epochs", "learning_rate": "--learning-rate"},
    )
    assert lines == [
        "--epochs: epochs must be > 0 (got 0)",
        "--learning-rate: nan is not a finite number",
    ]


def test_problems_are_raised_together():
    problems = Problems()
    problems.add(None)
    problems.raise_if_any()  # nothing to raise
    problems.add("--a: bad")
    problems.attempt("--b", lambda: (_ for _ in ()).throw(PipelineInputError("worse")))
    assert problems.attempt("--c", lambda: 3) == 3
    with pytest.raises(InputProblemsError) as raised:
        problems.raise_if_any()
    assert raised.value.problems == ("--a: bad", "--b: worse")
    assert str(raised.value) == "2 problems found before anything ran:\n  --a: bad\n  --b: worse"
