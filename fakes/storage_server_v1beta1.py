"""A local BigQuery Storage API **v1beta1** server over in-memory Arrow tables (legacy env only).

tensorflow-io 0.37.1 speaks only v1beta1 (``google.cloud.bigquery.storage.v1beta1.BigQueryStorage``);
``tensorflow_io.bigquery.BigQueryTestClient("127.0.0.1:PORT")`` talks insecure gRPC to this server.
The message types come from ``bigquery_storage_v1beta1.proto`` (a minimal subset of the published
API, same package and field numbers), compiled on first use with grpcio-tools into the
git-ignored ``_generated/`` folder. That needs grpcio-tools 1.62 / protobuf 4.x, i.e. the
``.venv-legacy`` env; importing this module works anywhere, starting a server elsewhere raises a
``RuntimeError`` that says so.

What it does, and how it differs from BigQuery:

- ``CreateReadSession``: table ``project.dataset.table`` (unknown -> NOT_FOUND); selected fields
  (unknown -> INVALID_ARGUMENT) in table order; ``row_restriction`` transpiled from BigQuery SQL
  to DuckDB with sqlglot and evaluated by DuckDB; ``min(requested_streams, rows)`` contiguous
  streams (no matching row -> zero streams). AVRO: BigQuery's Avro schema (nullable columns as
  ``["null", T]`` unions; DATE ``int``/``date``, TIMESTAMP ``long``/``timestamp-micros``), the
  rows encoded once per session by a vectorised encoder. ARROW: the Arrow IPC schema.
- ``ReadRows``: blocks of ``batch_rows`` rows from the requested offset, each with ``row_count``
  (set both in ``avro_rows`` / ``arrow_record_batch`` and in the response, as tensorflow-io reads
  the former). Offset past the end -> OUT_OF_RANGE.
- Fault injection (:class:`Faults`): break every stream with a status after K rows; zero streams.
- Types served: INT64, FLOAT64, BOOL, STRING, DATE, TIMESTAMP (others -> INVALID_ARGUMENT).

Run it in its own process (benchmarks) with
``python -m fakes.storage_server_v1beta1 --rows N [--kind wide|typed]``, or from
Python with :func:`serve_in_subprocess`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fakes import server_process
from fakes.grpc_server import (
    LocalGrpcServer,
    filter_rows,
    stream_ranges,
)

SERVICE = "google.cloud.bigquery.storage.v1beta1.BigQueryStorage"
DEFAULT_TABLE = "p.d.t"
PROTO = Path(__file__).with_name("bigquery_storage_v1beta1.proto")
GENERATED = Path(__file__).with_name("_generated")
_AVRO, _ARROW = 1, 3  # DataFormat enum values
_ENCODE_CHUNK = 65_536


@functools.cache
def messages() -> ModuleType:
    """The generated ``*_pb2`` module of the v1beta1 proto (compiled on first use).

    Raises:
        RuntimeError: if grpcio-tools is missing (the main env has none: use ``.venv-legacy``).
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:
        raise RuntimeError(
            "the v1beta1 test server compiles its proto with grpcio-tools 1.62 (protobuf 4.x); "
            "run it in .venv-legacy (make legacy-env)"
        ) from exc
    version = getattr(grpc_tools, "__version__", "") or _dist_version("grpcio-tools")
    stamp = hashlib.sha256(PROTO.read_bytes() + version.encode()).hexdigest()
    target = GENERATED / "bigquery_storage_v1beta1_pb2.py"
    stamp_file = GENERATED / "bigquery_storage_v1beta1.stamp"
    if not (target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp):
        GENERATED.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=GENERATED) as tmp:
            code = protoc.main(
                ["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", str(PROTO.name)]
            )
            if code != 0:
                raise RuntimeError(f"protoc failed ({code}) on {PROTO}")
            os.replace(Path(tmp) / target.name, target)  # atomic: concurrent compiles are safe
        stamp_file.write_text(stamp)
    spec = importlib.util.spec_from_file_location(
        "fakes._generated.bigquery_storage_v1beta1_pb2", target
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


@dataclasses.dataclass
class Faults:
    """Failures a table's read sessions inject.

    Attributes:
        break_at_row: every stream fails with ``break_code`` once it has sent this many rows
            (None: never). tensorflow-io does not retry, so the reader sees the error.
        break_code: gRPC status of the break.
        zero_streams: the session has no stream even though rows match.
    """

    break_at_row: int | None = None
    break_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    zero_streams: bool = False


@dataclasses.dataclass
class _Session:
    data: pa.Table
    ranges: list[tuple[int, int]]
    faults: Faults
    avro: tuple[np.ndarray, np.ndarray] | None  # (row byte offsets, encoded rows)


class StorageReadV1Beta1Server(LocalGrpcServer):
    """In-process gRPC server; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(self, *, batch_rows: int = 4096, max_workers: int = 8) -> None:
        """Create a server (not started).

        Args:
            batch_rows: rows per ``ReadRows`` response.
            max_workers: gRPC worker threads (one per concurrent call).
        """
        self.pb = messages()
        self.batch_rows = batch_rows
        self._tables: dict[tuple[str, str, str], tuple[pa.Table, Faults]] = {}
        self._sessions: dict[str, _Session] = {}
        self._avro_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        super().__init__(max_workers=max_workers)

    def add_table(self, ref: str, table: pa.Table, faults: Faults | None = None) -> None:
        """Serve ``table`` as ``project.dataset.table`` (replaces an existing one)."""
        project, dataset, name = ref.split(".")
        with self._lock:
            self._tables[(project, dataset, name)] = (table, faults or Faults())

    def _handler(self) -> grpc.GenericRpcHandler:
        pb = self.pb
        methods = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(
                self._create_read_session,
                request_deserializer=pb.CreateReadSessionRequest.FromString,
                response_serializer=pb.ReadSession.SerializeToString,
            ),
            "ReadRows": grpc.unary_stream_rpc_method_handler(
                self._read_rows,
                request_deserializer=pb.ReadRowsRequest.FromString,
                response_serializer=pb.ReadRowsResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _create_read_session(self, request, context: grpc.ServicerContext):
        ref = request.table_reference
        key = (ref.project_id, ref.dataset_id, ref.table_id)
        label = ".".join(key)
        with self._lock:
            entry = self._tables.get(key)
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Not found: Table {label} was not found")
        data, faults = entry
        if request.format not in (_AVRO, _ARROW):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "data format must be AVRO or ARROW")
        selected = list(request.read_options.selected_fields)
        for name in selected:
            if name not in data.schema.names:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Field {name} was not found in table {label}",
                )
        if selected:
            data = data.select([n for n in data.schema.names if n in selected])
        restriction = request.read_options.row_restriction
        if restriction:
            try:
                data = filter_rows(data, restriction)
            except Exception as exc:  # DuckDB/sqlglot parse or binder errors
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid row_restriction {restriction!r}: {exc}",
                )
        try:
            avro_schema = avro_schema_json(data.schema)
            avro = (
                self._encoded(key, selected, restriction, data) if request.format == _AVRO else None
            )
        except TypeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"table {label}: {exc}")
        n_streams = (
            0 if faults.zero_streams else min(max(1, request.requested_streams), data.num_rows)
        )
        ranges = stream_ranges(data.num_rows, n_streams)
        session_id = f"s{next(self._ids)}"
        with self._lock:
            self._sessions[session_id] = _Session(data, ranges, faults, avro)
        name = f"projects/{ref.project_id}/locations/us/sessions/{session_id}"
        session = self.pb.ReadSession(name=name, table_reference=ref)
        session.streams.extend(self.pb.Stream(name=f"{name}/streams/{i}") for i in range(n_streams))
        if request.format == _AVRO:
            session.avro_schema.schema = avro_schema
        else:
            session.arrow_schema.serialized_schema = data.schema.serialize().to_pybytes()
        return session

    def _encoded(self, key, selected, restriction, data) -> tuple[np.ndarray, np.ndarray]:
        """Avro encoding of a session's rows, cached: a new session on the same data is cheap."""
        cache_key = (key, tuple(selected), restriction, id(self._tables[key][0]))
        with self._lock:
            cached = self._avro_cache.get(cache_key)
        if cached is None:
            cached = encode_avro(data)
            with self._lock:
                self._avro_cache = {cache_key: cached}  # keep the latest only (memory)
        return cached

    def _read_rows(self, request, context: grpc.ServicerContext):
        name = request.read_position.stream.name
        offset = request.read_position.offset
        parts = name.split("/")
        try:
            session = self._sessions[parts[-3]]
            start, stop = session.ranges[int(parts[-1])]
        except (IndexError, KeyError, ValueError):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Not found: stream {name}")
        pos = start + offset
        if pos > stop:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"offset {offset} is past the end of {name}"
            )
        brk = session.faults.break_at_row
        limit = stop if brk is None else min(stop, start + brk)
        while pos < limit:
            end = min(pos + self.batch_rows, limit)
            yield self._response(session, pos, end)
            pos = end
        if pos < stop:
            context.abort(
                session.faults.break_code,
                f"injected failure of stream {name} at offset {pos - start}",
            )

    def _response(self, session: _Session, start: int, stop: int):
        response = self.pb.ReadRowsResponse(row_count=stop - start)
        if session.avro is not None:
            row_offsets, encoded = session.avro
            rows = encoded[row_offsets[start] : row_offsets[stop]].tobytes()
            response.avro_rows.serialized_binary_rows = rows
            response.avro_rows.row_count = stop - start
        else:
            batch = session.data.slice(start, stop - start).combine_chunks().to_batches()
            record_batch = (
                batch[0] if batch else pa.RecordBatch.from_pylist([], session.data.schema)
            )
            response.arrow_record_batch.serialized_record_batch = (
                record_batch.serialize().to_pybytes()
            )
            response.arrow_record_batch.row_count = stop - start
        return response


