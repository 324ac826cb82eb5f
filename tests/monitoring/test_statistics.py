"""Feature statistics in SQL equal numpy's on the same table, on DuckDB and on BigQuery (fake)."""

import collections

import numpy as np
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.monitoring.statistics import (
    TableSource,
    feature_statistics,
    table_statistics,
    training_statistics,
)

N = 3000
SPEC = FeatureSpec(
    label="label",
    numeric=("x", "flag", "day", "at", "count"),
    categorical=("color", "code"),
    key="id",
)


def _table(seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, N)
    x[:7] = np.nan
    x[7:10] = [np.inf, -np.inf, 1e9]  # above / below / far above
    mask = np.zeros(N, bool)
    mask[10:40] = True  # NULLs
    days = rng.integers(18000, 19000, N)
    micros = rng.integers(1_600_000_000, 1_700_000_000, N) * 1_000_000
    return pa.table(
        {
            "id": np.arange(N),
            "x": pa.array(x, mask=mask),
            "flag": pa.array(rng.random(N) < 0.3),
            "day": pa.array(days.astype("int32"), pa.int32()).cast(pa.date32()),
            "at": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "count": pa.array(rng.integers(0, 5, N), mask=rng.random(N) < 0.05),
            "color": pa.array(rng.choice(["red", "green", "blue", "teal", ""], N).tolist()),
            "code": pa.array(rng.integers(0, 30, N), mask=rng.random(N) < 0.02),
            "label": rng.integers(0, 2, N),
        }
    )


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    t = column.type
    if pa.types.is_boolean(t):
        column = column.cast(pa.int64())
    elif pa.types.is_date(t):
        column = column.cast(pa.int32())
    elif pa.types.is_timestamp(t):
        return np.array(
            [
                np.nan if v is None else v / 86_400_000_000
                for v in column.cast(pa.int64()).to_pylist()
            ]
        )
    return np.array([np.nan if v is None else float(v) for v in column.to_pylist()])


def _numpy_histogram(values: np.ndarray, edges: list[float]) -> tuple[list[int], int]:
    missing = np.isnan(values)
    idx = np.searchsorted(np.asarray(edges), values[~missing], side="right")
    return np.bincount(idx, minlength=len(edges) + 1).tolist(), int(missing.sum())


def _train_rows(n: int, train_end: int) -> np.ndarray:
    """Rows of ids 0..n-1 in split.sql's train buckets, computed with pyfarmhash directly."""
    import farmhash

    def bucket(key: int) -> int:
        fp = farmhash.fingerprint64(str(key))
        signed = fp - 2**64 if fp >= 2**63 else fp
        return abs(signed) % 10_000  # ABS(MOD(x, n)) of a truncating MOD

    return np.array([bucket(i) < train_end for i in range(n)])


def _reference(table: pa.Table) -> dict:
    """Edges chosen by hand (not from the code under test), known categories."""
    edges = {
        "x": [-3.0, -1.0, 0.0, 0.5, 2.0, 4.0],
        "flag": [0.0, 1.0, 1.5],
        "day": [18200.0, 18500.0, 18800.0],
        "at": [18600.0, 19000.0, 19500.0],
        "count": [1.0, 2.0, 3.0],
    }
    features = {n: {"type": "numeric", "edges": e} for n, e in edges.items()}
    features["color"] = {"type": "categorical", "values": {"red": 1, "green": 1, "gone": 1}}
    features["code"] = {"type": "categorical", "values": {"1": 1, "2": 1}}
    return {"format": 1, "features": features}


def test_sql_statistics_equal_numpy_on_both_engines(engine):
    table = _table()
    ref = engine.load("t", table)
    reference = _reference(table)
    stats = table_statistics(engine.warehouse, ref, SPEC, reference=reference, top_k=3)
    assert stats["row_count"] == N
    for name in SPEC.numeric:
        hist, missing = _numpy_histogram(
            _as_float(table[name]), reference["features"][name]["edges"]
        )
        got = stats["features"][name]
        assert (got["histogram"], got["null"]) == (hist, missing), name
    for name in SPEC.categorical:
        values = [None if v is None else str(v) for v in table[name].to_pylist()]
        counts = collections.Counter(v for v in values if v is not None)
        known = set(reference["features"][name]["values"])
        unseen = sorted((v for v in counts if v not in known), key=lambda v: (-counts[v], v))[:3]
        expected_values = {v: counts[v] for v in known if v in counts} | {
            v: counts[v] for v in unseen
        }
        got = stats["features"][name]
        assert got["values"] == expected_values, name
        assert got["null"] == sum(v is None for v in values)
        assert got["other"] == len(values) - got["null"] - sum(expected_values.values())
    assert "gone" not in stats["features"]["color"]["values"]  # absent known value: no row
    assert "" in stats["features"]["color"]["values"]  # the empty string is a value, not NULL


