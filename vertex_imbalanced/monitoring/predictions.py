"""Prediction drift: predicted-class shares, mean probabilities and the EM prior vs the training prior.

Computed in SQL on the predictions table (sql/prediction_distribution.sql): only counts per
predicted class and per rounded probability vector come back, never rows.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.monitoring.prior_shift import estimate_prior
from vertex_imbalanced.warehouse.engines import Warehouse, load_sql, render
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns

DEFAULT_PRIOR_THRESHOLD = 0.1
"""Alert when the EM serving-prior estimate moves a class share by more than 10 points from the
training prior (L-infinity). Tighter than the feature default: in an imbalanced problem a
minority class going from 5 % to 15 % triples it."""


def _query(ref: TableRef, class_id: str, probabilities: str, num_classes: int) -> str:
    sql = render(
        load_sql("prediction_distribution"),
        tables={"table": ref},
        columns={"class_id": class_id, "probabilities": probabilities},
    )
    tree = sqlglot.parse_one(sql, read="bigquery")
    items = {e.alias_or_name: e.unalias() for e in tree.expressions}
    select = [items["class_id"].as_("class_id"), items["n"].as_("n")]
    group = [exp.column("class_id")]
    for kind in ("p", "prob_sum"):
        for c in range(num_classes):
            item = copy.deepcopy(items[f"{kind}_0"])
            item.find(exp.Bracket).set("expressions", [exp.Literal.number(c)])
            select.append(item.as_(f"{kind}_{c}"))
            if kind == "p":
                group.append(exp.column(f"p_{c}"))
    tree.set("expressions", select)
    tree.set("group", exp.Group(expressions=group))
    return tree.sql(dialect="bigquery")


def prediction_summary(
    warehouse: Warehouse,
    ref: TableRef,
    classes: Sequence[str],
    train_prior: Mapping[str, float] | None,
    *,
    class_id_column: str,
    probabilities_column: str,
    prior_threshold: float = DEFAULT_PRIOR_THRESHOLD,
) -> dict[str, Any]:
    """Predicted-class shares, mean probabilities and the EM serving prior of a predictions table.

    Args:
        warehouse: the engine that holds the table.
        ref: the predictions table.
        classes: class names in class-id order.
        train_prior: class -> share in the training split (None: no EM estimate, no alert).
        class_id_column: INT64 column with the served decision.
        probabilities_column: ARRAY<FLOAT64> column, probabilities in class-id order.
        prior_threshold: alert when the EM prior moves a share by more than this.

    Returns:
        JSON-safe dict: ``rows``, ``classes``, ``predicted_share``, ``mean_probability``,
        ``training_prior``, ``em_prior``, ``em_iterations``, ``distance`` (L-infinity of the EM
        prior vs the training prior), ``threshold``, ``alert``.

    Raises:
        PipelineInputError: missing or empty table, or class ids outside the classes.
        SchemaError: missing columns or a probabilities column that is not an array.
    """
    schema = warehouse.table_schema(ref)
    if schema is None:
        raise PipelineInputError(f"predictions table {ref} does not exist")
    require_columns(str(ref), [class_id_column, probabilities_column], list(schema.names))
    if not pa.types.is_list(schema.field(probabilities_column).type) and not pa.types.is_large_list(
        schema.field(probabilities_column).type
    ):
        raise SchemaError(
            f"column {probabilities_column!r} of {ref} is {schema.field(probabilities_column).type}"
            ", not an ARRAY of probabilities"
        )
    num_classes = len(classes)
    rows = warehouse.query(
        _query(ref, class_id_column, probabilities_column, num_classes), {}
    ).to_pylist()
    if not rows:
        raise PipelineInputError(f"predictions table {ref} is empty")
    n = np.array([r["n"] for r in rows], dtype=np.float64)
    ids = [r["class_id"] for r in rows]
    bad = sorted({i for i in ids if i is None or not 0 <= i < num_classes}, key=str)
    if bad:
        raise PipelineInputError(
            f"predictions table {ref} has class ids {bad[:5]} outside 0..{num_classes - 1}"
        )
    probs = np.array([[r[f"p_{c}"] for c in range(num_classes)] for r in rows], dtype=np.float64)
    if not np.all(np.isfinite(probs)):
        raise PipelineInputError(
            f"predictions table {ref} has NULL/NaN probabilities or fewer than {num_classes} "
            "per row"
        )
    total = float(n.sum())
    predicted = np.bincount(ids, weights=n, minlength=num_classes) / total
    sums = np.array([sum(r[f"prob_sum_{c}"] for r in rows) for c in range(num_classes)])
    out: dict[str, Any] = {
        "rows": int(total),
        "classes": list(classes),
        "predicted_share": dict(zip(classes, predicted.tolist(), strict=True)),
        "mean_probability": dict(zip(classes, (sums / total).tolist(), strict=True)),
        "training_prior": dict(train_prior) if train_prior else None,
        "em_prior": None,
        "em_iterations": None,
        "distance": None,
        "threshold": prior_threshold,
        "alert": False,
    }
    if train_prior:
        t = np.array([train_prior[c] for c in classes], dtype=np.float64)
        estimate = estimate_prior(probs, t / t.sum(), counts=n)
        distance = float(np.max(np.abs(estimate.prior - t / t.sum())))
        out.update(
            em_prior=dict(zip(classes, estimate.prior.tolist(), strict=True)),
            em_iterations=estimate.iterations,
            distance=distance,
            alert=distance > prior_threshold,
        )
    return out
