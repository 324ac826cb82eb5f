"""Turn one Arrow RecordBatch into a few packed numpy arrays (vectorised, no per-row Python).

``tf.data.Dataset.from_generator`` costs tens of microseconds per yielded tensor whatever its
size, so a batch travels as five tensors: all numeric columns in one ``[n, k]`` float32 matrix,
all categorical strings as one byte buffer plus ``[m, n + 1]`` offsets, the labels and weights.
``vertex_imbalanced.reading.datasets`` splits them back into a feature dict inside the graph.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, SchemaError
from vertex_imbalanced.reading.schema import is_string_type

MISSING_CATEGORY = ""
"""Fill value of a NULL categorical feature; the lookup keeps it as its own category."""

_UNITS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_FLOAT32_TINY = np.float32(np.finfo(np.float32).tiny)


@dataclasses.dataclass
class DatasetReport:
    """Counters filled while a dataset is read (thread-safe).

    Attributes:
        rows_read: rows handed on (after skipped labels), summed over passes.
        batches_read: record batches or chunks read.
        skipped_labels: rows left out under ``label_policy="skip"``.
        skipped_examples: keys of the first 10 skipped rows.
        non_finite: column -> values that were not a finite float32 (+-inf, or beyond
            +-3.4e38) and were read as missing (see :func:`numeric_into`), summed over passes.
    """

    rows_read: int = 0
    batches_read: int = 0
    skipped_labels: int = 0
    skipped_examples: list[str] = dataclasses.field(default_factory=list)
    non_finite: dict[str, int] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, rows: int, skipped: int = 0, examples: Sequence[str] = ()) -> None:
        """Record one batch."""
        with self._lock:
            self.rows_read += rows
            self.batches_read += 1
            self.skipped_labels += skipped
            room = 10 - len(self.skipped_examples)
            if room > 0:
                self.skipped_examples.extend(list(examples)[:room])

    def merge(self, other: DatasetReport) -> None:
        """Add the counters of ``other`` (e.g. one chunk's) to these."""
        with self._lock:
            self.rows_read += other.rows_read
            self.batches_read += other.batches_read
            self.skipped_labels += other.skipped_labels
            room = 10 - len(self.skipped_examples)
            if room > 0:
                self.skipped_examples.extend(other.skipped_examples[:room])
            for column, count in other.non_finite.items():
                self.non_finite[column] = self.non_finite.get(column, 0) + count

    def add_non_finite(self, column: str, count: int) -> None:
        """Record ``count`` non-finite values of ``column`` read as missing."""
        with self._lock:
            self.non_finite[column] = self.non_finite.get(column, 0) + count

    def to_dict(self) -> dict:
        """JSON-safe summary."""
        return {
            "rows_read": self.rows_read,
            "batches_read": self.batches_read,
            "skipped_labels": self.skipped_labels,
            "skipped_examples": list(self.skipped_examples),
            "non_finite": dict(self.non_finite),
        }

    def non_finite_text(self) -> str | None:
        """One line naming the columns with non-finite values read as missing (None if none)."""
        if not self.non_finite:
            return None
        counts = ", ".join(f"{c!r}: {n}" for c, n in sorted(self.non_finite.items()))
        return (
            f"non-finite numeric values (+-inf or beyond float32's range) read as missing: {counts}"
        )


def numeric_to_float32(
    arr: pa.Array | pa.ChunkedArray,
    *,
    column: str | None = None,
    report: DatasetReport | None = None,
) -> np.ndarray:
    """Numeric Arrow array -> float32 numpy by the reading rule of :func:`numeric_into`.

    Args:
        arr: a numeric column (INT*, FLOAT*, BOOL, DECIMAL*, DATE32/64, TIMESTAMP of any unit).
        column: its name, for error messages and the report.
        report: counters; the non-finite values replaced by NaN are added under ``column``.

    Returns:
        A ``[len(arr)]`` float32 array.

    Raises:
        SchemaError: a type that cannot be read as a number (names the column).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    out = np.empty(len(arr), np.float32)
    non_finite = numeric_into(arr, out, column=column)
    if report is not None and non_finite:
        report.add_non_finite(column or "?", non_finite)
    return out


def numeric_into(arr: pa.Array, out: np.ndarray, *, column: str | None = None) -> int:
    """Write a numeric column into the float32 vector ``out``; return the non-finite count.

    The reading rule, the same in every feed and inside or outside tf.data:

    * NULL -> NaN (missing);
    * INT*, FLOAT*, DECIMAL* (NUMERIC, BIGNUMERIC) -> the float32 nearest to the value,
      computed from the exact value through float64 (Arrow's direct DECIMAL -> float32 cast is
      not correctly rounded, and inside tf.data, where TensorFlow flushes subnormal floats to
      zero, it scales BIGNUMERIC by a subnormal ``1e-38`` and truncates 1234.56 to 1234);
    * BOOL -> 0 / 1;
    * DATE32, DATE64, TIMESTAMP of every unit (s, ms, us, ns), with or without time zone ->
      days since 1970-01-01T00:00 UTC (fractional; a zone-less timestamp is read as UTC;
      1 day = 86,400 s, Arrow's leap-second-free clock): the ticks are split exactly into
      whole days and a remainder in int64, combined in float64 and rounded to float32, so
      any Arrow value converts (e.g. ``timestamp[ns]`` of 2024, beyond 2**53 ticks, or
      ``timestamp[us]`` 9999-12-31, BigQuery's placeholder);
    * a magnitude below float32's smallest normal number (1.18e-38) -> 0, as TensorFlow's
      kernels flush it anyway (so a value reads the same inside and outside tf.data);
    * a value that is not a finite float32 -- ``+inf``, ``-inf`` or beyond +-3.4e38 -- is
      **read as missing** (NaN) and counted: the return value, which the feeds add to
      :attr:`DatasetReport.non_finite`. Training, evaluation and batch scoring all read
      through here, so they apply this one rule identically.

    Args:
        arr: one Arrow array (not chunked).
        out: float32 vector of ``len(arr)``.
        column: the column's name, for error messages.

    Returns:
        How many non-finite values were replaced by NaN.

    Raises:
        SchemaError: a type that cannot be read as a number (names the column).
    """
    t = arr.type
    try:
        if pa.types.is_integer(t):
            out[:] = arr.to_numpy(zero_copy_only=False)  # NULL -> NaN; never inf or subnormal
            return 0
        if pa.types.is_floating(t):
            with np.errstate(over="ignore"):  # beyond float32's range -> inf, counted below
                out[:] = arr.to_numpy(zero_copy_only=False)
        elif pa.types.is_boolean(t):
            out[:] = arr.cast(pa.int8()).to_numpy(zero_copy_only=False)
            return 0
        elif pa.types.is_decimal(t):
            with np.errstate(over="ignore"):
                out[:] = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_date32(t):
            out[:] = arr.cast(pa.int32()).to_numpy(zero_copy_only=False)
            return 0
        elif pa.types.is_date64(t):
            out[:] = _days(arr, _UNITS_PER_DAY["ms"])
        elif pa.types.is_timestamp(t):
            out[:] = _days(arr, _UNITS_PER_DAY[t.unit])
        else:
            raise TypeError(f"no numeric reading of Arrow type {t}")
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(
            f"column {column!r}: cannot read its {t} values as float32 numbers ({exc})"
        ) from exc
    return _finite_or_missing(out)


def _days(arr: pa.Array, units_per_day: int) -> np.ndarray:
    """Days since the epoch (float64) of a DATE64 / TIMESTAMP array, NULL -> NaN."""
    ticks = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    # exact in int64; the remainder takes the sign of the ticks, so the sum cannot cancel
    rest = np.fmod(ticks, units_per_day)
    days = ((ticks - rest) // units_per_day).astype(np.float64) + rest / units_per_day
    if arr.null_count:
        days[~arr.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return days


def _finite_or_missing(out: np.ndarray) -> int:
    """Flush subnormals to 0, replace +-inf by NaN in place; return how many were infinite."""
    magnitude = np.abs(out)
    out[magnitude < _FLOAT32_TINY] = 0.0
    infinite = magnitude == np.inf
    count = int(np.count_nonzero(infinite))
    if count:
        out[infinite] = np.nan
    return count


def categorical_to_string(arr: pa.Array) -> pa.Array:
    """Categorical Arrow array -> non-null ``pa.string()`` array (NULL -> MISSING_CATEGORY)."""
    if pa.types.is_boolean(arr.type):
        arr = pc.if_else(arr, "true", "false")
    if not is_string_type(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, MISSING_CATEGORY)
    return arr


def pack_strings(columns: Sequence[pa.Array], n: int) -> tuple[bytes, np.ndarray]:
    """Concatenate string columns into one buffer and ``[m, n + 1]`` int64 offsets."""
    offsets = np.zeros((len(columns), n + 1), dtype=np.int64)
    pieces: list[memoryview] = []
    base = 0
    for j, arr in enumerate(columns):
        _, off_buf, data_buf = arr.buffers()
        off = np.frombuffer(off_buf, dtype=np.int32, count=n + 1, offset=arr.offset * 4)
        start, stop = int(off[0]), int(off[-1])
        offsets[j] = off.astype(np.int64) - start + base
        if data_buf is not None and stop > start:
            pieces.append(memoryview(data_buf)[start:stop])
        base += stop - start
    return b"".join(pieces), offsets


def _pieces(column: pa.Array | pa.ChunkedArray) -> Iterator[tuple[pa.Array, int]]:
    """``(chunk, first row)`` of each Arrow chunk of ``column``."""
    start = 0
    for piece in column.chunks if isinstance(column, pa.ChunkedArray) else (column,):
        yield piece, start
        start += len(piece)


class BatchPacker:
    """Packs record batches of one source for one feature spec and class list."""

    def __init__(
        self,
        spec: FeatureSpec,
        classes: Sequence[str],
        *,
        description: str,
        label_policy: str = "error",
        report: DatasetReport | None = None,
    ) -> None:
        """Create a packer.

        Args:
            spec: feature roles.
            classes: class names in id order; label values are matched as strings. Empty: the
                label must already be non-negative integer ids.
            description: table name for error messages.
            label_policy: ``"error"`` (default) or ``"skip"`` rows with NULL/unknown labels.
            report: counters to update.
        """
        if label_policy not in ("error", "skip"):
            raise ValueError(f"label_policy must be 'error' or 'skip', got {label_policy!r}")
        self.spec = spec
        self.classes = tuple(str(c) for c in classes)
        self._class_set = pa.array(self.classes, type=pa.string())
        # Integer labels match canonical integer class names without a cast to string.
        canonical = all(c.lstrip("-").isdigit() and str(int(c)) == c for c in self.classes)
        self._int_class_set = (
            pa.array([int(c) for c in self.classes], pa.int64())
            if (self.classes and canonical)
            else None
        )
        self.description = description
        self.label_policy = label_policy
        self.report = report if report is not None else DatasetReport()

    def label_ids(self, batch: pa.RecordBatch | pa.Table) -> pa.Array | pa.ChunkedArray:
        """Class ids (int64) with NULL where the label is NULL or not a known class."""
        labels = batch.column(self.spec.label)
        if self._int_class_set is not None and pa.types.is_integer(labels.type):
            ids = pc.index_in(labels.cast(pa.int64()), value_set=self._int_class_set)
            return ids.cast(pa.int64())
        if self.classes:
            as_text = labels if is_string_type(labels.type) else labels.cast(pa.string())
            return pc.index_in(as_text, value_set=self._class_set).cast(pa.int64())
        if not pa.types.is_integer(labels.type):
            raise LabelError(
                f"label column {self.spec.label!r} of {self.description} holds {labels.type} "
                "values; declare the class list or use INT64 ids 0..N-1"
            )
        ids = labels.cast(pa.int64())
        return pc.if_else(pc.less(ids, 0), pa.scalar(None, pa.int64()), ids)

    def _bad_label_error(
        self, batch: pa.RecordBatch | pa.Table, bad: pa.Array | pa.ChunkedArray
    ) -> LabelError:
        idx = pc.indices_nonzero(bad)
        first = int(idx[0].as_py())
        value = batch.column(self.spec.label)[first].as_py()
        where = (
            f"at {self.spec.key}={batch.column(self.spec.key)[first].as_py()!r}"
            if self.spec.key
            else f"at row {first} of a record batch"
        )
        allowed = f"declared classes {list(self.classes)}" if self.classes else "ids 0..N-1"
        what = "NULL" if value is None else f"value {value!r} outside the {allowed}"
        return LabelError(
            f"label column {self.spec.label!r} of {self.description}: {len(idx)} row(s) with a "
            f"NULL or unknown label in this batch; first {what} {where}. "
            "Fix the data or pass label_policy='skip' to drop and count them."
        )

    def labelled(
        self, batch: pa.RecordBatch | pa.Table
    ) -> tuple[pa.RecordBatch | pa.Table, pa.Array | pa.ChunkedArray, int, list[str]]:
        """Check the labels of ``batch``: ``(rows kept, label ids, skipped, skipped keys)``.

        The ids are a non-null int64 Arrow array aligned with the rows kept.

        Raises:
            LabelError: a NULL or unknown label under ``label_policy="error"``.
        """
        ids = self.label_ids(batch)
        skipped = 0
        examples: list[str] = []
        if ids.null_count:
            bad = ids.is_null()
            if self.label_policy == "error":
                raise self._bad_label_error(batch, bad)
            skipped = ids.null_count
            if self.spec.key:
                keys = pc.filter(batch.column(self.spec.key), bad)
                examples = [str(k) for k in keys.slice(0, 10).to_pylist()]
            keep = pc.invert(bad)
            batch = batch.filter(keep)
            ids = pc.filter(ids, keep)
        return batch, ids, skipped, examples

    def pack(
        self, batch: pa.RecordBatch
    ) -> tuple[np.ndarray, bytes, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(numeric[n,k] f32, strings, offsets[m,n+1] i64, label[n] i64, weight[n] f32)``."""
        batch, ids, skipped, examples = self.labelled(batch)
        label = ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        n = batch.num_rows
        numeric = np.empty((n, len(self.spec.numeric)), dtype=np.float32)
        for j, name in enumerate(self.spec.numeric):
            self.numeric_column(batch.column(name), numeric[:, j], name)
        strings, offsets = pack_strings(
            [categorical_to_string(batch.column(name)) for name in self.spec.categorical], n
        )
        weight = self.weights(batch)
        self.report.add(n, skipped, examples)
        return numeric, strings, offsets, label, weight

    def numeric_column(
        self,
        column: pa.Array,
        out: np.ndarray,
        name: str,
        report: DatasetReport | None = None,
    ) -> None:
        """Write feature ``name`` into ``out`` (:func:`numeric_into`), counting non-finite values.

        The count goes to ``report`` (default: the packer's).

        Raises:
            SchemaError: a type that cannot be read as a number (names column and table).
        """
        try:
            non_finite = numeric_into(column, out, column=name)
        except SchemaError as exc:
            raise SchemaError(f"{exc} (in {self.description})") from exc.__cause__
        if non_finite:
            (self.report if report is None else report).add_non_finite(name, non_finite)

    def weights(self, batch: pa.RecordBatch) -> np.ndarray:
        """Example weights (float32; ones without a weight column).

        Raises:
            SchemaError: NULL or non-finite weights (names the column and table).
        """
        col = self.weight_column(batch)
        if col is None:
            return np.ones(batch.num_rows, np.float32)
        out = np.empty(batch.num_rows, np.float32)
        for piece, start in _pieces(col):
            self.weight_into(piece, out[start : start + len(piece)])
        return out

    def weight_into(self, column: pa.Array, out: np.ndarray) -> None:
        """Write weights into ``out``; a weight must be a finite number.

        Raises:
            SchemaError: a non-finite (or NaN) weight.
        """
        non_finite = numeric_into(column, out, column=self.spec.weight)
        if non_finite or np.isnan(out).any():
            raise SchemaError(
                f"weight column {self.spec.weight!r} of {self.description} holds NaN or "
                "infinite values; weights must be finite numbers"
            )

    def weight_column(self, batch: pa.RecordBatch | pa.Table) -> pa.Array | pa.ChunkedArray | None:
        """The weight column (None without one).

        Raises:
            SchemaError: the column has NULL values.
        """
        if self.spec.weight is None:
            return None
        col = batch.column(self.spec.weight)
        if col.null_count:
            raise SchemaError(
                f"weight column {self.spec.weight!r} of {self.description} has NULL values"
            )
        return col
