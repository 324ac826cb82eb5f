"""Checks of the key and of id-like columns, read in SQL before anything is written.

**The key.** The split hashes the key column (``sql/split.sql``), so the key decides which rows
go together. A key that is not unique is accepted (rows sharing a key stay in one split and are
kept or dropped together: a *group split*, which is what a customer or session id wants), but
:func:`key_warnings` says so with the counts. A NULL key is not a key: those rows are split by
a hash of the row's JSON text instead, so they spread over the splits like the others (the old
rule, hashing ``''``, put every NULL-key row in one split); the warning gives how many landed in
each split. Refusing would stop users whose key is missing in a few rows; hashing one constant
would silently bias the splits; hashing the row keeps the split deterministic and keeps exact
duplicate rows together, so no duplicate leaks from train into test.

**Id-like columns.** An INT64 or STRING column holding a different value in every row of the
train split (and at least :data:`ID_LIKE_MIN_ROWS` rows) is a row id, not a feature: as a
number it lets the model memorise row order, as a category every value is seen once. When the
features are inferred from the schema such columns are left out (added to the spec's
``ignored``) with a line saying so; listing the column as a feature keeps it. FLOAT64, NUMERIC
and the other types are measurements and never id-like.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from vertex_imbalanced.warehouse.engines import Warehouse, load_sql, render
from vertex_imbalanced.warehouse.identifiers import TableRef

ID_LIKE_MIN_ROWS = 100
"""Train rows below which no column is called id-like (a small table is unique by chance)."""


NULL_KEY_TEXT = "CONCAT('null key:', TO_JSON_STRING(src))"
"""The text the sql/ files hash for a row whose key is NULL (the row's JSON)."""


def without_null_key_spread(sql: str, null_keys: bool) -> str:
    """Rendered split SQL as it should run on a table with or without NULL keys.

    Without NULL keys the fallback :data:`NULL_KEY_TEXT` is never used, so it becomes ``''``:
    the buckets are the same, and the query names only the columns it reads (BigQuery bills
    every column a query names; ``TO_JSON_STRING(src)`` names them all). The text cannot occur
    inside an identifier (column and table names have no parentheses or commas).

    Args:
        sql: rendered SQL of ``split``, ``split_labelled``, ``downsample`` or ``class_stats``.
        null_keys: whether the table has rows with a NULL key (:class:`KeyStats`).

    Raises:
        ValueError: the SQL does not contain the fallback (another file was given).
    """
    if NULL_KEY_TEXT not in sql:
        raise ValueError("the SQL has no NULL-key fallback to leave out")
    return sql if null_keys else sql.replace(NULL_KEY_TEXT, "''")


@dataclasses.dataclass(frozen=True)
class KeyStats:
    """How unique the key column is (``sql/key_stats.sql``).

    Attributes:
        row_count: rows of the table.
        distinct_keys: distinct non-NULL keys.
        null_keys: rows whose key is NULL.
        shared_key_rows: rows whose key is also another row's.
        example_key: the most repeated key (None when every key is unique).
        example_rows: rows holding ``example_key`` (0 when none).
        null_keys_by_split: NULL-key rows in each split (train, validation, test).
    """

    row_count: int
    distinct_keys: int
    null_keys: int
    shared_key_rows: int
    example_key: str | None = None
    example_rows: int = 0
    null_keys_by_split: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (what the prepared data and the run summary hold)."""
        return dataclasses.asdict(self)

    def with_splits(self, label_stats: Sequence[Mapping[str, Any]]) -> KeyStats:
        """These counts with :attr:`null_keys_by_split` from ``prepare.label_stats`` rows."""
        by_split = {"train": 0, "validation": 0, "test": 0}
        for entry in label_stats:
            by_split[entry["split"]] += int(entry.get("null_keys") or 0)
        return dataclasses.replace(self, null_keys_by_split=by_split)


def key_stats(warehouse: Warehouse, source: TableRef | str, key: str) -> KeyStats:
    """Read the key's uniqueness with one query over the key column (nothing is written).

    Args:
        warehouse: the engine.
        source: the table.
        key: the key column.

    Returns:
        The counts (:attr:`KeyStats.null_keys_by_split` empty: see :meth:`KeyStats.with_splits`).
    """
    sql = render(load_sql("key_stats"), tables={"source": source}, columns={"key": key})
    row = warehouse.query(sql, {}).to_pylist()[0]
    return KeyStats(
        row_count=int(row["row_count"] or 0),
        distinct_keys=int(row["distinct_keys"] or 0),
        null_keys=int(row["null_keys"] or 0),
        shared_key_rows=int(row["shared_key_rows"] or 0),
        example_key=row["example_key"],
        example_rows=int(row["example_rows"] or 0),
    )


def key_warnings(description: str, key: str, stats: KeyStats) -> list[str]:
    """One line for a key that is not unique and one for NULL keys, with the counts.

    Args:
        description: the table, for the message.
        key: the key column.
        stats: :func:`key_stats` of the table.
    """
    lines = []
    if stats.shared_key_rows:
        lines.append(
            f"key column {key!r} of {description} is not unique: {stats.distinct_keys:,} "
            f"distinct values over {stats.row_count - stats.null_keys:,} rows with a key "
            f"({stats.shared_key_rows:,} rows share their key with another row; "
            f"{stats.example_key!r} is in {stats.example_rows:,} rows). Rows with one key "
            "always land in the same split and are kept or dropped together by downsampling "
            "(a group split); if that is not what you mean, use a unique key column"
        )
    if stats.null_keys:
        share = 100 * stats.null_keys / max(stats.row_count, 1)
        spread = ", ".join(f"{s} {n:,}" for s, n in stats.null_keys_by_split.items())
        lines.append(
            f"key column {key!r} of {description} is NULL in {stats.null_keys:,} of "
            f"{stats.row_count:,} rows ({share:.1f} %): those rows are split by a hash of "
            f"their content instead ({spread}); give every row a key for a split that "
            "does not depend on the other columns"
        )
    return lines


def _candidate(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def id_like_columns(
    warehouse: Warehouse,
    source: TableRef | str,
    schema: pa.Schema,
    columns: Sequence[str],
    key: str,
    train_end: int,
    null_keys: bool = True,
) -> dict[str, int]:
    """The INT64/STRING columns among ``columns`` with a different value in every train row.

    One query over the train split (the bucket range ``[0, train_end)`` of ``sql/split.sql``)
    counts each candidate's distinct values; nothing is written.

    Args:
        warehouse: the engine.
        source: the table.
        schema: its schema (only integer and string columns are candidates).
        columns: the feature columns to look at.
        key: the key column (the split).
        train_end: end of the train bucket range (``prepare.split_boundaries(...)[0]``).
        null_keys: whether the table has NULL keys (:func:`without_null_key_spread`).

    Returns:
        ``{column: train rows}`` for each id-like column, in ``columns`` order (empty when the
        train split has fewer than :data:`ID_LIKE_MIN_ROWS` rows).
    """
    candidates = [c for c in columns if _candidate(schema.field(c).type)]
    if not candidates:
        return {}
    split_sql = without_null_key_spread(
        render(load_sql("split"), tables={"source": source}, columns={"key": key}), null_keys
    )
    items = render(
        ", ".join(
            f"COUNT(DISTINCT CAST(t.{{c{i}}} AS STRING)) AS d{i}" for i in range(len(candidates))
        ),
        columns={f"c{i}": c for i, c in enumerate(candidates)},
    )
    sql = f"SELECT COUNT(*) AS n, {items} FROM ({split_sql}) AS t"
    row = warehouse.query(sql, {"bucket_lo": 0, "bucket_hi": train_end}).to_pylist()[0]
    rows = int(row["n"])
    if rows < ID_LIKE_MIN_ROWS:
        return {}
    return {c: rows for i, c in enumerate(candidates) if int(row[f"d{i}"]) == rows}


def id_like_line(column: str, type_name: str, rows: int) -> str:
    """The line saying an id-like column was left out, and how to keep it."""
    return (
        f"column {column!r} ({type_name}) looks like a row id: it has a different value in "
        f"each of the {rows:,} train rows, so it is left out of the features; to use it, list "
        "it as a feature (numeric or categorical) in the feature config"
    )


NUMERIC_TEXT_SHARE = 0.5
"""A STRING column is *mostly numbers* when more than this share of its values are numbers."""


def numeric_text_warnings(
    warehouse: Warehouse,
    source: TableRef | str,
    columns: Sequence[str],
    key: str,
    train_end: int,
    na_values: Sequence[str],
    null_keys: bool = True,
) -> list[str]:
    """One line per STRING column of the train split whose values are mostly numbers.

    Such a column becomes a categorical feature with a token per amount, the usual sign of
    numbers stored as text with missing-value markers (``NA``, ``N/A``...) among them. In a
    typed table those markers are values, not NULLs: they are counted (``na_values`` is a
    query parameter) and the line says how to convert the column in SQL. Nothing is
    rewritten: batch prediction and serving read the same kind of table, so a rewrite in the
    prepare step alone would make training and serving disagree.

    Args:
        warehouse: the engine.
        source: the table.
        columns: the STRING feature columns to look at.
        key: the key column (the split).
        train_end: end of the train bucket range.
        na_values: the feature config's missing-value markers.
        null_keys: whether the table has NULL keys (:func:`without_null_key_spread`).
    """
    if not columns:
        return []
    split_sql = without_null_key_spread(
        render(load_sql("split"), tables={"source": source}, columns={"key": key}), null_keys
    )
    items = render(
        ", ".join(
            f"COUNT(t.{{c{i}}}) AS n{i}, "
            f"COUNTIF(SAFE_CAST(t.{{c{i}}} AS FLOAT64) IS NOT NULL) AS num{i}, "
            f"COUNTIF(t.{{c{i}}} IN UNNEST(@na_values)) AS na{i}"
            for i in range(len(columns))
        ),
        columns={f"c{i}": c for i, c in enumerate(columns)},
    )
    sql = f"SELECT {items} FROM ({split_sql}) AS t"
    params = {"bucket_lo": 0, "bucket_hi": train_end, "na_values": list(na_values) or [""]}
    row = warehouse.query(sql, params).to_pylist()[0]
    lines = []
    for i, name in enumerate(columns):
        n, numbers, markers = (int(row[f"{k}{i}"]) for k in ("n", "num", "na"))
        if not n or numbers <= NUMERIC_TEXT_SHARE * n:
            continue
        line = (
            f"column {name!r} is STRING but {numbers:,} of its {n:,} values in the train split "
            "are numbers: it is used as a categorical feature (one token per value)"
        )
        if markers:
            line += f"; {markers:,} values are missing-value markers ({', '.join(na_values)})"
        lines.append(
            line + "; to use it as a number, convert it in SQL (e.g. a view with "
            f"SAFE_CAST(NULLIF(`{name}`, 'NA') AS FLOAT64)) or list it in 'ignored'"
        )
    return lines
