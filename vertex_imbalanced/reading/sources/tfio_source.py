"""Legacy reader: BigQuery via tensorflow-io 0.37.1 (Storage API v1beta1). ``.venv-legacy`` only.

tensorflow-io cannot share the main env (it needs TF 2.16 / protobuf 4, DESIGN.md §2), so this
module is imported only in ``.venv-legacy`` (``make legacy-env``) and never by the pipeline.
It yields the same ``(features, label, weight)`` batches as ``vertex_imbalanced.reading.datasets.make_dataset``
(docs/ARCHITECTURE.md) as far as tensorflow-io allows. Differences (see docs/legacy_tfio.md):

- **AVRO** (default): tensorflow-io replaces a NULL with a per-column default value. We pick
  defaults that keep NULL visible: FLOAT64 -> NaN; INT64 / DATE / TIMESTAMP -> the type's
  minimum (a sentinel turned into NaN, or "" for INT64 categoricals, after reading);
  STRING -> "". So an INT64 / DATE / TIMESTAMP value equal to that minimum
  (-9223372036854775808, or DATE -2147483648 days) reads as NULL. **BOOL NULL reads as false**
  (0.0, or "false" when categorical): a bool default can only be true or false.
- **ARROW**: tensorflow-io fails on any NULL in a record batch ("Arrow arrays with null values
  not currently supported") and cannot read DATE or TIMESTAMP columns. DATE / TIMESTAMP are
  refused before reading; a NULL surfaces while iterating as a :class:`SourceError` that says
  so (wrap the loop in :func:`raise_tfio_errors`).
- ``label_policy="skip"`` is not offered: NULL / unknown labels and NULL weights are errors
  (``LabelError`` / ``SchemaError`` through :func:`raise_tfio_errors`).
- tensorflow-io's client creates the gRPC stub of each stream on first read, unsynchronised:
  streams starting together in a parallel interleave (its own ``parallel_read_rows`` too) can
  segfault. We create the stubs one by one when the session opens (:meth:`_create_stubs`);
  open every source before iterating any, since a session opened on the same client while
  another is being read races the same way.
- Rows come one at a time out of tensorflow-io's C++ reader; batching inside the per-stream
  interleave (done here) is its fastest configuration.
- No retries, and worse: when a stream fails mid-read (server error, dropped connection) any
  parallel or prefetching pipeline (this one, and tensorflow-io's own ``parallel_read_rows``)
  calls the failed reader again, which calls gRPC's ``Read`` after ``Finish`` and **aborts the
  process** (``call_op_set.h: assertion failed``). ``dataset(num_parallel_calls=1)`` is the
  fail-safe mode: one thread, no prefetch (tf.data's ``inject_prefetch`` and
  ``map_parallelization`` off), and the failure surfaces as a ``SourceError`` -- at the cost
  of speed.

Types are strict in tensorflow-io (FLOAT64 must be read as ``tf.float64``, DATE as ``tf.int32``),
but ``read_session`` needs them before the schema is known. So the session is opened with
provisional types, its schema (Avro JSON or Arrow IPC) read, and a ``BigQueryReadSession`` on
the same streams built with the real types and NULL defaults (that constructor's arguments are
internal to tensorflow-io; they are stable because 0.37.1 is its last release).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tensorflow_io.bigquery import BigQueryClient, BigQueryReadSession

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, PipelineInputError, SchemaError, SourceError
from vertex_imbalanced.reading.sources.base import shard_streams
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns

__all__ = [
    "DATA_FORMATS",
    "INT32_NULL",
    "INT64_NULL",
    "TfioBigQuerySource",
    "make_tfio_dataset",
    "raise_tfio_errors",
]

DATA_FORMATS = ("AVRO", "ARROW")
INT64_NULL = int(np.iinfo(np.int64).min)
"""Default tensorflow-io substitutes for a NULL INT64 / TIMESTAMP (Avro); read back as NULL."""
INT32_NULL = int(np.iinfo(np.int32).min)
"""Default substituted for a NULL DATE (Avro); read back as NULL."""
_NULL_LABEL = "__imbalanced_tfio_null__"  # default for a NULL STRING label (not a class)
_MICROS_PER_DAY = 86_400_000_000.0
_PAST_THE_END = 1 << 62  # a stream offset no table reaches
_MARK, _END = "<imbalanced-tfio>", "</imbalanced-tfio>"  # around our in-graph error messages
_ARROW_NULLS = "Arrow arrays with null values not currently supported"

# BigQuery type -> (tf dtype tensorflow-io must be asked for, default value for NULL (Avro))
_TF_TYPES = {
    "INT64": (tf.int64, str(INT64_NULL)),
    "FLOAT64": (tf.float64, "nan"),
    "BOOL": (tf.bool, "False"),
    "STRING": (tf.string, ""),
    "DATE": (tf.int32, str(INT32_NULL)),
    "TIMESTAMP": (tf.int64, str(INT64_NULL)),
}
_NUMERIC = {"INT64", "FLOAT64", "BOOL", "DATE", "TIMESTAMP"}
_CATEGORICAL = {"STRING", "INT64", "BOOL"}


def _avro_bigquery_type(field: dict) -> str:
    """BigQuery type of a field of the session's Avro schema (``UNSUPPORTED:<avro>`` if none)."""
    avro = field["type"]
    if isinstance(avro, list):  # NULLABLE: ["null", T]
        avro = next((t for t in avro if t != "null"), "null")
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if (avro.get("type"), logical) == ("int", "date"):
            return "DATE"
        if avro.get("type") == "long" and logical in ("timestamp-micros", None):
            return "TIMESTAMP" if logical else "INT64"
        if avro.get("type") == "string" and logical is None:
            return "STRING"
        kind = {"record": "STRUCT", "array": "ARRAY"}.get(avro.get("type"), json.dumps(avro))
        return f"UNSUPPORTED:{kind}"
    simple = {"long": "INT64", "double": "FLOAT64", "boolean": "BOOL", "string": "STRING"}
    return simple.get(avro, f"UNSUPPORTED:{avro}")


