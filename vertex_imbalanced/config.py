"""Typed configuration built once and passed down (feature spec, imbalance, hyperparameters)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.identifiers import validate_column

WEIGHT_COLUMN = "sample_weight"
"""Column added by sql/downsample.sql holding the per-example training weight."""

ImbalanceMode = Literal["downsample_upweight", "class_weight", "none", "downsample_only"]
"""How the training split is rebalanced (``vertex_imbalanced.warehouse.rebalance`` has the rules)."""
IMBALANCE_MODES: tuple[str, ...] = get_args(ImbalanceMode)
"""Every imbalance mode, in documentation order: the one list for CLIs, configs and checks."""
DEFAULT_IMBALANCE_MODE: ImbalanceMode = "downsample_upweight"
DOWNSAMPLING_MODES: tuple[str, ...] = ("downsample_upweight", "downsample_only")
"""The modes that drop rows of the large classes (keep rates below 1)."""

LabelPolicy = Literal["error", "skip"]
"""What a NULL label does: stop the run naming the rows (``error``) or drop and count them."""
LABEL_POLICIES: tuple[str, ...] = get_args(LabelPolicy)
DEFAULT_NA_VALUES: tuple[str, ...] = ("", "NA", "N/A", "NaN", "null", "NULL")
"""Text read as a missing value in text files (R's and pandas' markers); the empty field always."""


def _as_json_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-safe dict (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def _check_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Reject keys that are not fields of the dataclass ``cls``, naming them."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise PipelineInputError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def class_name(value: Any) -> str:
    """A label value as a class name: text as is, integers in decimal, booleans ``true``/``false``.

    The spelling BigQuery's and DuckDB's ``CAST(label AS STRING)`` give, so a declared class
    list (YAML ``[false, true]`` or ``[0, 1]``) matches the values read from the table.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _na_values(value: Any) -> tuple[str, ...]:
    """Missing-value markers as a tuple of text; ``"NA, N/A"`` splits at commas."""
    if value is None:
        return DEFAULT_NA_VALUES
    if isinstance(value, str):
        value = value.split(",")
    return tuple(dict.fromkeys(str(v).strip() for v in value))


def _refuse_case_twins(names: tuple[str | None, ...]) -> None:
    """Refuse two different names that are equal ignoring case (one column to the engines)."""
    seen: dict[str, str] = {}
    for name in names:
        if name is None:
            continue
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise PipelineInputError(
                f"columns {other!r} and {name!r} differ only in case; BigQuery and DuckDB "
                "treat them as one column: rename one"
            )


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Which columns play which role.

    Attributes:
        label: label column (INT64 class ids 0..N-1, or STRING/INT64 mapped through ``classes``).
        numeric: numeric feature columns (INT64, FLOAT64, BOOL, DATE, TIMESTAMP).
        categorical: categorical feature columns (STRING or INT64), one-hot encoded in the model.
        key: unique row key; drives the deterministic split/downsampling and names bad rows.
        classes: ordered class names; label value ``classes[i]`` becomes class id ``i``.
            When empty the label must already be integers 0..N-1.
        ignored: columns present in the table but not used.
        weight: per-example weight column (None: every example weighs 1).
        label_policy: ``error`` (a NULL label stops the run, naming the rows) or ``skip``
            (rows with a NULL label are left out of every split and counted).
        na_values: text read as missing when a text file (CSV) is imported; the empty field is
            always missing. Typed tables (BigQuery, Parquet, DuckDB) keep their own NULLs and
            values: the prepare step counts these markers in STRING columns that hold mostly
            numbers and says how to convert them, but rewrites nothing (batch prediction and
            serving read the same kind of table).
    """

    label: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    key: str | None = None
    classes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    weight: str | None = None
    label_policy: LabelPolicy = "error"
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES

    def __post_init__(self) -> None:
        object.__setattr__(self, "na_values", _na_values(self.na_values))
        if self.label_policy not in LABEL_POLICIES:
            raise PipelineInputError(
                f"label_policy {self.label_policy!r} is not one of {', '.join(LABEL_POLICIES)}"
            )
        object.__setattr__(self, "numeric", _tuple(self.numeric))
        object.__setattr__(self, "categorical", _tuple(self.categorical))
        object.__setattr__(self, "ignored", _tuple(self.ignored))
        object.__setattr__(self, "classes", tuple(class_name(c) for c in _tuple(self.classes)))
        for name in (self.label, *self.numeric, *self.categorical):
            validate_column(name)
        for name in self.ignored:  # never in any SQL: a local file's column BigQuery would refuse
            if not isinstance(name, str) or not name:
                raise PipelineInputError(f"ignored column {name!r} is not a column name")
        for name in (self.key, self.weight):
            if name is not None:
                validate_column(name)
        _refuse_case_twins((self.label, *self.features, self.key, self.weight, *self.ignored))
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise PipelineInputError(f"columns both numeric and categorical: {sorted(overlap)}")
        if self.label in self.features:
            raise PipelineInputError(f"label column {self.label!r} is also listed as a feature")
        if len(set(self.classes)) != len(self.classes):
            raise PipelineInputError(f"duplicate class names in {list(self.classes)}")

    @property
    def features(self) -> tuple[str, ...]:
        """Feature columns in model-input order (numeric first, then categorical)."""
        return (*self.numeric, *self.categorical)

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every column a reader must select: features, label, key, weight (no duplicates)."""
        cols = [*self.features, self.label]
        for extra in (self.key, self.weight):
            if extra is not None and extra not in cols:
                cols.append(extra)
        return tuple(cols)

    def with_weight(self, weight: str | None) -> FeatureSpec:
        """Return a copy that reads the given weight column."""
        return dataclasses.replace(self, weight=weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists)."""
        return _as_json_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Build from a dict, rejecting unknown keys by name."""
        _check_keys(cls, data, "feature config keys")
        if "label" not in data:
            raise PipelineInputError("feature config needs a 'label' column")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Build from a JSON (or YAML) string, as passed through pipeline parameters."""
        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def from_file(cls, path: str | Path) -> FeatureSpec:
        """Load a YAML or JSON feature config file."""
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))

    def to_json(self) -> str:
        """Serialise as JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class ImbalanceConfig:
    """How the training split is rebalanced.

    Attributes:
        mode: ``downsample_upweight`` (default), ``class_weight``, ``none``, ``downsample_only``.
        max_ratio: largest allowed majority:minority ratio after downsampling.
        target_share: alternatively, the largest share any class may keep (0 < share < 1).
            When both are set the stricter (smaller keep rate) wins.
    """

    mode: ImbalanceMode = DEFAULT_IMBALANCE_MODE
    max_ratio: float | None = 10.0
    target_share: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in IMBALANCE_MODES:
            raise PipelineInputError(
                f"unknown imbalance mode {self.mode!r}; choose one of {', '.join(IMBALANCE_MODES)}"
            )
        if self.max_ratio is not None and self.max_ratio < 1:
            raise PipelineInputError(f"max_ratio must be >= 1, got {self.max_ratio}")
        if self.target_share is not None and not 0 < self.target_share < 1:
            raise PipelineInputError(f"target_share must be in (0, 1), got {self.target_share}")


