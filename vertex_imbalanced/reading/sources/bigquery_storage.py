"""BigQuery Storage Read API v1 as a RecordBatchSource (ARROW format, resumable streams).

One read session per source: selected columns, optional row restriction, up to
``num_streams`` streams. Each stream's responses are decoded into whole ``pa.RecordBatch``
objects straight from the serialized Arrow IPC bytes (no per-row Python, no extra copy).

Resumption: ``ReadRows`` is called through the GAPIC client (auth, routing header) with
``retry=None``, and this module reconnects itself. The veneer ``BigQueryReadClient.read_rows``
(``reader.ReadRowsStream``) also resumes, but it retries ``ServiceUnavailable`` without any
bound, so a stream that keeps failing would hang the reader. Here a transient error
(UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, ABORTED, UNKNOWN) reopens the stream at the offset
of the next row not yet yielded, so no row is lost or doubled; after ``max_retries`` consecutive
failures without a new row a :class:`SourceError` names the stream and the offset.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence

import pyarrow as pa
from google.api_core import exceptions as gexc

from vertex_imbalanced.errors import PipelineInputError, SchemaError, SourceError
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns, validate_column

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.Unknown,
)
"""Errors after which a stream is reopened at the next offset."""


def _gapic_read_rows():
    """The unwrapped GAPIC ``read_rows`` (no built-in unbounded reconnect)."""
    from google.cloud.bigquery_storage_v1.services.big_query_read import BigQueryReadClient

    return BigQueryReadClient.read_rows


def _table_path(ref: TableRef) -> str:
    return f"projects/{ref.project}/datasets/{ref.dataset}/tables/{ref.table}"


class BigQueryStorageSource:
    """A BigQuery table read through one Storage Read API v1 session in ARROW format."""

    def __init__(
        self,
        table: str | TableRef,
        columns: Sequence[str] | None,
        row_restriction: str | None = None,
        num_streams: int = 2,
        *,
        client=None,
        billing_project: str | None = None,
        max_retries: int = 5,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 16.0,
    ) -> None:
        """Create the read session (no rows are read yet).

        Args:
            table: ``[bq://]project.dataset.table`` or a TableRef with project and dataset.
            columns: columns to read (None: all). The schema and batches follow this order.
            row_restriction: BigQuery SQL predicate applied by the server (e.g. ``split = 1``).
            num_streams: the most streams to ask for; the service may return fewer.
            client: a ``BigQueryReadClient`` (default: one with application-default credentials).
            billing_project: project billed for the read (default: the table's project).
            max_retries: consecutive failed attempts of a stream without a new row before
                giving up.
            retry_backoff_s: first wait before reopening a stream; doubles on each failure.
            max_backoff_s: cap of the wait.

        Raises:
            PipelineInputError: bad table reference, missing table, a row restriction the
                service rejects, or a session with zero streams (empty table or no row matched).
            SchemaError: a missing column (with the closest name) or a STRUCT/ARRAY column.
        """
        self._ref = table if isinstance(table, TableRef) else TableRef.parse(table)
        if not self._ref.project or not self._ref.dataset:
            raise PipelineInputError(
                f"table reference {table!r} needs project.dataset.table for BigQuery"
            )
        self._columns = None if columns is None else [validate_column(c) for c in columns]
        if self._columns == []:
            raise PipelineInputError(f"no columns selected from {self._ref} (None reads all)")
        if self._columns is not None and len(set(self._columns)) != len(self._columns):
            raise PipelineInputError(f"duplicate columns in {self._columns} for {self._ref}")
        if num_streams < 1:
            raise PipelineInputError(f"num_streams must be >= 1, got {num_streams}")
        self._row_restriction = row_restriction or ""
        if client is None:
            from google.cloud.bigquery_storage_v1 import BigQueryReadClient

            client = BigQueryReadClient()
        self._client = client
        self._read_rows = _gapic_read_rows()
        self._max_retries = max_retries
        self._backoff = retry_backoff_s
        self._max_backoff = max_backoff_s
        self._parent = f"projects/{billing_project or self._ref.project}"
        session = self._create_session(self._columns, self._row_restriction, num_streams)
        self._session_schema = pa.ipc.read_schema(
            pa.py_buffer(session.arrow_schema.serialized_schema)
        )
        self._check_types(self._session_schema)
        wanted = self._columns or list(self._session_schema.names)
        require_columns(str(self._ref), wanted, list(self._session_schema.names))
        # The service sends the selected fields in table order; put them in the caller's order.
        self._order = (
            None
            if list(self._session_schema.names) == wanted
            else [self._session_schema.get_field_index(c) for c in wanted]
        )
        self._schema = pa.schema([self._session_schema.field(c) for c in wanted])
        self._streams = tuple(s.name for s in session.streams)
        self.session_name: str = session.name
        self.estimated_row_count: int = int(session.estimated_row_count)
        if not self._streams:
            where = f" (row restriction {self._row_restriction!r})" if self._row_restriction else ""
            raise PipelineInputError(
                f"the read session for table {self._ref} has zero streams: table {self._ref} "
                f"is empty or the row restriction matched no rows{where}"
            )

    # RecordBatchSource ---------------------------------------------------------------------

    @property
    def description(self) -> str:
        """``bq://project.dataset.table`` (with the row restriction, if any)."""
        where = f" WHERE {self._row_restriction}" if self._row_restriction else ""
        return f"bq://{self._ref}{where}"

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of the selected columns, in the order they were asked for."""
        return self._schema

    @property
    def num_streams(self) -> int:
        """Streams the service returned (between 1 and the number asked for)."""
        return len(self._streams)

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Full names of the session's streams."""
        return self._streams

    def read_stream(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of stream ``index``, reconnecting on transient errors.

        Raises:
            SourceError: the stream failed ``max_retries`` times in a row without progress,
                or failed with a non-transient error; the message names stream and offset.
        """
        name = self._streams[index]
        offset = 0
        failures = 0
        while True:
            progress_at = offset
            call = None
            try:
                call = self._read_rows(self._client, read_stream=name, offset=offset, retry=None)
                for batch in self._decode(call):
                    offset += batch.num_rows
                    yield batch
                return
            except TRANSIENT_ERRORS as exc:
                failures = 1 if offset > progress_at else failures + 1
                if failures > self._max_retries:
                    raise SourceError(
                        f"stream {name} of table {self._ref} failed at offset {offset} "
                        f"{failures} times in a row (max_retries={self._max_retries}): {exc}"
                    ) from exc
                self._sleep(failures)
            except gexc.GoogleAPICallError as exc:
                raise SourceError(
                    f"stream {name} of table {self._ref} failed at offset {offset}: {exc}"
                ) from exc
            finally:
                cancel = getattr(call, "cancel", None)
                if cancel is not None:
                    cancel()

    # internals -----------------------------------------------------------------------------

    def _decode(self, responses) -> Iterator[pa.RecordBatch]:
        schema = self._session_schema
        order = self._order
        to_pb = type(self)._response_pb
        for response in responses:
            pb = to_pb(response)
            if not (pb.row_count or pb.arrow_record_batch.row_count):
                continue  # stats-only message
            data = pb.arrow_record_batch.serialized_record_batch
            batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
            yield batch if order is None else batch.select(order)

    @staticmethod
    def _response_pb(response):
        """The raw protobuf of a proto-plus response (field access without marshalling)."""
        return getattr(response, "_pb", response)

    def _sleep(self, failures: int) -> None:
        delay = min(self._max_backoff, self._backoff * 2 ** (failures - 1))
        time.sleep(delay * (0.5 + random.random() / 2))

    def _create_session(self, columns: list[str] | None, restriction: str, streams: int):
        from google.cloud.bigquery_storage_v1 import types

        read_options = types.ReadSession.TableReadOptions(
            selected_fields=columns or [], row_restriction=restriction
        )
        requested = types.ReadSession(
            table=_table_path(self._ref),
            data_format=types.DataFormat.ARROW,
            read_options=read_options,
        )
        try:
            return self._client.create_read_session(
                parent=self._parent, read_session=requested, max_stream_count=streams
            )
        except gexc.NotFound as exc:
            raise PipelineInputError(f"table {self._ref} not found: {exc.message}") from exc
        except gexc.InvalidArgument as exc:
            if columns:
                self._explain_bad_columns(columns, exc)
            raise PipelineInputError(
                f"BigQuery rejected the read of table {self._ref} "
                f"(row restriction {restriction!r}): {exc.message}"
            ) from exc

    def _explain_bad_columns(self, columns: list[str], exc: Exception) -> None:
        """Raise a SchemaError naming a missing column, if that is why the session failed."""
        try:
            probe = self._create_session(None, "", 1)
        except PipelineInputError:
            return
        names = list(pa.ipc.read_schema(pa.py_buffer(probe.arrow_schema.serialized_schema)).names)
        try:
            require_columns(str(self._ref), columns, names)
        except SchemaError as missing:
            raise missing from exc

    def _check_types(self, schema: pa.Schema) -> None:
        for field in schema:
            if pa.types.is_nested(field.type):
                kind = "STRUCT" if pa.types.is_struct(field.type) else "ARRAY"
                raise SchemaError(
                    f"column {field.name!r} of table {self._ref} has unsupported type {kind} "
                    f"({field.type}); select scalar columns only or flatten it in SQL"
                )
