"""Feature statistics of a table, computed in SQL where the table lives (DuckDB or BigQuery).

Numeric features: counts over bin edges ``e_0 < ... < e_m``: one bin below ``e_0``, the bins
``[e_{k-1}, e_k)``, one bin at or above ``e_m`` and one for NULL/NaN (``histogram`` has
``m + 2`` counts, ``null`` is separate). Categorical features: the count of each reported value,
one "other" count for the rest, and NULL. No row leaves the warehouse: the queries return counts
(sql/feature_histogram.sql, feature_quantiles.sql, feature_frequencies.sql).

Training statistics (:func:`training_statistics`) are computed on the **un-downsampled**
training split (the rows sql/split.sql puts in the train bucket range), so they describe the
population the model will see, not the rebalanced sample it was fitted on. Bin edges are the
training data's approximate quantiles at 0, 1/n, ..., 1 (``n = DEFAULT_BINS`` = 20; repeated
quantiles merge, so a binary feature gets 2 bins); the last edge is the float just above the
maximum so the largest training value is inside the last bin. Twenty equal-mass bins keep each
bin's expected share at 5 %, large enough that sampling noise in the Jensen-Shannon divergence
stays far below the alert threshold for a few hundred rows, and fine enough to see a shifted
mean (Vertex Model Monitoring uses equal-width bins; quantile bins do not waste resolution on
long tails).

The statistics dict (JSON-serialisable; :data:`FEATURE_STATISTICS_FILE` beside the model)::

    {"format": 1, "row_count": N, "source": "...", "class_prior": {class: share} | absent,
     "features": {
        "x": {"type": "numeric", "edges": [...], "histogram": [below, ..., above], "null": n},
        "c": {"type": "categorical", "values": {"a": n, ...}, "other": n, "null": n}}}
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.reading.schema import bigquery_type_name, check_feature_types
from vertex_imbalanced.warehouse.engines import Warehouse, load_sql, render
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns, validate_column

FEATURE_STATISTICS_FILE = "feature_statistics.json"
"""File name of the training statistics in a model directory. Its home is to become
``vertex_imbalanced.artifacts`` (requested from that file's owner); import it from there then."""

STATISTICS_FORMAT = 1
DEFAULT_BINS = 20
DEFAULT_TOP_K = 50
"""Categorical values reported individually (per window), besides the reference's values."""

_SOURCE = "__monitoring_source__"
_NO_WINDOW = "0"


def _numeric_value(column: str, arrow_type: pa.DataType) -> str:
    """BigQuery expression of a numeric column as FLOAT64 (the model's float encoding)."""
    if pa.types.is_boolean(arrow_type):
        template = "CAST(CAST(t.{column} AS INT64) AS FLOAT64)"
    elif pa.types.is_date(arrow_type):
        template = "CAST(UNIX_DATE(t.{column}) AS FLOAT64)"
    elif pa.types.is_timestamp(arrow_type):
        template = "UNIX_MICROS(t.{column}) / 86400000000"  # days since the epoch
    else:
        template = "CAST(t.{column} AS FLOAT64)"
    return render(template, columns={"column": column})


def _categorical_value(column: str, arrow_type: pa.DataType) -> str:
    """BigQuery expression of a categorical column as STRING."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return render("t.{column}", columns={"column": column})
    return render("CAST(t.{column} AS STRING)", columns={"column": column})


def _window(timestamp: str | None) -> str:
    if timestamp is None:
        return _NO_WINDOW
    return render("DIV(UNIX_SECONDS(t.{ts}), @window_seconds)", columns={"ts": timestamp})


class TableSource:
    """Rows to describe: a table, or the rows a rendered SELECT returns (e.g. a split).

    Args:
        description: name used in error messages and stored as ``source``.
        from_sql: BigQuery FROM item: a table in backquoted form or ``(SELECT ...)``, already
            rendered (identifiers validated).
        params: query parameters of ``from_sql``.
        schema: Arrow schema of the rows.
    """

    def __init__(
        self, description: str, from_sql: str, params: Mapping[str, Any], schema: pa.Schema
    ) -> None:
        self.description = description
        self.from_sql = from_sql
        self.params = dict(params)
        self.schema = schema

    @classmethod
    def table(cls, warehouse: Warehouse, ref: TableRef) -> TableSource:
        """A whole table.

        Raises:
            PipelineInputError: the table does not exist.
        """
        schema = warehouse.table_schema(ref)
        if schema is None:
            raise PipelineInputError(f"table {ref} does not exist")
        return cls(str(ref), ref.bigquery, {}, schema)


def _columns_sql(source: TableSource, expressions: Mapping[str, str], timestamp: str | None) -> str:
    """``SELECT <expr> AS <alias>, ..., <window> AS window_id FROM <source> AS t``."""
    items = [f"{e} AS {alias}" for alias, e in expressions.items()]
    items.append(f"{_window(timestamp)} AS window_id")
    return f"SELECT {', '.join(items)} FROM {source.from_sql} AS t"


def _with_source(template: str, inner: str) -> exp.Expression:
    """Parse a rendered sql/ template and put ``(inner) AS s`` where ``{source}`` was."""
    tree = sqlglot.parse_one(render(template, tables={"source": _SOURCE}), read="bigquery")
    for table in list(tree.find_all(exp.Table)):
        if table.name == _SOURCE:
            alias = table.alias
            sub = exp.Subquery(this=sqlglot.parse_one(inner, read="bigquery"))
            table.replace(sub.as_(alias) if alias else sub)
    return tree


def _rename(node: exp.Expression, column: str | None, param: str | None) -> exp.Expression:
    node = copy.deepcopy(node)
    for col in node.find_all(exp.Column):
        if column is not None and col.name == "value":
            col.set("this", exp.to_identifier(column))
    for p in node.find_all(exp.Parameter):
        if param is not None:
            p.set("this", exp.Var(this=param))
    return node


def _items(tree: exp.Select) -> dict[str, exp.Expression]:
    return {e.alias_or_name: e.unalias() for e in tree.expressions}


def _check_finite(name: str, values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out) or bool(np.any(np.diff(out) <= 0)):
        raise PipelineInputError(
            f"bin edges of feature {name!r} must be finite and strictly increasing, got {out}"
        )
    return out


def _bucket_search(
    value: exp.Expression, params: Sequence[str], lo: int, hi: int
) -> exp.Expression:
    """``lo`` + the number of edges ``params[lo:hi]`` that are <= value (a binary search)."""
    if lo == hi:
        return exp.Literal.number(lo)
    mid = (lo + hi) // 2
    below = exp.LT(this=value.copy(), expression=exp.Parameter(this=exp.Var(this=params[mid])))
    return exp.Case(
        ifs=[exp.If(this=below, true=_bucket_search(value, params, lo, mid))],
        default=_bucket_search(value, params, mid + 1, hi),
    )


def _histogram_branch(
    source: TableSource, index: int, expression: str, edges: Sequence[float], timestamp: str | None
) -> tuple[exp.Expression, dict[str, float]]:
    tree = _with_source(
        load_sql("feature_histogram"), _columns_sql(source, {"value": expression}, timestamp)
    )
    tree.expressions[0].this.replace(exp.Literal.number(index))  # `0 AS feature`
    case = tree.find(exp.Case)
    value = case.args["ifs"][1].this.this  # `s.value` of `s.value < @edge`
    names = [f"edge_{index}_{k}" if index >= 0 else "" for k in range(len(edges))]
    search = _bucket_search(value, names, 0, len(edges))
    case.set("ifs", case.args["ifs"][:1])
    case.set("default", search)
    return tree, dict(zip(names, edges, strict=True))


def numeric_histograms(
    warehouse: Warehouse,
    source: TableSource,
    edges: Mapping[str, Sequence[float]],
    *,
    timestamp: str | None = None,
    window_seconds: int | None = None,
) -> dict[int, dict[str, Any]]:
    """Histograms of numeric columns over given edges (sql/feature_histogram.sql), one query.

    Args:
        warehouse: the engine that holds the table.
        source: the rows.
        edges: column -> bin edges (finite, strictly increasing; may be empty: then every
            non-missing value counts as above). No columns: only the row count per window.
        timestamp: TIMESTAMP column that defines windows (None: one window, id 0).
        window_seconds: window length when ``timestamp`` is given.

    Returns:
        window id -> ``{"row_count": n, "features": {column: {"edges", "histogram", "null"}}}``.
    """
    names = list(edges)
    clean = {n: _check_finite(n, edges[n]) for n in names}
    branches = [
        _histogram_branch(
            source, i, _numeric_value(n, source.schema.field(n).type), clean[n], timestamp
        )
        for i, n in enumerate(names)
    ] or [_histogram_branch(source, -1, "CAST(NULL AS FLOAT64)", [], timestamp)]
    query = branches[0][0]
    params: dict[str, Any] = dict(source.params)
    for tree, values in branches:
        params.update(values)
        if tree is not query:
            query = exp.union(query, tree, distinct=False)
    if timestamp is not None:
        params["window_seconds"] = int(window_seconds or 0)
    counts: dict[int, dict[int, dict[int, int]]] = {}
    for row in warehouse.query(query.sql(dialect="bigquery"), params).to_pylist():
        per_feature = counts.setdefault(int(row["window_id"]), {})
        per_feature.setdefault(int(row["feature"]), {})[int(row["bucket"])] = int(row["n"])
    out: dict[int, dict[str, Any]] = {}
    for wid, per_feature in counts.items():
        first = per_feature[0 if names else -1]
        features = {}
        for i, name in enumerate(names):
            buckets = per_feature.get(i, {})
            hist = [buckets.get(b, 0) for b in range(len(clean[name]) + 1)]
            features[name] = {
                "type": "numeric",
                "edges": clean[name],
                "histogram": hist,
                "null": buckets.get(-1, 0),
            }
        out[wid] = {"row_count": sum(first.values()), "features": features}
    return out


def numeric_edges(
    warehouse: Warehouse, source: TableSource, columns: Sequence[str], bins: int = DEFAULT_BINS
) -> dict[str, list[float]]:
    """Bin edges from the table's approximate quantiles (see the module docstring).

    Returns:
        column -> edges (empty when the column has no finite value).
    """
    if not 1 <= bins <= 1000:
        raise PipelineInputError(f"bins must be in [1, 1000], got {bins}")
    exprs = {
        f"value_{i}": _numeric_value(n, source.schema.field(n).type) for i, n in enumerate(columns)
    }
    tree = _with_source(load_sql("feature_quantiles"), _columns_sql(source, exprs, None))
    items = _items(tree)
    select = []
    for i in range(len(columns)):
        q = _rename(items["quantiles"], f"value_{i}", None)
        q.find(exp.ApproxQuantiles).set("expression", exp.Literal.number(bins))
        select.append(q.as_(f"quantiles_{i}"))
        select.append(_rename(items["minimum"], f"value_{i}", None).as_(f"minimum_{i}"))
        select.append(_rename(items["maximum"], f"value_{i}", None).as_(f"maximum_{i}"))
    tree.set("expressions", select)
    row = warehouse.query(tree.sql(dialect="bigquery"), source.params).to_pylist()[0]
    out = {}
    for i, name in enumerate(columns):
        if row[f"maximum_{i}"] is None:
            out[name] = []
            continue
        low, high = float(row[f"minimum_{i}"]), float(row[f"maximum_{i}"])
        # Quantiles but the last (the maximum): a value held by >= 1/bins of the rows, like the
        # 1 of a 0/1 feature, becomes an edge of its own bin.
        quantiles = [float(v) for v in (row[f"quantiles_{i}"] or [])[:-1] if v is not None]
        inner = [v for v in quantiles if low < v <= high]
        t = source.schema.field(name).type
        if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date(t):
            # Integral values: interpolated quantiles (a t-digest gives 0.68 for a 0/1
            # feature) round up to the next value, so each bin starts at a value.
            inner = [float(math.ceil(v)) for v in inner]
        out[name] = sorted({low, *inner, float(np.nextafter(high, np.inf))})
    return out


def categorical_frequencies(
    warehouse: Warehouse,
    source: TableSource,
    column: str,
    *,
    known: Sequence[str] = (),
    top_k: int = DEFAULT_TOP_K,
    timestamp: str | None = None,
    window_seconds: int | None = None,
) -> dict[int, dict[str, Any]]:
    """Value frequencies of one categorical column (sql/feature_frequencies.sql).

    Args:
        warehouse: the engine that holds the table.
        source: the rows.
        column: the column.
        known: values always counted individually (the reference's categories).
        top_k: other values counted individually per window, most frequent first.
        timestamp: TIMESTAMP column that defines windows (None: one window, id 0).
        window_seconds: window length when ``timestamp`` is given.

    Returns:
        window id -> ``{"type": "categorical", "values": {v: n}, "other": n, "null": n}``.
    """
    if top_k < 0:
        raise PipelineInputError(f"top_k must be >= 0, got {top_k}")
    expr = _categorical_value(column, source.schema.field(column).type)
    inner = _columns_sql(source, {"value": expr}, timestamp)
    tree = _with_source(load_sql("feature_frequencies"), inner)
    params = {**source.params, "known": [str(v) for v in known] or [""], "top_k": int(top_k)}
    if timestamp is not None:
        params["window_seconds"] = int(window_seconds or 0)
    out: dict[int, dict[str, Any]] = {}
    for row in warehouse.query(tree.sql(dialect="bigquery"), params).to_pylist():
        stats = out.setdefault(
            int(row["window_id"]),
            {"type": "categorical", "values": {}, "other": 0, "null": 0},
        )
        if row["kind"] == "value":
            stats["values"][row["value"]] = int(row["n"])
        else:
            stats[row["kind"]] += int(row["n"])
    for stats in out.values():
        stats["values"] = dict(sorted(stats["values"].items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def check_feature_columns(description: str, schema: pa.Schema, spec: FeatureSpec) -> None:
    """The spec's features exist in the table with a type fit for their role.

    Raises:
        SchemaError: a missing column (closest name given) or a wrong type.
    """
    require_columns(description, list(spec.features), list(schema.names))
    check_feature_types(description, schema, spec.numeric, spec.categorical)


def feature_statistics(
    warehouse: Warehouse,
    source: TableSource,
    spec: FeatureSpec,
    *,
    reference: Mapping[str, Any] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    timestamp: str | None = None,
    window_seconds: int | None = None,
) -> dict[int, dict[str, Any]]:
    """Statistics of every feature of ``spec``, per window.

    With a ``reference`` (training or previous statistics) the numeric bins are the reference's
    and its categories are counted individually; without one the edges come from this table's
    quantiles (training statistics).

    Args:
        warehouse: the engine that holds the table.
        source: the rows.
        spec: numeric and categorical features.
        reference: statistics dict whose bins/categories to use.
        bins: number of quantile bins without a reference.
        top_k: categorical values reported individually (besides the reference's).
        timestamp: TIMESTAMP column that defines windows (None: one window, id 0).
        window_seconds: window length when ``timestamp`` is given (> 0).

    Returns:
        window id -> statistics dict (format of the module docstring, without ``class_prior``).

    Raises:
        SchemaError: a feature or the timestamp column is missing or of the wrong type; a
            feature the reference does not describe.
        PipelineInputError: the table has no rows, or bad settings.
    """
    check_feature_columns(source.description, source.schema, spec)
    if timestamp is not None:
        validate_column(timestamp)
        require_columns(source.description, [timestamp], list(source.schema.names))
        if not pa.types.is_timestamp(source.schema.field(timestamp).type):
            raise SchemaError(
                f"window column {timestamp!r} of {source.description} is "
                f"{bigquery_type_name(source.schema.field(timestamp).type)}, not TIMESTAMP"
            )
        if not window_seconds or window_seconds <= 0:
            raise PipelineInputError(
                f"window_seconds must be > 0 with a window column, got {window_seconds}"
            )
    ref_features = (reference or {}).get("features", {})
    if reference is not None:
        missing = [f for f in spec.features if f not in ref_features]
        if missing:
            raise SchemaError(
                f"the reference statistics do not describe feature(s) {missing} "
                f"(they describe {sorted(ref_features)})"
            )
        edges = {n: ref_features[n]["edges"] for n in spec.numeric}
    else:
        edges = numeric_edges(warehouse, source, spec.numeric, bins) if spec.numeric else {}
    window = {"timestamp": timestamp, "window_seconds": window_seconds}
    if spec.numeric:
        windows = numeric_histograms(warehouse, source, edges, **window)
    else:
        windows = _row_counts(warehouse, source, timestamp, window_seconds)
    if not windows or sum(w["row_count"] for w in windows.values()) == 0:
        raise PipelineInputError(f"table {source.description} has no rows")
    for name in spec.categorical:
        known = list(ref_features.get(name, {}).get("values", {}))
        per_window = categorical_frequencies(
            warehouse, source, name, known=known, top_k=top_k, **window
        )
        for wid, stats in windows.items():
            stats["features"][name] = per_window.get(
                wid, {"type": "categorical", "values": {}, "other": 0, "null": 0}
            )
    order = list(spec.features)
    for stats in windows.values():
        stats["features"] = {n: stats["features"][n] for n in order}
        stats["format"] = STATISTICS_FORMAT
        stats["source"] = source.description
    return dict(sorted(windows.items()))


def _row_counts(
    warehouse: Warehouse, source: TableSource, timestamp: str | None, window_seconds: int | None
) -> dict[int, dict[str, Any]]:
    # The histogram query with no numeric feature is a row count per window.
    return numeric_histograms(
        warehouse, source, {}, timestamp=timestamp, window_seconds=window_seconds
    )


def table_statistics(
    warehouse: Warehouse,
    ref: TableRef,
    spec: FeatureSpec,
    *,
    reference: Mapping[str, Any] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Statistics of a whole table as one window (see :func:`feature_statistics`)."""
    source = TableSource.table(warehouse, ref)
    windows = feature_statistics(
        warehouse, source, spec, reference=reference, bins=bins, top_k=top_k
    )
    return windows[0]


def training_statistics(
    source_uri: str,
    spec: FeatureSpec,
    *,
    split_ratios: Sequence[float],
    class_counts: Mapping[str, int] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    warehouse: Warehouse | None = None,
) -> dict[str, Any]:
    """Statistics of the un-downsampled training split: what is stored with the model.

    The rows are those sql/split.sql assigns to the train bucket range of ``split_ratios``
    (the same rows the prepare step downsampled), read in place: nothing is written.

    Args:
        source_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/path.db?table=name``.
        spec: the resolved feature spec (``key`` set; features listed).
        split_ratios: train, validation, test shares the prepare step used.
        class_counts: rows per class in the train split (``PreparedData.split_counts["train"]``);
            stored as ``class_prior`` (shares) for prediction drift.
        bins: number of quantile bins per numeric feature.
        top_k: categorical values kept individually.
        warehouse: runner to use instead of one opened from ``source_uri``.

    Returns:
        The statistics dict (module docstring), JSON-serialisable.

    Raises:
        PipelineInputError: missing table, empty split, bad settings.
        SchemaError: a feature column is missing or has the wrong type.
    """
    from vertex_imbalanced.warehouse.engines import open_warehouse, source_table
    from vertex_imbalanced.warehouse.prepare import split_boundaries

    if spec.key is None:
        raise PipelineInputError("training statistics need the spec's key column (the split)")
    train_end, _ = split_boundaries(split_ratios)
    owned = warehouse is None
    if warehouse is None:
        warehouse, ref = open_warehouse(source_uri)
    else:
        ref = source_table(source_uri)
    try:
        schema = warehouse.table_schema(ref)
        if schema is None:
            raise PipelineInputError(f"table {ref} does not exist ({source_uri})")
        split_sql = render(load_sql("split"), tables={"source": ref}, columns={"key": spec.key})
        source = TableSource(
            f"{ref} (train split)",
            f"({split_sql})",
            {"bucket_lo": 0, "bucket_hi": train_end},
            schema,
        )
        stats = feature_statistics(warehouse, source, spec, bins=bins, top_k=top_k)[0]
    finally:
        if owned and hasattr(warehouse, "close"):
            warehouse.close()
    if class_counts:
        total = sum(class_counts.values())
        if total > 0:
            stats["class_prior"] = {c: n / total for c, n in class_counts.items()}
    return stats


def write_training_statistics(model_dir: str | Path, statistics: Mapping[str, Any]) -> Path:
    """Write ``feature_statistics.json`` into a model directory (temporary name, then rename).

    Returns:
        The file written.
    """
    path = Path(model_dir) / FEATURE_STATISTICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(statistics, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_training_statistics(model_dir: str | Path) -> dict[str, Any]:
    """The training statistics stored with a model (directory or the JSON file itself).

    Raises:
        PipelineInputError: the file is missing or not a statistics dict (named).
    """
    path = Path(model_dir)
    if path.is_dir():
        path = path / FEATURE_STATISTICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineInputError(
            f"cannot read the training feature statistics {path}: {exc!r}; models trained "
            "before monitoring existed have none (retrain, or compute them with "
            "training_statistics)"
        ) from exc
    if data.get("format") != STATISTICS_FORMAT or "features" not in data:
        raise PipelineInputError(f"{path} is not a feature statistics file")
    return data
