"""Every Arrow numeric, date, timestamp and decimal type reads as documented, in and out of tf.data.

Issue 11 cases 3 and 4. The oracle is independent of the code under test: Python's exact
``fractions.Fraction`` of the value (days since the epoch, or the decimal), rounded once to the
nearest float64 by ``float()``, then to float32 by numpy; magnitudes below float32's smallest
normal read as 0 and values beyond float32's range as missing (NaN), as documented in
``record_packing.numeric_into``. Each type is read three ways -- the converter called directly
(outside tf.data), the raw feed (``make_dataset``) and the training feed
(``make_encoded_dataset``) -- and all three must equal the oracle bit for bit: inside tf.data
TensorFlow flushes subnormal floats, which is how BIGNUMERIC 1234.56 became 1234 there.
"""

import datetime as dt
import decimal
import fractions
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import SchemaError
from vertex_imbalanced.reading.datasets import (
    FeedOptions,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.record_packing import numeric_to_float32
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource

UNITS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
TINY = float(np.finfo(np.float32).tiny)
INT64 = (-(2**63), 2**63 - 1)
Exact = fractions.Fraction | None


def expected_float32(exact: list[Exact]) -> np.ndarray:
    """The documented float32 of exact values (NaN for NULL and beyond float32's range)."""
    out = np.empty(len(exact), np.float32)
    for i, value in enumerate(exact):
        if value is None:
            out[i] = np.nan
            continue
        with np.errstate(over="ignore"):
            f32 = np.float32(float(value))  # float() of a Fraction is correctly rounded
        out[i] = np.nan if np.isinf(f32) else (0.0 if abs(float(f32)) < TINY else f32)
    return out


def read_three_ways(columns: dict[str, pa.Array]) -> dict[str, list[np.ndarray]]:
    """Each column through the converter, the raw feed and the training feed (table order)."""
    n = len(next(iter(columns.values())))
    table = pa.table({**columns, "label": pa.array(np.arange(n) % 2, pa.int64())})
    spec = FeatureSpec(label="label", numeric=tuple(columns), classes=("0", "1"))
    source = ArrowTableSource(table, num_streams=1, batch_rows=64)  # one stream: table order
    with raise_source_errors():
        raw = list(make_dataset(source, spec))
        feed = make_encoded_dataset(source, spec, {}, FeedOptions(batch_size=1000), chunk_rows=100)
        encoded = np.concatenate([f["numeric"].numpy() for f, _, _ in feed])
    return {
        name: [
            numeric_to_float32(arr, column=name),
            np.concatenate([f[name].numpy() for f, _, _ in raw]),
            encoded[:, j],
        ]
        for j, (name, arr) in enumerate(columns.items())
    }


def assert_reads_as(columns: dict[str, pa.Array], exact: list[Exact]) -> None:
    """Every column of ``columns`` reads as the documented float32 of ``exact``, three ways."""
    want = expected_float32(exact)
    ways = ("outside tf.data", "raw feed", "training feed")
    for name, results in read_three_ways(columns).items():
        for got, where in zip(results, ways, strict=True):
            assert got.dtype == np.float32
            # bit for bit (NaN == NaN; -0.0 and 0.0 both mean 0)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {where}")


# --- timestamps and dates ----------------------------------------------------------------


def ticks_for(unit: str, rng: random.Random) -> list[int | None]:
    """Ticks of ``unit``: notable instants, the full int64 range and everyday values."""
    per_s = UNITS_PER_DAY[unit] // 86_400
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def at(*args) -> int:
        return int((dt.datetime(*args, tzinfo=dt.UTC) - epoch).total_seconds()) * per_s

    notable = [0, 1, -1, at(2023, 6, 1, 12), at(2024, 1, 1), at(1969, 12, 31, 18), None]
    if unit != "ns":  # 9999-12-31 23:59:59.999999, BigQuery's largest TIMESTAMP (placeholder)
        notable += [at(9999, 12, 31, 23, 59, 59) + per_s - 1, at(1, 1, 1)]
    full = [rng.randint(*INT64) for _ in range(150)]
    everyday = [rng.randint(at(1900, 1, 1), at(2100, 1, 1)) for _ in range(150)]
    return [*notable, INT64[0], INT64[1], *full, *everyday]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_every_timestamp_unit_and_zone_reads_as_days_since_the_epoch(unit):
    ticks = ticks_for(unit, random.Random(unit))
    ints = pa.array(ticks, pa.int64())
    zones = {"naive": None, "utc": "UTC", "new_york": "America/New_York", "india": "+05:30"}
    columns = {name: ints.cast(pa.timestamp(unit, tz=tz)) for name, tz in zones.items()}
    days = [None if t is None else fractions.Fraction(t, UNITS_PER_DAY[unit]) for t in ticks]
    assert_reads_as(columns, days)


def test_pandas_datetime_columns_of_2023_and_2024_read_in_the_feeds():
    """The issue's crash: parquet written by pandas holds ``timestamp[ns]`` (> 2**53 ns)."""
    frame = pd.DataFrame(
        {
            "naive": pd.to_datetime(["2023-03-01 06:00", "2024-01-01 00:00", None]).as_unit("ns"),
            "paris": pd.to_datetime(["2023-03-01 07:00", "2024-01-01 01:00", None])
            .tz_localize("Europe/Paris")
            .as_unit("ns"),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.field("naive").type == pa.timestamp("ns")
    want = np.array([19417.25, 19723.0, np.nan], np.float32)  # days since 1970-01-01 UTC
    columns = {name: table.column(name).combine_chunks() for name in ("naive", "paris")}
    for name, results in read_three_ways(columns).items():
        for got in results:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_bigquery_placeholder_9999_12_31_reads_in_the_feeds():
    arr = pa.array([dt.datetime(9999, 12, 31, 23, 59, 59, 999999)], pa.timestamp("us", tz="UTC"))
    for got in read_three_ways({"ts": arr})["ts"]:
        assert got[0] == np.float32(2_932_896.9999999884)  # days from 1970 to 10000-01-01


def test_date32_and_date64_read_as_days():
    rng = random.Random(32)
    days32 = [0, -1, 19723, 2_932_896, -719_162, None, -(2**31), 2**31 - 1]
    days32 += [rng.randint(-(2**31), 2**31 - 1) for _ in range(100)]
    date32 = pa.array(days32, pa.int32()).cast(pa.date32())
    assert_reads_as({"d32": date32}, [_frac(d) for d in days32])
    ms = [0, 86_400_000 * 19723, -86_400_000, None, 1, INT64[0], INT64[1]]
    ms += [rng.randint(*INT64) for _ in range(100)]
    exact = [None if m is None else fractions.Fraction(m, 86_400_000) for m in ms]
    assert_reads_as({"d64": pa.array(ms, pa.int64()).cast(pa.date64())}, exact)


def _frac(value) -> Exact:
    return None if value is None else fractions.Fraction(value)


# --- decimals ----------------------------------------------------------------------------

DECIMAL_TYPES = [
    pa.decimal32(9, 2),
    pa.decimal64(18, 4),
    pa.decimal128(10, 2),
    pa.decimal128(38, 9),  # BigQuery NUMERIC
    pa.decimal128(38, 0),
    pa.decimal128(38, 38),
    pa.decimal256(76, 38),  # BigQuery BIGNUMERIC over the Storage Read API
    pa.decimal256(76, 0),
    pa.decimal256(76, 76),
    pa.decimal256(50, 45),
]


def decimals_for(t: pa.DataType, rng: random.Random) -> list[decimal.Decimal | None]:
    """Values of every magnitude ``t`` holds, the issue's examples and the extremes."""
    p, s = t.precision, t.scale
    largest = 10**p - 1
    unscaled = [0, 1, -1, largest, -largest]
    unscaled += [rng.randint(1 - 10**d, 10**d - 1) for d in rng.choices(range(1, p + 1), k=200)]
    # exact: (sign, digits, exponent) does not round to the context's 28 digits
    values: list[decimal.Decimal | None] = [
        decimal.Decimal((int(u < 0), tuple(int(c) for c in str(abs(u))), -s)) for u in unscaled
    ]
    if p - s >= 4 and s >= 2:  # 1234.56, 0.75, -2.5 (BIGNUMERIC read 1234, 0, -2 in tf.data)
        values += [decimal.Decimal("1234.56"), decimal.Decimal("0.75"), decimal.Decimal("-2.5")]
    return [*values, None]


@pytest.mark.parametrize("t", DECIMAL_TYPES, ids=str)
def test_every_decimal_type_reads_as_the_nearest_float32(t):
    values = decimals_for(t, random.Random(str(t)))
    arr = pa.array(values, t)
    assert_reads_as({"dec": arr}, [_frac(v) for v in values])


def test_bignumeric_issue_values_are_exact_inside_tf_data():
    arr = pa.array(
        [decimal.Decimal("1234.56"), decimal.Decimal("0.75"), decimal.Decimal("-2.5")],
        pa.decimal256(76, 38),
    )
    for got in read_three_ways({"big": arr})["big"]:
        np.testing.assert_array_equal(got, np.array([1234.56, 0.75, -2.5], np.float32))


# --- floats, integers, booleans ----------------------------------------------------------


@pytest.mark.parametrize("t", [pa.float16(), pa.float32(), pa.float64()], ids=str)
def test_float_types_read_as_the_nearest_float32(t):
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1e-40, -1e-45, 1e-30, 3.4028235e38, 1e39, np.inf, -np.inf, np.nan, 0.0]
    values += (rng.standard_normal(100) * 10.0 ** rng.integers(-300, 300, 100)).tolist()
    with np.errstate(over="ignore"):
        stored = np.array(values).astype(t.to_pandas_dtype())
    mask = np.zeros(len(values), bool)
    mask[10] = True  # one NULL
    arr = pa.array(stored, t, mask=mask)
    exact = [
        None if v is None or not np.isfinite(v) else fractions.Fraction(float(v))
        for v in arr.to_pylist()
    ]
    assert_reads_as({"f": arr}, exact)


INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64()]


@pytest.mark.parametrize("t", INT_TYPES, ids=str)
def test_integer_types_read_as_the_nearest_float32_with_nulls(t):
    info = np.iinfo(t.to_pandas_dtype())
    rng = random.Random(str(t))
    values = [0, 1, int(info.min), int(info.max), None]
    values += [rng.randint(int(info.min), int(info.max)) for _ in range(200)]
    assert_reads_as({"i": pa.array(values, t)}, [_frac(v) for v in values])


def test_booleans_read_as_zero_and_one():
    assert_reads_as({"b": pa.array([True, False, None])}, [_frac(1), _frac(0), None])


def test_a_type_without_a_numeric_reading_names_the_column():
    with pytest.raises(SchemaError, match=r"column 'when'.*time64"):
        numeric_to_float32(pa.array([dt.time(1, 2)], pa.time64("us")), column="when")