def _arrow_bigquery_type(t: pa.DataType) -> str:
    if pa.types.is_int64(t):
        return "INT64"
    if pa.types.is_float64(t):
        return "FLOAT64"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_string(t):
        return "STRING"
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_struct(t):
        return "UNSUPPORTED:STRUCT"
    if pa.types.is_list(t):
        return "UNSUPPORTED:ARRAY"
    return f"UNSUPPORTED:{t}"


def session_column_types(schema: bytes, data_format: str) -> dict[str, str]:
    """BigQuery type of each column of a read session's schema (Avro JSON or Arrow IPC)."""
    if data_format == "AVRO":
        fields = json.loads(schema)["fields"]
        return {f["name"]: _avro_bigquery_type(f) for f in fields}
    arrow = pa.ipc.read_schema(pa.py_buffer(schema))
    return {f.name: _arrow_bigquery_type(f.type) for f in arrow}


class TfioBigQuerySource:
    """A tensorflow-io read session on a BigQuery table for one feature spec.

    Not a ``RecordBatchSource``: tensorflow-io yields tensors, not Arrow batches; this class
    builds the ``tf.data`` pipeline itself (:meth:`dataset`).
    """

    def __init__(
        self,
        table: str | TableRef,
        spec: FeatureSpec,
        *,
        client: BigQueryClient | None = None,
        data_format: str = "AVRO",
        num_streams: int = 2,
        row_restriction: str | None = None,
        parent_project: str | None = None,
    ) -> None:
        """Open a read session on ``table`` for the columns ``spec`` reads.

        Args:
            table: ``[bq://]project.dataset.table``.
            spec: feature roles; every column in ``spec.read_columns`` is read.
            client: ``tensorflow_io.bigquery.BigQueryClient()`` (default, Google credentials) or
                ``BigQueryTestClient("host:port")`` for a local v1beta1 server.
            data_format: ``"AVRO"`` (handles NULLs, see module docstring) or ``"ARROW"``.
            num_streams: streams requested; the server may return fewer.
            row_restriction: optional BigQuery SQL predicate evaluated by the server.
            parent_project: project billed for the read (default: the table's project).

        Raises:
            PipelineInputError: bad arguments, missing table, or a session with zero streams.
            SchemaError: missing column (with the closest name), a type tensorflow-io cannot
                read, or a type that does not fit the column's role.
        """
        self._ref = table if isinstance(table, TableRef) else TableRef.parse(table)
        if not self._ref.project or not self._ref.dataset:
            raise PipelineInputError(f"table {table!r} must be project.dataset.table")
        if data_format not in DATA_FORMATS:
            raise PipelineInputError(
                f"data_format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}"
            )
        if num_streams < 1:
            raise PipelineInputError(f"num_streams must be >= 1, got {num_streams}")
        self.spec = spec
        self.data_format = data_format
        columns = list(spec.read_columns)
        client = client if client is not None else BigQueryClient()
        fmt = BigQueryClient.DataFormat[data_format]
        try:
            probe = client.read_session(
                f"projects/{parent_project or self._ref.project}",
                self._ref.project,
                self._ref.table,
                self._ref.dataset,
                columns,
                [tf.string] * len(columns),  # provisional: real types come from the schema
                requested_streams=num_streams,
                row_restriction=row_restriction or "",
                data_format=fmt,
            )
        except tf.errors.NotFoundError as exc:
            raise PipelineInputError(f"table {self._ref} not found: {exc.message}") from exc
        except tf.errors.InvalidArgumentError as exc:
            raise SchemaError(f"read session on table {self._ref} refused: {exc.message}") from exc
        types = session_column_types(probe._schema.numpy(), data_format)
        require_columns(str(self._ref), columns, list(types))
        self.column_types = {name: types[name] for name in columns}
        self._check_types()
        # Same session (streams, schema), with the output types the schema demands.
        tf_types = [_TF_TYPES[self.column_types[c]][0] for c in columns]
        defaults = [self._default(c) for c in columns]
        self._session = BigQueryReadSession(
            probe._parent,
            probe._project_id,
            probe._table_id,
            probe._dataset_id,
            columns,
            [False] * len(columns),
            tf_types,
            defaults,
            probe._row_restriction,
            probe._requested_streams,
            probe._data_format,
            probe._streams,
            probe._schema,
            probe._client_resource,
        )
        self._streams = probe._streams
        if self.num_streams == 0:
            where = f" (row restriction {row_restriction!r})" if row_restriction else ""
            raise PipelineInputError(
                f"the read session for table {self._ref} has zero streams: the table is empty "
                f"or the row restriction matched no rows{where}"
            )
        self._create_stubs()

    def _create_stubs(self) -> None:
        """Make tensorflow-io create each stream's gRPC stub now, one at a time.

        tensorflow-io caches one stub per stream in an ``unordered_map`` that its readers fill
        on first use without a lock (``BigQueryClientResource::GetStub``), so streams starting
        together in a parallel interleave can corrupt it (segfault, about 1 read in 40 here).
        A read at an offset past the end creates the stub and ends at once (OUT_OF_RANGE or
        empty); later lookups only read the map.
        """
        for stream in self._streams:
            with contextlib.suppress(tf.errors.OpError):
                for _ in self._session.read_rows(stream, offset=_PAST_THE_END):
                    break

    @property
    def description(self) -> str:
        """The table, for messages."""
        return f"bq://{self._ref}"

    @property
    def num_streams(self) -> int:
        """Streams in the session."""
        return int(self._streams.shape[0])

    def _default(self, column: str) -> str:
        if column == self.spec.label and self.column_types[column] == "STRING":
            return _NULL_LABEL
        return _TF_TYPES[self.column_types[column]][1]

    def _check_types(self) -> None:
        spec = self.spec
        roles = [(c, "numeric", _NUMERIC) for c in spec.numeric]
        roles += [(c, "categorical", _CATEGORICAL) for c in spec.categorical]
        roles.append((spec.label, "label", {"INT64", "STRING"} if spec.classes else {"INT64"}))
        if spec.weight:
            roles.append((spec.weight, "weight", {"INT64", "FLOAT64"}))
        if spec.key:
            roles.append((spec.key, "key", {"INT64", "STRING"}))
        for column, role, allowed in roles:
            bq_type = self.column_types[column]
            if bq_type.startswith("UNSUPPORTED:"):
                raise SchemaError(
                    f"column {column!r} of table {self._ref} has type {bq_type[12:]}, which the "
                    "pipeline (and tensorflow-io) cannot read"
                )
            if self.data_format == "ARROW" and bq_type in ("DATE", "TIMESTAMP"):
                raise SchemaError(
                    f"column {column!r} of table {self._ref} is {bq_type}: tensorflow-io's ARROW "
                    "reader cannot read DATE/TIMESTAMP; use data_format='AVRO'"
                )
            if bq_type not in allowed:
                raise SchemaError(
                    f"column {column!r} of table {self._ref} is {bq_type}, which cannot be the "
                    f"{role} column (allowed: {', '.join(sorted(allowed))})"
                )

    def dataset(
        self,
        batch_size: int = 1024,
        *,
        shard_index: int = 0,
        num_shards: int = 1,
        deterministic: bool = False,
        num_parallel_calls: int = 2,
        prefetch: int = 2,
    ) -> tf.data.Dataset:
        """``(features, label, weight)`` batches of ``batch_size`` rows from this shard's streams.

        Each stream is read by tensorflow-io and batched inside the interleave (its fastest
        configuration); the batches are then converted to the contract types in the graph.

        Args:
            batch_size: rows per batch (each stream's last batch may be smaller).
            shard_index: this worker's index (multi-worker training).
            num_shards: number of workers; worker ``i`` reads streams ``i, i + n, ...``.
            deterministic: keep a fixed interleave order (slower).
            num_parallel_calls: streams read at once and parallelism of the conversion
                (fixed: AUTOTUNE can stall at the end of the data). ``1``: fail-safe mode,
                streams read in turn by one thread with no prefetch, so a broken stream is a
                ``SourceError`` instead of a process abort (see the module docstring).
            prefetch: batches to prefetch (parallel mode).

        Returns:
            The dataset; iterate it inside :func:`raise_tfio_errors` to get our exceptions.
        """
        indices = shard_streams(self.num_streams, shard_index, num_shards)
        streams = tf.data.Dataset.from_tensor_slices(
            tf.gather(self._streams, tf.constant(indices, tf.int64))
        )
        session = self._session
        cycle = max(1, len(indices))
        if num_parallel_calls > 1:
            parallel = min(num_parallel_calls, cycle)
            ds = streams.interleave(
                lambda stream: session.read_rows(stream).batch(batch_size),
                cycle_length=cycle,
                num_parallel_calls=parallel,
                deterministic=deterministic,
            )
            ds = ds.map(
                self._convert, num_parallel_calls=num_parallel_calls, deterministic=deterministic
            )
            return ds.prefetch(prefetch)
        # Fail-safe mode: nothing pulls from a stream after it failed (see the module docstring).
        ds = streams.interleave(
            lambda stream: session.read_rows(stream).batch(batch_size), cycle_length=cycle
        ).map(self._convert)
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False  # would pull after a failure
        options.experimental_optimization.map_parallelization = False  # same
        return ds.with_options(options)

    # In-graph conversion to the contract ---------------------------------------------------

    def _is_null(self, column: str, values: tf.Tensor) -> tf.Tensor:
        bq_type = self.column_types[column]
        if bq_type == "FLOAT64":
            return tf.math.is_nan(values)
        if bq_type in ("INT64", "TIMESTAMP"):
            return tf.equal(values, INT64_NULL)
        if bq_type == "DATE":
            return tf.equal(values, INT32_NULL)
        return tf.zeros_like(values, dtype=tf.bool)  # STRING / BOOL: NULL is not visible

    def _numeric(self, column: str, values: tf.Tensor) -> tf.Tensor:
        bq_type = self.column_types[column]
        if bq_type == "TIMESTAMP":
            out = tf.cast(tf.cast(values, tf.float64) / _MICROS_PER_DAY, tf.float32)
        else:
            out = tf.cast(values, tf.float32)
        if bq_type in ("INT64", "DATE", "TIMESTAMP"):
            out = tf.where(self._is_null(column, values), np.float32("nan"), out)
        return out

    def _categorical(self, column: str, values: tf.Tensor) -> tf.Tensor:
        bq_type = self.column_types[column]
        if bq_type == "BOOL":
            return tf.where(values, "true", "false")
        if bq_type == "INT64":
            return tf.where(self._is_null(column, values), "", tf.strings.as_string(values))
        return values

    def _key_text(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        key = self.spec.key
        if key is None:
            return tf.constant("?")
        values = row[key]
        return values if values.dtype == tf.string else tf.strings.as_string(values)

    def _label(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        spec = self.spec
        raw = row[spec.label]
        if spec.classes:
            text = raw if raw.dtype == tf.string else tf.strings.as_string(raw)
            hits = tf.equal(text[:, None], tf.constant(spec.classes)[None, :])
            ok = tf.reduce_any(hits, axis=1)
            ids = tf.argmax(tf.cast(hits, tf.int32), axis=1, output_type=tf.int64)
            allowed = f"declared classes {list(spec.classes)}"
        else:
            text = tf.strings.as_string(raw)
            ok = tf.greater_equal(raw, 0)
            ids = raw
            allowed = "ids 0..N-1"
        null = self._is_null(spec.label, raw) | tf.equal(text, _NULL_LABEL)
        shown = tf.where(null, "NULL", tf.strings.join(["value ", text]))
        self._assert_all(
            ok & ~null,
            shown,
            self._key_text(row),
            f"LabelError: label column {spec.label!r} of {self.description}: NULL or a value "
            f"outside the {allowed}; first: {{}} at {spec.key or 'key'}={{}}",
        )
        return ids

    def _weight(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        column = self.spec.weight
        values = row[column]
        null = self._is_null(column, values)
        self._assert_all(
            ~null,
            tf.strings.as_string(values),
            self._key_text(row),
            f"SchemaError: weight column {column!r} of {self.description} has NULL values; "
            f"first: {{}} at {self.spec.key or 'key'}={{}}",
        )
        return self._numeric(column, values)

    @staticmethod
    def _assert_all(ok: tf.Tensor, shown: tf.Tensor, keys: tf.Tensor, template: str) -> None:
        first = tf.argmin(tf.cast(ok, tf.int32))
        key = keys if keys.shape.rank == 0 else tf.gather(keys, first)
        head, middle, tail = template.split("{}")
        parts = [_MARK + head, tf.gather(shown, first), middle, key, tail + _END]
        message = tf.strings.join(parts)
        tf.debugging.Assert(tf.reduce_all(ok), [message], summarize=1)

    def _convert(self, row: dict[str, tf.Tensor]):
        spec = self.spec
        features = {c: self._numeric(c, row[c]) for c in spec.numeric}
        features.update({c: self._categorical(c, row[c]) for c in spec.categorical})
        label = self._label(row)
        weight = self._weight(row) if spec.weight else tf.ones_like(label, dtype=tf.float32)
        return features, label, weight


def make_tfio_dataset(
    table: str | TableRef,
    spec: FeatureSpec,
    *,
    client: BigQueryClient | None = None,
    data_format: str = "AVRO",
    num_streams: int = 2,
    batch_size: int = 1024,
    row_restriction: str | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Open a :class:`TfioBigQuerySource` and return its :meth:`~TfioBigQuerySource.dataset`.

    Args:
        table: ``[bq://]project.dataset.table``.
        spec: feature roles.
        client: tensorflow-io client (default: ``BigQueryClient()``).
        data_format: ``"AVRO"`` or ``"ARROW"`` (no NULLs, no DATE/TIMESTAMP).
        num_streams: streams requested.
        batch_size: rows per batch.
        row_restriction: optional BigQuery SQL predicate.
        shard_index: this worker's index.
        num_shards: number of workers.
        deterministic: fixed interleave order.

    Returns:
        ``tf.data.Dataset`` of ``(features, label, weight)``.
    """
    source = TfioBigQuerySource(
        table,
        spec,
        client=client,
        data_format=data_format,
        num_streams=num_streams,
        row_restriction=row_restriction,
    )
    return source.dataset(
        batch_size, shard_index=shard_index, num_shards=num_shards, deterministic=deterministic
    )


_ERROR_TYPES = {"LabelError": LabelError, "SchemaError": SchemaError}
_OUR_MESSAGE = re.compile(re.escape(_MARK) + r"(\w+): (.*?)" + re.escape(_END), re.S)


def _unescape(text: str) -> str:
    """Undo the C escaping TF applies to strings printed by ``tf.debugging.Assert``."""
    raw = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


@contextlib.contextmanager
def raise_tfio_errors(description: str = "the table") -> Iterator[None]:
    """Turn tensorflow-io / in-graph failures met while iterating into our exceptions.

    - our label / weight assertions -> ``LabelError`` / ``SchemaError`` with their message;
    - a NULL in ARROW format -> ``SourceError`` saying tensorflow-io's Arrow path cannot read
      NULLs (use AVRO);
    - a broken stream (e.g. UNAVAILABLE) -> ``SourceError``: tensorflow-io does not retry.

    Args:
        description: table named in the messages.
    """
    try:
        yield
    except tf.errors.OpError as exc:
        match = _OUR_MESSAGE.search(exc.message)
        if match:
            raise _ERROR_TYPES[match.group(1)](_unescape(match.group(2))) from None
        if _ARROW_NULLS in exc.message:
            raise SourceError(
                f"{description} has NULL values, which tensorflow-io's ARROW reader cannot read "
                f"({_ARROW_NULLS!r}); read it with data_format='AVRO' (NULL -> default value) "
                "or with the Storage Read v1 reader"
            ) from None
        if isinstance(exc, tf.errors.UnavailableError | tf.errors.AbortedError):
            raise SourceError(
                f"reading {description} with tensorflow-io failed (it does not retry a broken "
                f"stream): {exc.message}"
            ) from None
        raise
