"""Deterministic Arrow tables for tests and benchmarks (served by the local Storage servers).

All generators are vectorised (numpy + Arrow buffers, no per-row Python), so a 10M-row
benchmark table is built in seconds.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

WIDE_LABEL = "label"
"""Label column of :func:`make_wide_table` (INT64 0/1, about 5 % positives)."""

WIDE_KEY = "key"
"""Key column of :func:`make_wide_table` when ``key=True`` (INT64 0..rows-1)."""

_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def random_strings(
    rng: np.random.Generator, n: int, min_len: int = 5, max_len: int = 20
) -> pa.StringArray:
    """``n`` random lowercase strings of ``min_len``..``max_len`` characters (no NULLs)."""
    lengths = rng.integers(min_len, max_len + 1, size=n, dtype=np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = _ALPHABET[rng.integers(0, len(_ALPHABET), size=int(offsets[-1]), dtype=np.uint8)]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def wide_float_names(n_float: int = 20) -> list[str]:
    """Names of the FLOAT64 columns of :func:`make_wide_table`."""
    return [f"f{i:02d}" for i in range(n_float)]


def wide_string_names(n_string: int = 5) -> list[str]:
    """Names of the STRING columns of :func:`make_wide_table`."""
    return [f"s{i:02d}" for i in range(n_string)]


def make_wide_table(
    rows: int,
    n_float: int = 20,
    n_string: int = 5,
    seed: int = 0,
    *,
    label: bool = True,
    key: bool = False,
) -> pa.Table:
    """The benchmark table: ``n_float`` FLOAT64 + ``n_string`` STRING (5-20 chars) columns.

    Args:
        rows: number of rows.
        n_float: FLOAT64 columns ``f00``, ``f01``... (standard normal).
        n_string: STRING columns ``s00``, ``s01``... (random lowercase, 5-20 characters).
        seed: random seed; the same arguments always give the same table.
        label: add an INT64 ``label`` column (0/1, about 5 % ones).
        key: add an INT64 ``key`` column 0..rows-1 first (to check rows are read exactly once).

    Returns:
        The table (no NULLs).
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    if key:
        columns[WIDE_KEY] = pa.array(np.arange(rows, dtype=np.int64))
    for name in wide_float_names(n_float):
        columns[name] = pa.array(rng.standard_normal(rows))
    for name in wide_string_names(n_string):
        columns[name] = random_strings(rng, rows)
    if label:
        columns[WIDE_LABEL] = pa.array((rng.random(rows) < 0.05).astype(np.int64))
    return pa.table(columns)


TYPED_SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("i64", pa.int64()),
        ("f64", pa.float64()),
        ("flag", pa.bool_()),
        ("cat", pa.string()),
        ("day", pa.date32()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("label", pa.int64()),
    ]
)
"""Schema of :func:`make_typed_table`: the BigQuery scalar types as the Storage API sends them."""


def make_typed_table(rows: int, seed: int = 0, *, null_every: int = 5) -> pa.Table:
    """A table with INT64/FLOAT64/BOOL/STRING/DATE/TIMESTAMP features and NULLs.

    ``key`` (0..rows-1) and ``label`` (0/1/2) never hold NULL. In every feature column the row
    with ``key % null_every == j % null_every`` (``j`` = the column's position among the
    features, 0-based) is NULL, so each feature has NULLs at different rows.

    Args:
        rows: number of rows.
        seed: random seed.
        null_every: period of the NULL pattern (0: no NULLs).

    Returns:
        A table with :data:`TYPED_SCHEMA`.
    """
    rng = np.random.default_rng(seed)
    key = np.arange(rows, dtype=np.int64)

    def mask(j: int) -> np.ndarray | None:
        return (key % null_every) == (j % null_every) if null_every else None

    epoch = dt.date(2020, 1, 1) - dt.date(1970, 1, 1)
    days = rng.integers(0, 1500, size=rows).astype(np.int32) + np.int32(epoch.days)
    micros = rng.integers(1_577_836_800, 1_735_689_600, size=rows) * 1_000_000
    cats = np.array(["red", "green", "blue", "ünïcode"], dtype=object)[rng.integers(0, 4, rows)]
    arrays = [
        pa.array(key),
        pa.array(rng.integers(-1000, 1000, size=rows), mask=mask(0)),
        pa.array(rng.standard_normal(rows), mask=mask(1)),
        pa.array(rng.random(rows) < 0.5, mask=mask(2)),
        pa.array(cats, type=pa.string(), mask=mask(3)),
        pa.array(days, type=pa.date32(), mask=mask(4)),
        pa.array(micros, type=pa.timestamp("us", tz="UTC"), mask=mask(5)),
        pa.array(rng.integers(0, 3, size=rows)),
    ]
    return pa.Table.from_arrays(arrays, schema=TYPED_SCHEMA)


def make_nested_table(rows: int = 10) -> pa.Table:
    """A table with a STRUCT and an ARRAY column (unsupported by the pipeline) plus scalars."""
    key = np.arange(rows, dtype=np.int64)
    return pa.table(
        {
            "key": key,
            "address": pa.array([{"city": f"c{i}", "zip": i} for i in range(rows)]),
            "tags": pa.array([[f"t{i}", "x"] for i in range(rows)]),
            "label": pa.array(key % 2),
        }
    )


TABLE_KINDS = ("wide", "wide-key", "typed")
"""Table kinds :func:`make_table` builds (the local servers' ``--kind``)."""


def make_table(kind: str, rows: int, seed: int = 0) -> pa.Table:
    """Build a table by kind name: ``wide`` (benchmark), ``wide-key`` (+ key) or ``typed``.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "wide":
        return make_wide_table(rows, seed=seed)
    if kind == "wide-key":
        return make_wide_table(rows, seed=seed, key=True)
    if kind == "typed":
        return make_typed_table(rows, seed=seed)
    raise ValueError(f"unknown table kind {kind!r}; use one of {', '.join(TABLE_KINDS)}")
