"""The local Storage Read v1 server speaks the real protocol (raw GAPIC client calls)."""

import pyarrow as pa
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import types

from fakes.arrow_tables import make_typed_table, make_wide_table
from fakes.storage_server import (
    DEFAULT_TABLE,
    StorageReadServer,
    local_client,
    serve_in_subprocess,
)
from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource


def session_request(fmt=types.DataFormat.ARROW, **options):
    return types.ReadSession(
        table=DEFAULT_TABLE,
        data_format=fmt,
        read_options=types.ReadSession.TableReadOptions(**options),
    )


@pytest.fixture(scope="module")
def served():
    table = make_typed_table(30)
    with StorageReadServer(batch_rows=8) as srv:
        srv.add_table(DEFAULT_TABLE, table)
        yield table, local_client(srv.address)


def test_session_schema_follows_table_order_and_rows_resume_at_offset(served):
    table, client = served
    session = client.create_read_session(
        parent="projects/p",
        read_session=session_request(selected_fields=["label", "key"]),
        max_stream_count=1,
    )
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    assert schema.names == ["key", "label"]
    responses = list(client.read_rows(session.streams[0].name, offset=5))
    assert [r.row_count for r in responses] == [8, 8, 8, 1]
    batches = [
        pa.ipc.read_record_batch(pa.py_buffer(r.arrow_record_batch.serialized_record_batch), schema)
        for r in responses
    ]
    assert pa.Table.from_batches(batches)["key"].to_pylist() == list(range(5, 30))


def test_avro_and_bad_offsets_are_rejected(served):
    _, client = served
    with pytest.raises(gexc.InvalidArgument, match="ARROW"):
        client.create_read_session(
            parent="projects/p", read_session=session_request(types.DataFormat.AVRO)
        )
    session = client.create_read_session(parent="projects/p", read_session=session_request())
    with pytest.raises(gexc.OutOfRange):
        list(client.read_rows(session.streams[0].name, offset=31))
    with pytest.raises(gexc.MethodNotImplemented):
        client.split_read_stream(request={"name": session.streams[0].name, "fraction": 0.5})


def test_server_in_its_own_process():
    with serve_in_subprocess(2000, kind="wide-key", batch_rows=512) as address:
        source = BigQueryStorageSource(
            "p.d.t", ["key", "s04", "f19"], num_streams=2, client=local_client(address)
        )
        got = pa.Table.from_batches(
            [b for i in range(source.num_streams) for b in source.read_stream(i)]
        )
    expected = make_wide_table(2000, key=True).select(["key", "s04", "f19"])
    assert got.sort_by("key").equals(expected)
