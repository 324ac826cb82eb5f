"""BigQuery Storage Read API v1 as a RecordBatchSource (ARROW format, resumable streams).

One read session at a time per source: selected columns, optional row restriction, up to
``num_streams`` streams (the service may return fewer, often one). Each stream's responses are
decoded into whole ``pa.RecordBatch`` objects straight from the serialized Arrow IPC bytes
(no per-row Python, no extra copy).

Billing: the session is created in ``billing_project`` (``parent=projects/<billing>``) while
the table may live in another project (a public or shared data project that refuses jobs).

Resumption: ``ReadRows`` is called through the GAPIC client (auth, routing header) with
``retry=None``, and this module reconnects itself. The veneer ``BigQueryReadClient.read_rows``
(``reader.ReadRowsStream``) also resumes, but it retries ``ServiceUnavailable`` without any
bound, so a stream that keeps failing would hang the reader. Here a transient error
(UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, ABORTED, UNKNOWN) reopens the stream at the offset
of the next row not yet yielded, so no row is lost or doubled; after ``max_retries`` consecutive
failures without a new row a :class:`SourceError` names the stream and the offset.
``RESOURCE_EXHAUSTED`` (throttling) is retried like the official reader does: only when the
error carries a ``google.rpc.RetryInfo``, after exactly the delay it gives, at most
``max_throttle_retries`` times in a row without a new row; without retry info it is final.

Session expiry: BigQuery expires a read session 6 hours after creation, and a new session may
split the rows into other streams. So a session is only ever replaced between two passes over
the table: every call of ``read_stream(i)`` is one pass of stream ``i``, pass ``p`` of every
stream uses the same session, and pass ``p`` gets a new session when the previous one expires
within ``session_refresh_margin_s``. A new session is asked for as many streams as the first
one had; stream ``i`` then reads the new session's streams ``i, i + n, ...`` (fewer returned
streams leave some empty). Each pass therefore reads every row exactly once, for any number of
epochs. A single pass must finish within the margin; one that outlives its session fails with
a SourceError that says so.

Pickling (Beam ships a source to its workers): the copy keeps the session and its streams and
re-creates its client with ``client_factory`` (default: application-default credentials). A
copy never renews its session: copies on several machines are disjoint only while they read
the one session the launcher created.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa
from google.api_core import exceptions as gexc

from vertex_imbalanced.errors import PipelineInputError, SchemaError, SourceError
from vertex_imbalanced.reading.sources.base import and_restrictions, shard_restriction
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns, validate_column

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.Unknown,
)
"""Errors after which a stream is reopened at the next offset."""

SESSION_LIFETIME_S = 6 * 3600.0
"""BigQuery read sessions expire this long after creation (used if a session has no expiry)."""


def _gapic_read_rows():
    """The unwrapped GAPIC ``read_rows`` (no built-in unbounded reconnect)."""
    from google.cloud.bigquery_storage_v1.services.big_query_read import BigQueryReadClient

    return BigQueryReadClient.read_rows


def _table_path(ref: TableRef) -> str:
    return f"projects/{ref.project}/datasets/{ref.dataset}/tables/{ref.table}"


def retry_delay_s(exc: Exception) -> float | None:
    """The delay a RESOURCE_EXHAUSTED error asks for (its RetryInfo), else None.

    The official reader's rule (``reader.ReadRowsStream``): only ``ResourceExhausted`` with a
    ``google.rpc.RetryInfo`` in its details is retryable; negative delays count as 0.
    """
    if not isinstance(exc, gexc.ResourceExhausted):
        return None
    from google.rpc import error_details_pb2

    for detail in getattr(exc, "details", None) or ():
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            delay = detail.retry_delay
            return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None


@dataclasses.dataclass(frozen=True)
class _Session:
    name: str
    streams: tuple[str, ...]
    expire_time: float  # seconds since the epoch


class BigQueryStorageSource:
    """A BigQuery table read through Storage Read API v1 sessions in ARROW format."""

    def __init__(
        self,
        table: str | TableRef,
        columns: Sequence[str] | None,
        row_restriction: str | None = None,
        num_streams: int = 2,
        *,
        client=None,
        client_factory: Callable[[], object] | None = None,
        billing_project: str | None = None,
        max_retries: int = 5,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 16.0,
        max_throttle_retries: int = 20,
        session_refresh_margin_s: float = 3 * 3600.0,
    ) -> None:
        """Create the read session (no rows are read yet).

        Args:
            table: ``[bq://]project.dataset.table`` or a TableRef with project and dataset.
            columns: columns to read (None: all). The schema and batches follow this order.
            row_restriction: BigQuery SQL predicate applied by the server (e.g. ``split = 1``).
            num_streams: the most streams to ask for; the service may return fewer.
            client: a ``BigQueryReadClient`` (default: ``client_factory()``).
            client_factory: makes a client here and in unpickled copies (picklable, e.g. a
                ``functools.partial``; default: ``BigQueryReadClient()`` with
                application-default credentials).
            billing_project: project the read sessions run in and bill to (default: the
                table's project). Pass the pipeline's project when the table is in a project
                you may only read.
            max_retries: consecutive failed attempts of a stream without a new row before
                giving up (transient errors).
            retry_backoff_s: first wait before reopening a stream; doubles on each failure.
            max_backoff_s: cap of the wait.
            max_throttle_retries: consecutive RESOURCE_EXHAUSTED errors with retry info
                without a new row before giving up (each waits the delay the service gives).
            session_refresh_margin_s: a pass over the table starts on a new session when the
                current one expires within this many seconds (sessions live 6 hours); a pass
                must finish within it.

        Raises:
            PipelineInputError: bad table reference, missing table, a billing project in
                which the caller may not create read sessions, a row restriction the service
                rejects, or a session with zero streams (empty table or no row matched).
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
        if not 0 <= session_refresh_margin_s < SESSION_LIFETIME_S:
            raise PipelineInputError(
                f"session_refresh_margin_s must be in [0, {SESSION_LIFETIME_S:.0f}) seconds "
                f"(sessions live 6 hours), got {session_refresh_margin_s}"
            )
        self._row_restriction = row_restriction or ""
        self._client_factory = client_factory
        self._client = client if client is not None else self._new_client()
        self._read_rows = _gapic_read_rows()
        self._renewable = True
        self._requested_streams = num_streams
        self._billing_project = billing_project or self._ref.project
        self._parent = f"projects/{self._billing_project}"
        self._options = {
            "max_retries": max_retries,
            "retry_backoff_s": retry_backoff_s,
            "max_backoff_s": max_backoff_s,
            "max_throttle_retries": max_throttle_retries,
            "session_refresh_margin_s": session_refresh_margin_s,
        }
        self._max_retries = max_retries
        self._backoff = retry_backoff_s
        self._max_backoff = max_backoff_s
        self._max_throttle_retries = max_throttle_retries
        self._refresh_margin = session_refresh_margin_s
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
        self.estimated_row_count: int = int(session.estimated_row_count)
        if not session.streams:
            where = f" (row restriction {self._row_restriction!r})" if self._row_restriction else ""
            raise PipelineInputError(
                f"the read session for table {self._ref} has zero streams: table {self._ref} "
                f"is empty or the row restriction matched no rows{where}"
            )
        self._latest = self._session_of(session)
        self._lock = threading.Lock()
        self._passes = [0] * len(self._latest.streams)  # passes started, per stream
        self._by_pass: dict[int, _Session] = {}
        self.sessions_created: int = 1

    def _new_client(self):
        if self._client_factory is not None:
            return self._client_factory()
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient

        return BigQueryReadClient()

    def __getstate__(self) -> dict:
        """Everything but the client, lock and GAPIC method (re-made by ``__setstate__``)."""
        with self._lock:
            state = dict(self.__dict__)
            state["_passes"] = list(self._passes)
            state["_by_pass"] = dict(self._by_pass)
        for name in ("_client", "_lock", "_read_rows"):
            del state[name]
        state["_renewable"] = False
        return state

    def __setstate__(self, state: dict) -> None:
        """Restore a copy: new lock and client; it reads its session and never renews it."""
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._read_rows = _gapic_read_rows()
        self._client = self._new_client()

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
        """Streams the first session returned (between 1 and the number asked for)."""
        return len(self._passes)

    @property
    def session_name(self) -> str:
        """Full name of the newest read session."""
        return self._latest.name

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Full names of the newest session's streams."""
        return self._latest.streams

    @property
    def billing_project(self) -> str:
        """The project the read sessions run in and bill to."""
        return self._billing_project

    def read_stream(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of stream ``index`` (one pass), resuming after errors.

        Raises:
            IndexError: ``index`` out of range.
            SourceError: the stream failed ``max_retries`` times in a row without progress
                (``max_throttle_retries`` for throttling), failed with a non-transient error,
                or its session expired during the pass; the message names stream and offset.
        """
        if not 0 <= index < len(self._passes):
            raise IndexError(f"stream {index} of {self.description} ({self.num_streams} streams)")
        session = self._session_for_pass(index)
        for name in session.streams[index :: len(self._passes)]:
            yield from self._read_server_stream(name, session)

    # sharding ------------------------------------------------------------------------------

    def shard(self, shard_index: int, num_shards: int, key: str) -> BigQueryStorageSource:
        """Worker ``shard_index`` of ``num_shards``: its own session of its own rows.

        The rows are those whose ``key`` hashes to ``shard_index``
        (:func:`~vertex_imbalanced.reading.sources.base.shard_restriction`, added to this
        source's row restriction), so the shards of any number of workers are disjoint and
        cover the table, whatever number of streams each session gets.

        Args:
            shard_index: this worker's index.
            num_shards: number of workers.
            key: the key column.

        Returns:
            A new source (same columns, streams, billing project and retry settings).

        Raises:
            ValueError: shard arguments out of range.
            PipelineInputError: as the constructor (e.g. a shard that matches no rows).
        """
        restriction = and_restrictions(
            self._row_restriction, shard_restriction(key, shard_index, num_shards)
        )
        return BigQueryStorageSource(
            self._ref,
            self._columns,
            restriction,
            self._requested_streams,
            client=self._client,
            client_factory=self._client_factory,
            billing_project=self._billing_project,
            **self._options,
        )

    # sessions ------------------------------------------------------------------------------

    def _session_for_pass(self, index: int) -> _Session:
        """The session of this stream's next pass (the same for pass p of every stream)."""
        with self._lock:
            passes = self._passes
            # A stream that skipped a pass (an abandoned iterator never started it) joins the
            # newest pass the others have started.
            current = max(passes[index], max(passes) - 1)
            passes[index] = current + 1
            session = self._by_pass.get(current)
            if session is None:
                due = time.time() >= self._latest.expire_time - self._refresh_margin
                if due and self._renewable:
                    self._latest = self._renew()
                session = self._by_pass[current] = self._latest
            for old in [p for p in self._by_pass if p < max(passes) - 1]:
                del self._by_pass[old]
            return session

    def _renew(self) -> _Session:
        session = self._create_session(self._columns, self._row_restriction, len(self._passes))
        self.sessions_created += 1
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        if not schema.equals(self._session_schema):
            raise SourceError(
                f"the schema of table {self._ref} changed between read sessions "
                f"({self._session_schema} -> {schema})"
            )
        if not session.streams:
            raise SourceError(
                f"the new read session {session.name} of {self.description} has zero streams: "
                "the table was emptied while it was being read"
            )
        return self._session_of(session)

    @staticmethod
    def _session_of(session) -> _Session:
        pb = getattr(session, "_pb", session)
        if pb.HasField("expire_time"):
            expire = pb.expire_time.seconds + pb.expire_time.nanos / 1e9
        else:
            expire = time.time() + SESSION_LIFETIME_S
        return _Session(pb.name, tuple(s.name for s in pb.streams), expire)

    # reading -------------------------------------------------------------------------------

    def _read_server_stream(self, name: str, session: _Session) -> Iterator[pa.RecordBatch]:
        offset = 0
        failures = 0
        throttled = 0
        while True:
            progress_at = offset
            call = None
            try:
                call = self._read_rows(self._client, read_stream=name, offset=offset, retry=None)
                for batch in self._decode(call):
                    offset += batch.num_rows
                    yield batch
                return
            except gexc.ResourceExhausted as exc:
                delay = retry_delay_s(exc)
                if delay is None:
                    raise SourceError(
                        f"stream {name} of table {self._ref} failed at offset {offset}: "
                        f"RESOURCE_EXHAUSTED without retry info (a quota, not throttling): {exc}"
                    ) from exc
                if offset > progress_at:  # a new row resets both counts
                    failures = throttled = 0
                throttled += 1
                if throttled > self._max_throttle_retries:
                    raise SourceError(
                        f"stream {name} of table {self._ref} was throttled at offset {offset} "
                        f"{throttled} times in a row "
                        f"(max_throttle_retries={self._max_throttle_retries}): {exc}"
                    ) from exc
                time.sleep(delay)
            except gexc.FailedPrecondition as exc:
                if "session expired" in str(exc.message) or time.time() >= session.expire_time:
                    raise SourceError(
                        f"read session {session.name} of table {self._ref} expired while "
                        f"stream {name} was read at offset {offset}: one pass over the table "
                        f"took longer than session_refresh_margin_s={self._refresh_margin:.0f} "
                        f"s; raise it (sessions live 6 hours) or read fewer rows per pass: "
                        f"{exc}"
                    ) from exc
                raise SourceError(
                    f"stream {name} of table {self._ref} failed at offset {offset}: {exc}"
                ) from exc
            except TRANSIENT_ERRORS as exc:
                if offset > progress_at:
                    failures = throttled = 0
                failures += 1
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
        except gexc.PermissionDenied as exc:
            raise PipelineInputError(
                f"cannot create a read session of table {self._ref} in billing project "
                f"{self._billing_project!r}: {exc.message}; pass billing_project= a project "
                "where you may run BigQuery jobs (e.g. the pipeline's project)"
            ) from exc
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