def test_windows_split_rows_by_timestamp(engine):
    table = _table()
    ref = engine.load("t", table)
    source = TableSource.table(engine.warehouse, ref)
    spec = FeatureSpec(label="label", numeric=("x",), categorical=("color",))
    windows = feature_statistics(
        engine.warehouse,
        source,
        spec,
        reference=_reference(table),
        timestamp="at",
        window_seconds=10_000_000,
    )
    seconds = table["at"].cast(pa.int64()).to_numpy() // 1_000_000
    expected = collections.Counter((seconds // 10_000_000).tolist())
    assert {w: s["row_count"] for w, s in windows.items()} == dict(expected)
    w0 = min(windows)
    rows = seconds // 10_000_000 == w0
    hist, missing = _numpy_histogram(
        _as_float(table["x"])[rows], _reference(table)["features"]["x"]["edges"]
    )
    assert windows[w0]["features"]["x"]["histogram"] == hist


def test_training_statistics_quantile_edges_on_the_train_split(duck):
    table = _table()
    ref = duck.load("src", table)
    stats = training_statistics(
        duck.uri(ref),
        SPEC,
        split_ratios=(0.7, 0.15, 0.15),
        class_counts={"0": 30, "1": 10},
        warehouse=duck.warehouse,
    )
    assert stats["class_prior"] == {"0": 0.75, "1": 0.25}
    assert stats["row_count"] == int(_train_rows(N, 7000).sum())  # the train split only
    x = stats["features"]["x"]
    values = _as_float(table["x"])[_train_rows(N, 7000)]
    finite = values[np.isfinite(values)]
    assert len(x["edges"]) <= 21 and np.all(np.diff(x["edges"]) > 0)
    assert x["edges"][0] == finite.min()  # exact outer edges
    assert x["edges"][-1] == np.nextafter(finite.max(), np.inf)
    assert x["null"] == int(np.isnan(values).sum())
    shares = np.asarray(x["histogram"][1:-1]) / sum(x["histogram"])
    assert shares.max() < 0.12  # roughly equal-mass bins (20 of them, 5 % each)
    assert stats["features"]["flag"]["edges"] == [0.0, 1.0, np.nextafter(1.0, 2.0)]
    assert sum(stats["features"]["color"]["values"].values()) + stats["features"]["color"][
        "other"
    ] == (stats["row_count"] - stats["features"]["color"]["null"])
    # the same rows through the same reference reproduce the histograms exactly
    again = training_statistics(
        duck.uri(ref), SPEC, split_ratios=(0.7, 0.15, 0.15), warehouse=duck.warehouse
    )
    assert again["features"]["x"] == x


def test_missing_column_wrong_type_and_empty_table_are_named(engine):
    table = _table()
    ref = engine.load("t", table)
    bad = FeatureSpec(label="label", numeric=("xx",))
    with pytest.raises(SchemaError, match=r"no column 'xx'.*did you mean 'x'"):
        table_statistics(engine.warehouse, ref, bad, reference=_reference(table))
    wrong = FeatureSpec(label="label", numeric=("color",))
    with pytest.raises(SchemaError, match="'color'.*STRING"):
        table_statistics(engine.warehouse, ref, wrong)
    empty = engine.load("empty", table.slice(0, 0))
    with pytest.raises(PipelineInputError, match="has no rows"):
        table_statistics(engine.warehouse, empty, SPEC, reference=_reference(table))
    with pytest.raises(PipelineInputError, match="does not exist"):
        table_statistics(engine.warehouse, ref.with_table("nope"), SPEC)
