"""Prior-adjusted probabilities: an optional extra column of the predictions table.

Under label shift the model's posteriors reflect the training prior. With the serving prior
estimated by EM on the run's own predictions (:func:`vertex_imbalanced.monitoring.prior_shift.
estimate_prior`, through :func:`vertex_imbalanced.monitoring.predictions.prediction_summary`,
the monitor's computation) each row's probabilities are re-weighted to that prior::

    adjusted[c] = p[c] * w_c / sum_j p[j] * w_j,   w_c = em_prior[c] / train_prior[c]

Design: the scoring job writes its Parquet parts; publishing loads them into the run's staging
table (:mod:`.output`); when the option is on, the EM prior is computed in SQL on that staging
table (only grouped counts leave the warehouse) and the destination is created from
``sql/adjusted_probabilities.sql`` over it, in the same all-or-nothing publication. The served
decision ``class_id`` is never changed; the EM prior is recorded in the step's metadata and the
table description. The monitor's EM prior of the published table is the same number (same SQL
on the same probabilities).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.engines import Warehouse, load_sql, render
from vertex_imbalanced.warehouse.identifiers import TableRef

ADJUSTED_PROBABILITIES = "adjusted_probabilities"
"""Name of the extra column: LIST<DOUBLE> / ARRAY<FLOAT64> in class-id order."""


def _with_class(item: exp.Expression, c: int) -> exp.Expression:
    """A copy of a 2-class template item for class ``c`` (its OFFSET and its ``@w_*``)."""
    item = copy.deepcopy(item)
    for bracket in item.find_all(exp.Bracket):
        bracket.set("expressions", [exp.Literal.number(c)])
    for param in item.find_all(exp.Parameter):
        if param.name.startswith("w_"):
            param.replace(exp.Parameter(this=exp.var(f"w_{c}")))
    return item


def adjusted_sql(table: TableRef, num_classes: int, probabilities: str = "probabilities") -> str:
    """BigQuery SQL: every column of ``table`` plus :data:`ADJUSTED_PROBABILITIES`.

    Args:
        table: the predictions (staging) table.
        num_classes: number of classes C (length of the probabilities arrays), >= 2.
        probabilities: the probabilities column.

    Returns:
        A SELECT with parameters ``w_0 .. w_{C-1}`` and ``uniform`` (:func:`adjustment_params`).
    """
    sql = render(
        load_sql("adjusted_probabilities"),
        tables={"table": table},
        columns={"probabilities": probabilities, "adjusted": ADJUSTED_PROBABILITIES},
    )
    tree = sqlglot.parse_one(sql, read="bigquery")
    array = tree.expressions[1].this
    template = array.expressions[0]
    array.set("expressions", [_with_class(template, c) for c in range(num_classes)])
    inner = tree.find(exp.Subquery).this
    weighted = next(e for e in inner.expressions if e.alias_or_name == "_weighted_sum")
    term = weighted.this.this  # (p[0] * @w_0) + (p[1] * @w_1): the first product
    total = _with_class(term, 0)
    for c in range(1, num_classes):
        total = exp.Add(this=total, expression=_with_class(term, c))
    weighted.set("this", total)
    return tree.sql(dialect="bigquery", comments=False)


def adjustment_params(
    classes: Sequence[str], train_prior: Mapping[str, float], em_prior: Mapping[str, float]
) -> dict[str, float]:
    """The query parameters of :func:`adjusted_sql`: ``w_c`` and ``uniform``.

    Raises:
        PipelineInputError: a class without a positive training prior.
    """
    total = sum(float(train_prior.get(c, 0.0)) for c in classes)
    params: dict[str, float] = {"uniform": 1.0 / len(classes)}
    for i, c in enumerate(classes):
        share = float(train_prior.get(c, 0.0)) / total if total > 0 else 0.0
        if share <= 0:
            raise PipelineInputError(
                f"class {c!r} has no training prior (classes {list(classes)}, prior "
                f"{dict(train_prior)}): cannot adjust probabilities"
            )
        params[f"w_{i}"] = float(em_prior[c]) / share
    return params


class PriorAdjustment:
    """The option, as publishing uses it: classes and training prior in, SQL and EM prior out.

    Args:
        classes: class names in id order.
        train_prior: class -> share in the training split (``feature_statistics.json``
            ``class_prior``).
    """

    def __init__(self, classes: Sequence[str], train_prior: Mapping[str, float]) -> None:
        missing = [c for c in classes if c not in train_prior]
        if missing or len(classes) < 2:
            raise PipelineInputError(
                f"the training prior {dict(train_prior)} does not cover the model's classes "
                f"{list(classes)}: cannot adjust probabilities"
            )
        self.classes = tuple(classes)
        self.train_prior = {c: float(train_prior[c]) for c in classes}
        self.em_prior: dict[str, float] | None = None
        """The EM serving prior, once :meth:`select` ran."""

    def select(self, warehouse: Warehouse, staging: TableRef) -> tuple[str, dict[str, Any]]:
        """EM prior of the staged predictions, then the SELECT that adds the column.

        Args:
            warehouse: the engine holding ``staging`` (inside the publishing transaction).
            staging: the staged predictions table.

        Returns:
            ``(BigQuery SQL, query parameters)``.
        """
        from vertex_imbalanced.monitoring.predictions import prediction_summary

        summary = prediction_summary(
            warehouse,
            staging,
            self.classes,
            self.train_prior,
            class_id_column="class_id",
            probabilities_column="probabilities",
        )
        self.em_prior = dict(summary["em_prior"])
        params = adjustment_params(self.classes, self.train_prior, self.em_prior)
        return adjusted_sql(staging, len(self.classes)), params
