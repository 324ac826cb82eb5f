"""A local BigQuery Storage Read API **v1** server over in-memory Arrow tables (tests, benches).

A real gRPC server on ``127.0.0.1`` implementing
``google.cloud.bigquery.storage.v1.BigQueryRead`` with the message types of
``google.cloud.bigquery_storage_v1.types``, so the real ``BigQueryReadClient`` talks to it
(see :func:`local_client`). What it does, and how it differs from BigQuery:

- ``CreateReadSession``: ARROW only (AVRO -> INVALID_ARGUMENT). The session schema holds the
  selected fields **in table order** (as BigQuery does). ``row_restriction`` is transpiled from
  BigQuery SQL to DuckDB with sqlglot and evaluated by DuckDB over the Arrow table: simple
  predicates (comparisons, AND/OR/NOT, IN, BETWEEN, IS NULL, LIKE, ``MOD``, ``ABS``,
  ``FARM_FINGERPRINT`` with BigQuery's values, functions both engines know) behave like
  BigQuery; anything DuckDB rejects -> INVALID_ARGUMENT. The matching rows are split into
  ``min(max_stream_count or 1, rows, max_streams_returned)`` contiguous streams: like the
  service, the server may return **fewer streams than asked** (``max_streams_returned=1``
  gives one stream whatever was asked, as BigQuery often does for small tables). No matching
  row -> **zero streams** (BigQuery does the same for an empty table). Unknown table ->
  NOT_FOUND; unknown selected field -> INVALID_ARGUMENT.
- **Billing project**: the session runs in ``parent`` (``projects/P``, else INVALID_ARGUMENT).
  A project in ``read_only_projects`` (a public or shared data project the caller may only
  read) -> PERMISSION_DENIED with the service's text ("the user does not have
  'bigquery.readsessions.create' permission for 'projects/P'").
- **Session lifetime**: sessions expire ``session_lifetime_s`` after creation (6 hours, as
  BigQuery; ``expire_time`` is set in the ReadSession). ``ReadRows`` on an expired session,
  also in the middle of a stream -> FAILED_PRECONDITION "there was an error operating on
  '<stream>': session expired at <time>" (the service's text).
- ``ReadRows``: record batches of ``batch_rows`` rows starting at the request ``offset`` (the
  resume point), each with ``row_count``. Offset past the end -> OUT_OF_RANGE.
- ``SplitReadStream``: UNIMPLEMENTED.
- Fault injection per table (:class:`Faults`): break a stream with a status (UNAVAILABLE by
  default) when it reaches row ``K`` of the stream, a given number of times or every time,
  optionally with a ``google.rpc.RetryInfo`` delay in the status details (throttling:
  RESOURCE_EXHAUSTED with retry info, which the official reader retries after the delay);
  return zero streams. :attr:`StorageReadServer.read_requests` records every ``(stream, offset)``
  a client asked for (and :attr:`~StorageReadServer.read_request_times` when),
  :attr:`~StorageReadServer.created_sessions` every session created.

Run it in its own process (benchmarks) with
``python -m fakes.storage_server --rows N [--kind wide|typed]``, or from Python
with :func:`serve_in_subprocess`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import sys
import threading
import time

import grpc
import pyarrow as pa
from google.cloud.bigquery_storage_v1 import types
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from fakes import server_process
from fakes.grpc_server import (
    CHANNEL_OPTIONS,
    LocalGrpcServer,
    filter_rows,
    stream_ranges,
)

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"
DEFAULT_TABLE = "projects/p/datasets/d/tables/t"
_READ_ROWS_RESPONSE_PB = types.ReadRowsResponse.pb()
SESSION_LIFETIME_S = 6 * 3600.0
"""BigQuery read sessions expire 6 hours after creation."""


@dataclasses.dataclass
class Faults:
    """Failures a table's read sessions inject.

    Attributes:
        break_at_row: break a stream when it reaches this row of the stream (rows before it
            are sent, possibly as a partial record batch); None: never.
        break_times: how many times each stream breaks at ``break_at_row`` (None: every time,
            so a reader can never get past that row).
        break_code: gRPC status of the break.
        retry_delay_s: attach a ``google.rpc.RetryInfo`` with this delay to the break's status
            (with ``break_code=RESOURCE_EXHAUSTED``: throttling the client may retry after
            the delay); None: no retry info.
        streams: indices of the streams that break (None: all).
        zero_streams: the session has no stream even though rows match.
    """

    break_at_row: int | None = None
    break_times: int | None = 1
    break_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retry_delay_s: float | None = None
    streams: tuple[int, ...] | None = None
    zero_streams: bool = False


@dataclasses.dataclass
class _Table:
    data: pa.Table
    faults: Faults


@dataclasses.dataclass
class _Session:
    data: pa.Table
    ranges: list[tuple[int, int]]
    faults: Faults
    breaks_left: dict[int, int | None]
    expire_time: float


@dataclasses.dataclass(frozen=True)
class CreatedSession:
    """A read session the server created (for tests to check what clients asked for).

    Attributes:
        name: ``projects/P/locations/us/sessions/ID``.
        parent: the billing project, ``projects/P``.
        table: ``projects/P/datasets/D/tables/T``.
        row_restriction: the session's row restriction ('' if none).
        streams: number of streams returned.
        rows: rows matching the restriction.
    """

    name: str
    parent: str
    table: str
    row_restriction: str
    streams: int
    rows: int


class StorageReadServer(LocalGrpcServer):
    """In-process gRPC server; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        *,
        batch_rows: int = 4096,
        max_workers: int = 8,
        max_streams_returned: int | None = None,
        session_lifetime_s: float = SESSION_LIFETIME_S,
        read_only_projects: tuple[str, ...] | frozenset[str] = (),
    ) -> None:
        """Create a server (not started).

        The three behaviour settings are plain attributes too, so a test may change them on a
        running server (new sessions use them).

        Args:
            batch_rows: rows per record batch sent by ``ReadRows``.
            max_workers: gRPC worker threads (one per concurrent call).
            max_streams_returned: the most streams a session gets, whatever the client asked
                (None: as many as asked, up to one per row; 1: one stream, like BigQuery for
                small tables).
            session_lifetime_s: seconds from a session's creation to its expiry.
            read_only_projects: project ids in which the caller may read tables but not
                create read sessions (PERMISSION_DENIED as parent).
        """
        if max_streams_returned is not None and max_streams_returned < 1:
            raise ValueError(f"max_streams_returned must be >= 1, got {max_streams_returned}")
        self.batch_rows = batch_rows
        self.max_streams_returned = max_streams_returned
        self.session_lifetime_s = session_lifetime_s
        self.read_only_projects = frozenset(read_only_projects)
        self._tables: dict[str, _Table] = {}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.read_requests: list[tuple[str, int]] = []
        self.read_request_times: list[float] = []
        self.created_sessions: list[CreatedSession] = []
        super().__init__(max_workers=max_workers)

    def add_table(self, path: str, table: pa.Table, faults: Faults | None = None) -> None:
        """Serve ``table`` at ``projects/P/datasets/D/tables/T`` (replaces an existing one)."""
        with self._lock:
            self._tables[path] = _Table(table, faults or Faults())

    def set_faults(self, path: str, faults: Faults) -> None:
        """Change the faults of a table (new sessions use them)."""
        with self._lock:
            self._tables[path].faults = faults

    # gRPC plumbing -------------------------------------------------------------------------

    def _handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(
                self._create_read_session,
                request_deserializer=types.CreateReadSessionRequest.deserialize,
                response_serializer=types.ReadSession.serialize,
            ),
            "ReadRows": grpc.unary_stream_rpc_method_handler(
                self._read_rows,
                request_deserializer=types.ReadRowsRequest.deserialize,
                response_serializer=lambda pb: pb.SerializeToString(),
            ),
            "SplitReadStream": grpc.unary_unary_rpc_method_handler(
                self._split_read_stream,
                request_deserializer=types.SplitReadStreamRequest.deserialize,
                response_serializer=types.SplitReadStreamResponse.serialize,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _create_read_session(
        self, request: types.CreateReadSessionRequest, context: grpc.ServicerContext
    ) -> types.ReadSession:
        requested = request.read_session
        project = request.parent.removeprefix("projects/")
        if not request.parent.startswith("projects/") or not project or "/" in project:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"parent must be projects/<project id>, got {request.parent!r}",
            )
        if project in self.read_only_projects:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "request failed: the user does not have 'bigquery.readsessions.create' "
                f"permission for '{request.parent}'",
            )
        with self._lock:
            entry = self._tables.get(requested.table)
        if entry is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Not found: Table {requested.table} was not found"
            )
        if requested.data_format != types.DataFormat.ARROW:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "this test server only serves data_format=ARROW"
            )
        options = requested.read_options
        data = entry.data
        selected = list(options.selected_fields)
        for name in selected:
            if name not in data.schema.names:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request failed: Field {name} was not found in table {requested.table}",
                )
        if options.row_restriction:
            try:
                data = filter_rows(data, options.row_restriction)
            except Exception as exc:  # DuckDB/sqlglot parse or binder errors
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid row_restriction {options.row_restriction!r}: {exc}",
                )
        if selected:
            data = data.select([n for n in data.schema.names if n in selected])
        n_streams = min(max(1, request.max_stream_count or 1), data.num_rows)
        if self.max_streams_returned is not None:
            n_streams = min(n_streams, self.max_streams_returned)
        if entry.faults.zero_streams:
            n_streams = 0
        ranges = stream_ranges(data.num_rows, n_streams)
        session_id = f"s{next(self._ids)}"
        name = f"{request.parent}/locations/us/sessions/{session_id}"
        expire_time = time.time() + self.session_lifetime_s
        with self._lock:
            self._sessions[session_id] = _Session(
                data,
                ranges,
                entry.faults,
                {i: entry.faults.break_times for i in range(n_streams)},
                expire_time,
            )
            self.created_sessions.append(
                CreatedSession(
                    name,
                    request.parent,
                    requested.table,
                    options.row_restriction,
                    n_streams,
                    data.num_rows,
                )
            )
        return types.ReadSession(
            name=name,
            expire_time=datetime.datetime.fromtimestamp(expire_time, tz=datetime.UTC),
            table=requested.table,
            data_format=types.DataFormat.ARROW,
            read_options=options,
            arrow_schema=types.ArrowSchema(serialized_schema=data.schema.serialize().to_pybytes()),
            streams=[types.ReadStream(name=f"{name}/streams/{i}") for i in range(n_streams)],
            estimated_row_count=data.num_rows,
        )

    def _read_rows(self, request: types.ReadRowsRequest, context: grpc.ServicerContext):
        name = request.read_stream
        with self._lock:
            self.read_requests.append((name, request.offset))
            self.read_request_times.append(time.time())
        session, index = self._lookup_stream(name, context)
        self._check_alive(session, name, context)
        start, stop = session.ranges[index]
        pos = start + request.offset
        if pos > stop:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the end of stream {name} ({stop - start} rows)",
            )
        break_at = self._break_point(session, index, start)
        while pos < stop:
            end = min(pos + self.batch_rows, stop)
            if break_at is not None and pos <= break_at < end:
                end = break_at
                if end > pos:
                    yield self._response(session.data, pos, end)
                with self._lock:
                    left = session.breaks_left[index]
                    if left is not None:
                        session.breaks_left[index] = left - 1
                _abort(
                    context,
                    session.faults.break_code,
                    f"injected failure of stream {name} at offset {end - start}",
                    session.faults.retry_delay_s,
                )
            self._check_alive(session, name, context)
            yield self._response(session.data, pos, end)
            pos = end

    @staticmethod
    def _check_alive(session: _Session, stream: str, context: grpc.ServicerContext) -> None:
        if time.time() >= session.expire_time:
            expired = datetime.datetime.fromtimestamp(session.expire_time, tz=datetime.UTC)
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"there was an error operating on '{stream}': session expired at "
                f"{expired.isoformat(timespec='seconds')}",
            )

    def _lookup_stream(self, name: str, context: grpc.ServicerContext) -> tuple[_Session, int]:
        parts = name.split("/")
        try:
            session_id, index = parts[-3], int(parts[-1])
            session = self._sessions[session_id]
            session.ranges[index]  # noqa: B018  (index check)
        except (IndexError, KeyError, ValueError):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Not found: read stream {name}")
        return session, index

    @staticmethod
    def _break_point(session: _Session, index: int, start: int) -> int | None:
        faults = session.faults
        if faults.break_at_row is None:
            return None
        if faults.streams is not None and index not in faults.streams:
            return None
        left = session.breaks_left[index]
        if left is not None and left <= 0:
            return None
        return start + faults.break_at_row

    @staticmethod
    def _response(data: pa.Table, start: int, stop: int):
        batch = data.slice(start, stop - start).combine_chunks().to_batches()
        record_batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=data.schema)
        response = _READ_ROWS_RESPONSE_PB()
        response.row_count = stop - start
        response.arrow_record_batch.row_count = stop - start
        response.arrow_record_batch.serialized_record_batch = record_batch.serialize().to_pybytes()
        return response

    @staticmethod
    def _split_read_stream(request, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "SplitReadStream is not implemented here")


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    retry_delay_s: float | None,
) -> None:
    """End the call with ``code``; with a delay, a ``RetryInfo`` in ``grpc-status-details-bin``."""
    if retry_delay_s is None:
        context.abort(code, message)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(round(retry_delay_s * 1e9))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


def local_client(address: str):
    """A real ``BigQueryReadClient`` talking insecure gRPC to ``address`` (``host:port``)."""
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


serve_in_subprocess = functools.partial(
    server_process.serve_in_subprocess, "fakes.storage_server", table=DEFAULT_TABLE
)
"""``serve_in_subprocess(rows, kind=, seed=, batch_rows=, max_streams_returned=,
session_lifetime_s=, read_only_projects=)``: the server in its own process."""


def main(argv: list[str] | None = None) -> int:
    """Serve one generated table until SIGTERM/SIGINT (or end of stdin with --stdin-lifeline)."""
    return server_process.serve_table_main(
        argv,
        server_class=StorageReadServer,
        description="Local BigQuery Storage Read v1 server over a generated Arrow table.",
        default_table=DEFAULT_TABLE,
    )


if __name__ == "__main__":
    sys.exit(main())