def _matrix(value: Any) -> tuple[tuple[float, ...], ...]:
    """A square matrix of finite numbers as a tuple of rows (PipelineInputError otherwise)."""
    try:
        rows = tuple(tuple(float(v) for v in row) for row in value)
    except (TypeError, ValueError) as exc:
        raise PipelineInputError(f"cost_matrix must be a list of rows of numbers: {exc}") from exc
    if len(rows) < 2 or any(len(r) != len(rows) for r in rows):
        raise PipelineInputError(f"cost_matrix must be square C x C with C >= 2, got {value!r}")
    if not all(math.isfinite(v) for r in rows for v in r):
        raise PipelineInputError(f"cost_matrix must hold finite numbers, got {value!r}")
    return rows


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Model and training hyperparameters.

    ``batch_size``, ``epochs`` and ``early_stopping_patience`` left as None are fitted to the
    number of training rows by :mod:`vertex_imbalanced.training.budget`; a value given wins (and
    a given ``epochs`` is never extended). ``cost_matrix`` (``K[true, predicted]``, C x C), when
    given, makes the served decision the least expected cost instead of the rule searched for
    macro F1 on the validation split (:mod:`vertex_imbalanced.evaluation.decision_rule`).
    """

    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int | None = None
    epochs: int | None = None
    early_stopping_patience: int | None = None
    l1: float = 0.0
    l2: float = 1e-5
    seed: int = 42
    mixed_precision: str | None = None  # None | "mixed_float16" | "mixed_bfloat16"
    steps_per_execution: int = 16  # train steps per tf.function call: less Python per step
    cost_matrix: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        if self.cost_matrix is not None:
            object.__setattr__(self, "cost_matrix", _matrix(self.cost_matrix))
        checks = [
            (self.batch_size is None or self.batch_size > 0, "batch_size must be > 0"),
            (self.epochs is None or self.epochs > 0, "epochs must be > 0"),
            (
                self.early_stopping_patience is None or self.early_stopping_patience > 0,
                "early_stopping_patience must be > 0",
            ),
            (self.steps_per_execution > 0, "steps_per_execution must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.l1 >= 0 and self.l2 >= 0, "l1 and l2 must be >= 0"),
            (all(u > 0 for u in self.hidden_units), "hidden_units must be positive"),
            (
                self.mixed_precision in (None, "mixed_float16", "mixed_bfloat16"),
                "mixed_precision must be None, 'mixed_float16' or 'mixed_bfloat16'",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PipelineInputError(f"{message} (got {self})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        data = _as_json_dict(self)
        if self.cost_matrix is not None:
            data["cost_matrix"] = [list(row) for row in self.cost_matrix]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hyperparameters:
        """Build from a dict, rejecting unknown keys by name."""
        _check_keys(cls, data, "hyperparameters")
        return cls(**dict(data))