# Avro (BigQuery's Avro encoding of a table) ----------------------------------------------------


def _avro_type(t: pa.DataType) -> str | dict:
    if pa.types.is_int64(t):
        return "long"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date32(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_timestamp(t):
        return {"type": "long", "logicalType": "timestamp-micros"}
    raise TypeError(f"type {t} is not served as Avro by this test server")


def avro_schema_json(schema: pa.Schema) -> str:
    """BigQuery's Avro schema of an Arrow schema (NULLABLE columns as ``["null", T]``)."""
    fields = [
        {"name": f.name, "type": ["null", _avro_type(f.type)] if f.nullable else _avro_type(f.type)}
        for f in schema
    ]
    return json.dumps({"type": "record", "name": "__root__", "fields": fields})


def encode_avro(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Avro binary encoding of every row (vectorised, no per-row Python).

    Returns:
        ``(row_offsets, data)``: row ``i`` is ``data[row_offsets[i]:row_offsets[i + 1]]``.
    """
    offsets, chunks, base = [np.zeros(1, np.int64)], [], 0
    for start in range(0, table.num_rows, _ENCODE_CHUNK):
        part = table.slice(start, _ENCODE_CHUNK)
        columns = [
            _encode_column(part.column(i).combine_chunks(), f) for i, f in enumerate(table.schema)
        ]
        lens, data = _interleave(columns, part.num_rows)
        offsets.append(base + np.cumsum(lens))
        chunks.append(data)
        base += len(data)
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return np.concatenate(offsets), data


def _interleave(
    parts: list[tuple[np.ndarray, np.ndarray]], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise concatenation of per-row byte strings given as ``(lengths[n], flat bytes)``."""
    lens = np.zeros(n, np.int64)
    for plens, _ in parts:
        lens += plens
    row_start = np.zeros(n, np.int64)
    np.cumsum(lens[:-1], out=row_start[1:])
    out = np.empty(int(lens.sum()), np.uint8)
    pos = row_start
    for plens, flat in parts:
        src_start = np.cumsum(plens) - plens
        out[np.repeat(pos - src_start, plens) + np.arange(len(flat))] = flat
        pos = pos + plens
    return lens, out


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zigzag varint encoding (Avro int/long) of int64 ``values``."""
    v = values.astype(np.int64)
    zz = ((v << 1) ^ (v >> 63)).view(np.uint64)
    nbytes = np.ones(len(v), np.int64)
    for k in range(1, 10):
        nbytes += (zz >> np.uint64(7 * k)) != 0
    k = np.arange(10)
    groups = ((zz[:, None] >> (np.uint64(7) * k.astype(np.uint64))) & np.uint64(0x7F)).astype(
        np.uint8
    )
    groups |= np.where(k[None, :] < nbytes[:, None] - 1, 0x80, 0).astype(np.uint8)
    return nbytes, groups[k[None, :] < nbytes[:, None]]


def _scatter(
    valid: np.ndarray, lens: np.ndarray, flat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    full = np.zeros(len(valid), np.int64)
    full[valid] = lens
    return full, flat


def _encode_column(arr: pa.Array, field: pa.Field) -> tuple[np.ndarray, np.ndarray]:
    n = len(arr)
    valid = (
        np.ones(n, bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    )
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        filled = pc.fill_null(arr, "").cast(pa.large_string())
        offs = np.frombuffer(filled.buffers()[1], np.int64)[filled.offset : filled.offset + n + 1]
        lengths = np.diff(offs)
        raw = np.frombuffer(filled.buffers()[2], np.uint8)[offs[0] : offs[-1]]
        value = _interleave([_scatter(valid, *_varints(lengths[valid])), (lengths, raw)], n)
    elif pa.types.is_float64(t):
        doubles = pc.fill_null(arr, 0.0).to_numpy().astype("<f8")
        value = (valid * 8, doubles.view(np.uint8).reshape(n, 8)[valid].ravel())
    elif pa.types.is_boolean(t):
        value = (
            valid.astype(np.int64),
            pc.fill_null(arr, False).to_numpy(zero_copy_only=False)[valid].astype(np.uint8),
        )
    elif pa.types.is_int64(t) or pa.types.is_date32(t) or pa.types.is_timestamp(t):
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.timestamp("us", tz=t.tz))
        ints = pc.fill_null(arr.view(pa.int32() if pa.types.is_date32(t) else pa.int64()), 0)
        value = _scatter(valid, *_varints(ints.to_numpy()[valid]))
    else:
        raise TypeError(
            f"column {field.name!r} has type {t}, not served as Avro by this test server"
        )
    if not field.nullable:
        return value
    branch = (np.ones(n, np.int64), np.where(valid, 2, 0).astype(np.uint8))  # union index 1 / 0
    return _interleave([branch, value], n)


# Running it in its own process ----------------------------------------------------------------


serve_in_subprocess = functools.partial(
    server_process.serve_in_subprocess,
    "fakes.storage_server_v1beta1",
    table=DEFAULT_TABLE,
)
"""``serve_in_subprocess(rows, kind=, seed=, batch_rows=)``: the server in its own process."""


def main(argv: list[str] | None = None) -> int:
    """Serve one generated table until SIGTERM/SIGINT (or end of stdin with --stdin-lifeline)."""
    return server_process.serve_table_main(
        argv,
        server_class=StorageReadV1Beta1Server,
        description="Local BigQuery Storage API v1beta1 server (for tensorflow-io) over a generated Arrow table.",
        default_table=DEFAULT_TABLE,
    )


if __name__ == "__main__":
    sys.exit(main())
