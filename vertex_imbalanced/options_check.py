"""One-pass checks of option values: every problem found, one line each, before anything runs.

Entry points (``run_local.py``, ``submit.py``) collect the problems of all their options with
these small checks into one :class:`Problems` list and raise it once
(:class:`~vertex_imbalanced.errors.InputProblemsError`), so a user fixes everything in one go
instead of meeting one error per run. Each check returns the problem line, or None when the
value is fine; a line starts with the option's name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from vertex_imbalanced.errors import InputProblemsError, PipelineInputError

T = TypeVar("T")


class Problems:
    """Problem lines collected over one pass."""

    def __init__(self) -> None:
        """Start with no problems."""
        self.lines: list[str] = []

    def add(self, line: str | None) -> None:
        """Add a line (None: nothing to add)."""
        if line:
            self.lines.append(line)

    def extend(self, lines: Iterable[str | None]) -> None:
        """Add several lines."""
        for line in lines:
            self.add(line)

    def attempt(self, option: str, check: Callable[[], T]) -> T | None:
        """Run ``check``; a :class:`PipelineInputError` it raises becomes a problem line.

        Returns:
            What ``check`` returned, or None when it raised.
        """
        try:
            return check()
        except PipelineInputError as err:
            text = str(err)
            self.add(
                text if text.startswith(option) or f" {option} " in text else f"{option}: {text}"
            )
            return None

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        """Raise every problem at once.

        Raises:
            InputProblemsError: there is at least one problem (``.problems`` holds the lines).
        """
        if self.lines:
            raise InputProblemsError(self.lines)


def finite_number(
    option: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> str | None:
    """A number that must be finite (not NaN or infinite) and within bounds.

    Args:
        option: the option's name, e.g. ``--min-metric``.
        value: the value given (None: not given, fine).
        minimum: smallest allowed value (inclusive).
        maximum: largest allowed value (inclusive).
        above: the value must be strictly greater than this.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{option}: {value!r} is not a number"
    if not math.isfinite(value):
        return f"{option}: {value} is not a finite number"
    if minimum is not None and value < minimum:
        return f"{option}: {value} is below the minimum {minimum}"
    if maximum is not None and value > maximum:
        return f"{option}: {value} is above the maximum {maximum}"
    if above is not None and not value > above:
        return f"{option}: {value} must be greater than {above}"
    return None


def parse_number(option: str, text: str | None, problems: Problems) -> float | None:
    """``text`` as a finite float; a problem line (and None) if it is not one."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.add(f"{option}: {text!r} is not a number")
        return None
    problems.add(finite_number(option, value))
    return value if math.isfinite(value) else None


def int_list(option: str, text: str | None, problems: Problems) -> tuple[int, ...] | None:
    """``"64,32"`` -> ``(64, 32)``; every item that is not a positive integer is a problem."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if not re.fullmatch(r"[0-9]+", item) or int(item) == 0]
    if bad or not items:
        problems.add(
            f"{option}: {text!r} has item(s) {bad} that are not positive integers (e.g. 64,32)"
        )
        return None
    return tuple(int(item) for item in items)


def name_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None or blank -> None."""
    items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
    return items or None


def split_ratios(option: str, values: Sequence[float]) -> str | None:
    """Three positive finite shares (train, validation, test) summing to 1."""
    if len(values) != 3:
        return f"{option}: needs three numbers (train, validation, test), got {len(values)}"
    for value in values:
        problem = finite_number(option, value, above=0.0)
        if problem:
            return problem
    if not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        return f"{option}: {tuple(values)} sums to {sum(values):g}, not 1"
    return None


def parse_ratios(option: str, text: str | None, problems: Problems) -> tuple[float, ...] | None:
    """``"0.8,0.1,0.1"`` -> the three shares; problems for non-numbers and bad shares."""
    if text is None:
        return None
    values = []
    for item in text.split(","):
        value = parse_number(option, item.strip(), problems)
        if value is None:
            return None
        values.append(value)
    problem = split_ratios(option, values)
    problems.add(problem)
    return None if problem else tuple(values)


def matches(option: str, value: str | None, check: Callable[[str], Any]) -> str | None:
    """Run a validator that raises :class:`PipelineInputError`; its message as the problem."""
    if value is None:
        return None
    try:
        check(value)
    except PipelineInputError as err:
        return f"{option}: {err}"
    return None


def one_of(option: str, value: str, allowed: Sequence[str]) -> str | None:
    """A value from a fixed list."""
    if value in allowed:
        return None
    return f"{option}: {value!r} is not one of {', '.join(allowed)}"


def hyperparameter_problems(values: dict[str, Any], options: dict[str, str]) -> list[str]:
    """Each hyperparameter checked alone against ``Hyperparameters``' own rules.

    Args:
        values: field name -> value (only those given).
        options: field name -> the option that set it (for the problem line).
    """
    from vertex_imbalanced.config import Hyperparameters

    lines = []
    for name, value in values.items():
        option = options.get(name, name)
        if isinstance(value, float) and not math.isfinite(value):
            lines.append(f"{option}: {value} is not a finite number")
            continue
        try:
            Hyperparameters(**{name: value})
        except PipelineInputError as err:
            lines.append(f"{option}: {str(err).split(' (got ')[0]} (got {value!r})")
        except (TypeError, ValueError) as err:
            lines.append(f"{option}: {value!r} is not valid ({err})")
    return lines
