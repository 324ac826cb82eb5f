"""Monitoring statistics: in SQL where the table lives (DuckDB) vs pandas/numpy after loading it.

    python bench/monitoring.py [--rows N] [--repeat R] [--json PATH]

A synthetic table of N rows, 20 FLOAT64 columns (1 % NULL) and 5 STRING columns (30 values,
1 % NULL), is written to a DuckDB file. Reference statistics (20 quantile bins per numeric
column, every category) are computed once; then the measured work is what a monitoring run
does per scored table: the histograms of all 20 numeric columns over the reference edges and the
value counts of the 5 categorical ones.

- ``sql``: :func:`vertex_imbalanced.monitoring.statistics.feature_statistics` on the DuckDB
  file (one scan of COUNTIFs for the numeric columns, one GROUP BY per categorical column).
- ``pandas``: what users usually write: load the table into a DataFrame (the rows leave the
  warehouse: ``SELECT *`` into pandas), then per numeric column ``np.searchsorted`` +
  ``np.bincount`` on the non-NULL values and per categorical column ``value_counts(dropna=False)``.
  ``pandas_s`` is load + compute (what the SQL path saves); ``pandas_compute_s`` is the compute
  alone, printed beside it so neither figure hides the other.

Both give the same counts (checked). Each path runs ``--repeat`` times; the best time counts (on
a shared machine other load only ever adds time). :func:`measure` returns
``{"sql_s": float, "pandas_s": float}`` for bench/batch_prediction.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vertex_imbalanced.config import FeatureSpec  # noqa: E402
from vertex_imbalanced.monitoring.statistics import (  # noqa: E402
    TableSource,
    feature_statistics,
)
from vertex_imbalanced.warehouse.engines import DuckDBWarehouse  # noqa: E402
from vertex_imbalanced.warehouse.identifiers import TableRef  # noqa: E402

NUMERIC = tuple(f"x{i}" for i in range(20))
CATEGORICAL = tuple(f"c{i}" for i in range(5))
SPEC = FeatureSpec(label="label", numeric=NUMERIC, categorical=CATEGORICAL)


def _create(wh: DuckDBWarehouse, rows: int) -> None:
    numeric = ", ".join(
        f"CASE WHEN random() < 0.01 THEN NULL ELSE {i % 4 + 1} * (random() - 0.5) + {i} END AS x{i}"
        for i in range(len(NUMERIC))
    )
    categorical = ", ".join(
        f"CASE WHEN random() < 0.01 THEN NULL ELSE 'value_' || CAST(floor(random() * 30) AS INT)"
        f" || '_{i}' END AS c{i}"
        for i in range(len(CATEGORICAL))
    )
    wh.con.execute("SELECT setseed(0.42)")
    wh.con.execute(
        f"CREATE TABLE scored AS SELECT range AS id, {numeric}, {categorical} FROM range({rows})"
    )


def _pandas_statistics(df, reference: dict) -> dict:
    out = {}
    for name in NUMERIC:
        values = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        edges = np.asarray(reference["features"][name]["edges"])
        idx = np.searchsorted(edges, values[~missing], side="right")
        out[name] = (np.bincount(idx, minlength=len(edges) + 1).tolist(), int(missing.sum()))
    for name in CATEGORICAL:
        counts = df[name].value_counts(dropna=False)
        nulls = int(counts[counts.index.isna()].sum())
        out[name] = ({k: int(v) for k, v in counts.items() if isinstance(k, str)}, nulls)
    return out


def _same(sql: dict, pandas: dict) -> bool:
    for name in NUMERIC:
        f = sql["features"][name]
        if (f["histogram"], f["null"]) != pandas[name]:
            return False
    for name in CATEGORICAL:
        f = sql["features"][name]
        if (f["values"], f["null"]) != pandas[name] or f["other"] != 0:
            return False
    return True


def measure(rows: int, repeat: int = 3, workdir: str | Path | None = None) -> dict[str, float]:
    """Best-of-``repeat`` seconds of the monitoring statistics in SQL and in pandas.

    Args:
        rows: rows of the synthetic table (20 numeric + 5 categorical columns).
        repeat: runs per path.
        workdir: directory for the DuckDB file (default: a temporary one).

    Returns:
        ``{"sql_s": float, "pandas_s": float, "pandas_compute_s": float}``.

    Raises:
        AssertionError: the two paths disagree on a count.
    """
    with (
        tempfile.TemporaryDirectory(dir=workdir) as tmp,
        DuckDBWarehouse(Path(tmp) / "bench.db") as wh,
    ):
        _create(wh, rows)
        source = TableSource.table(wh, TableRef.parse("scored"))
        reference = feature_statistics(wh, source, SPEC, top_k=100)[0]
        sql_times, sql_stats = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            sql_stats = feature_statistics(wh, source, SPEC, reference=reference, top_k=100)[0]
            sql_times.append(time.perf_counter() - t0)
        pandas_times, compute_times, pandas_stats = [], [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            df = wh.con.execute("SELECT * FROM scored").df()
            t1 = time.perf_counter()
            pandas_stats = _pandas_statistics(df, reference)
            t2 = time.perf_counter()
            del df
            pandas_times.append(t2 - t0)
            compute_times.append(t2 - t1)
        assert _same(sql_stats, pandas_stats), "SQL and pandas statistics differ"
    return {
        "sql_s": min(sql_times),
        "pandas_s": min(pandas_times),
        "pandas_compute_s": min(compute_times),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one line per path; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the table")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (best counts)")
    parser.add_argument(
        "--json", type=Path, help="write {rows, monitoring: {sql_s, pandas_s, pandas_compute_s}}"
    )
    args = parser.parse_args(argv)
    result = measure(args.rows, args.repeat)
    print(f"monitoring statistics, {args.rows:,} rows (20 numeric + 5 categorical)")
    print(f"  SQL (DuckDB, in place)      {result['sql_s']:8.3f} s")
    print(f"  pandas/numpy (load+compute) {result['pandas_s']:8.3f} s")
    print(f"  pandas/numpy (compute only) {result['pandas_compute_s']:8.3f} s")
    print(f"  SQL / pandas                {result['sql_s'] / result['pandas_s']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "monitoring": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
