"""A deterministic, imbalanced 3-class demo table (about 90 / 9 / 1 %) in a DuckDB file.

Columns: ``id`` (STRING key), ``label`` (INT64 0..2), numeric ``x1``, ``x2`` (with NULLs),
``x3``, ``n_items`` (INT64), ``is_member`` (BOOL), categorical ``color`` (with NULLs) and
``region`` (noise). Class 1 is shifted along ``x1``/``x2``, class 2 along ``x3`` and is mostly
``color = 'red'``: a small MLP separates them well enough to recall every class.

``shifted=True`` gives the same rows with two features moved on purpose, for monitoring demos:
``x1`` plus :data:`SHIFT_X1` (training-serving skew of a numeric feature) and ``color`` drawn
from :data:`SHIFT_COLOR_P` whatever the class (skew of a categorical feature).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.warehouse.duckdb_settings import write_table_chunks

CLASS_SHARES = (0.90, 0.09, 0.01)
DEMO_SPEC = FeatureSpec(
    label="label",
    key="id",
    numeric=("x1", "x2", "x3", "n_items", "is_member"),
    categorical=("color", "region"),
)
"""The feature roles of the demo table (the same as schema inference gives with key ``id``)."""

_COLORS = np.array(["blue", "green", "red", "yellow"])
_COLOR_P = np.array(
    [
        [0.45, 0.35, 0.05, 0.15],  # class 0
        [0.20, 0.20, 0.20, 0.40],  # class 1
        [0.05, 0.05, 0.80, 0.10],  # class 2
    ]
)
SHIFTED_FEATURES = ("x1", "color")
"""The features ``demo_table(..., shifted=True)`` moves; every other column is unchanged."""
SHIFT_X1 = 3.0
"""Added to ``x1`` (three within-class standard deviations: Jensen-Shannon divergence about
0.6 against the training histogram, far above the 0.3 alert threshold)."""
SHIFT_COLOR_P = np.array([0.05, 0.05, 0.10, 0.80])
"""``color`` shares (blue, green, red, yellow) of the shifted table: yellow goes from about 14 %
to 80 % (L-infinity distance about 0.6)."""

_REGIONS = np.array(["north", "south", "east", "west", "centre"])
_MEANS = np.array(  # x1, x2, x3 per class
    [
        [0.0, 0.0, 0.0],
        [2.5, -2.0, 0.5],
        [-1.0, 1.0, 3.5],
    ]
)


CHUNK_ROWS = 250_000
"""Rows generated at a time: writing holds one chunk (about 35 MB of Arrow data) in memory,
whatever the table's size (writing 1M rows peaked at 269 MB RSS, 10M rows at 285 MB)."""


def demo_chunks(rows: int, seed: int = 0, *, shifted: bool = False) -> Iterator[pa.Table]:
    """The demo rows as consecutive tables of at most :data:`CHUNK_ROWS` rows.

    Chunk 0 draws from ``default_rng(seed)``, chunk ``i > 0`` from ``default_rng([seed, 0, i])``
    (the shifted variant's own streams: ``[seed, 1]`` and ``[seed, 1, i]``), so a table of up to
    :data:`CHUNK_ROWS` rows is one chunk and the same rows whatever the chunk size was before.
    Row ids continue across chunks (``row-<start + i>``). ``rows == 0`` yields one empty table.
    """
    starts = range(0, rows, CHUNK_ROWS) if rows > 0 else range(1)
    for index, start in enumerate(starts):
        n = min(CHUNK_ROWS, rows - start)
        base = np.random.default_rng(seed if index == 0 else [seed, 0, index])
        moved = np.random.default_rng([seed, 1] if index == 0 else [seed, 1, index])
        yield _chunk(n, start, base, moved if shifted else None)


def demo_table(rows: int, seed: int = 0, *, shifted: bool = False) -> pa.Table:
    """Generate the demo rows as one Arrow table (same arguments -> same table).

    Holds every row in memory; :func:`write_demo_duckdb` writes chunk by chunk instead.

    Args:
        rows: number of rows.
        seed: random seed.
        shifted: move ``x1`` and ``color`` (:data:`SHIFTED_FEATURES`) away from the training
            distribution; the other columns are those of the unshifted table of this seed.
    """
    return pa.concat_tables(demo_chunks(rows, seed, shifted=shifted)).combine_chunks()


def _chunk(
    rows: int, start: int, rng: np.random.Generator, moved: np.random.Generator | None
) -> pa.Table:
    """``rows`` demo rows with ids from ``start``; ``moved`` (if given) shifts x1 and color."""
    label = rng.choice(3, size=rows, p=CLASS_SHARES)
    x = rng.normal(size=(rows, 3))
    for column in range(3):  # one column at a time: no (rows, 3) temporary
        x[:, column] += _MEANS[label, column]
    u = rng.random(rows)
    color_cdf = np.cumsum(_COLOR_P, axis=1)
    color = np.zeros(rows, dtype=np.int32)  # index into _COLORS: how many CDF steps u passes
    for step in range(len(_COLORS) - 1):
        color += u > color_cdf[label, step]
    n_items = rng.poisson(2 + 2 * label)
    is_member = rng.random(rows) < 0.3 + 0.2 * (label > 0)
    x2_null = rng.random(rows) < 0.05
    color_null = rng.random(rows) < 0.05
    if moved is not None:  # its own stream: the base rows stay the same
        x[:, 0] += SHIFT_X1
        color = moved.choice(len(_COLORS), size=rows, p=SHIFT_COLOR_P)
    return pa.table(
        {
            "id": _row_ids(start, rows),
            "label": pa.array(label, pa.int64()),
            "x1": pa.array(x[:, 0]),
            "x2": pa.array(x[:, 1], mask=x2_null),
            "x3": pa.array(x[:, 2]),
            "n_items": pa.array(n_items, pa.int64()),
            "is_member": pa.array(is_member),
            "color": _strings(color, _COLORS, mask=color_null),
            "region": _strings(rng.integers(0, len(_REGIONS), rows), _REGIONS),
        }
    )


def _row_ids(start: int, rows: int) -> pa.Array:
    """``row-<start>``, ``row-<start + 1>``, ... (8 digits at least), built by Arrow kernels."""
    numbers = pa.array(np.arange(start, start + rows, dtype=np.int64))
    digits = pc.utf8_lpad(pc.cast(numbers, pa.string()), 8, "0")
    return pc.binary_join_element_wise("row-", digits, "")


def _strings(indices: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """A STRING array ``values[indices]`` (NULL where ``mask``) without a Python string per row."""
    codes = pa.array(indices.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(codes, pa.array(values.tolist())).cast(pa.string())


def write_demo_duckdb(
    path: str | Path, rows: int, seed: int = 0, table: str = "demo", *, shifted: bool = False
) -> str:
    """Write (or replace) the demo table in a DuckDB file.

    Args:
        path: database file (created if absent).
        rows: number of rows (generated :data:`CHUNK_ROWS` at a time: peak memory does not
            grow with ``rows``).
        seed: random seed.
        table: table name (``name`` or ``schema.name``).
        shifted: write the shifted variant (:func:`demo_table`).

    Returns:
        The source URI ``duckdb:///abs/path.db?table=<table>``.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri

    ref = write_table_chunks(path, table, demo_chunks(rows, seed, shifted=shifted))
    return duckdb_uri(path, ref)
