"""Turn one Arrow RecordBatch into a few packed numpy arrays (vectorised, no per-row Python).

``tf.data.Dataset.from_generator`` costs tens of microseconds per yielded tensor whatever its
size, so a batch travels as five tensors: all numeric columns in one ``[n, k]`` float32 matrix,
all categorical strings as one byte buffer plus ``[m, n + 1]`` offsets, the labels and weights.
``vertex_imbalanced.reading.datasets`` splits them back into a feature dict inside the graph.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, SchemaError
from vertex_imbalanced.reading.schema import is_string_type

MISSING_CATEGORY = ""
"""Fill value of a NULL categorical feature; the lookup keeps it as its own category."""

_DAY_UNITS = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


@dataclasses.dataclass
class DatasetReport:
    """Counters filled while a dataset is read (thread-safe)."""

    rows_read: int = 0
    batches_read: int = 0
    skipped_labels: int = 0
    skipped_examples: list[str] = dataclasses.field(default_factory=list)
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

    def to_dict(self) -> dict:
        """JSON-safe summary."""
        return {
            "rows_read": self.rows_read,
            "batches_read": self.batches_read,
            "skipped_labels": self.skipped_labels,
            "skipped_examples": list(self.skipped_examples),
        }


def numeric_to_float32(arr: pa.Array) -> np.ndarray:
    """Numeric Arrow array -> float32 numpy with NaN for NULL (DATE/TIMESTAMP in days)."""
    t = arr.type
    if pa.types.is_date32(t):
        arr = arr.cast(pa.int32())
    elif pa.types.is_date64(t):
        arr = pc.divide(arr.cast(pa.int64()).cast(pa.float64()), 86_400_000.0)
    elif pa.types.is_timestamp(t):
        arr = pc.divide(arr.cast(pa.int64()).cast(pa.float64()), float(_DAY_UNITS[t.unit]))
    elif pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    arr = arr.cast(pa.float32(), safe=False)
    if arr.null_count:
        arr = pc.fill_null(arr, np.float32("nan"))
    return arr.to_numpy(zero_copy_only=False)


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
            numeric[:, j] = numeric_to_float32(batch.column(name))
        strings, offsets = pack_strings(
            [categorical_to_string(batch.column(name)) for name in self.spec.categorical], n
        )
        weight = self.weights(batch)
        self.report.add(n, skipped, examples)
        return numeric, strings, offsets, label, weight

    def weights(self, batch: pa.RecordBatch) -> np.ndarray:
        """Example weights (float32; ones without a weight column)."""
        col = self.weight_column(batch)
        return np.ones(batch.num_rows, np.float32) if col is None else numeric_to_float32(col)

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
