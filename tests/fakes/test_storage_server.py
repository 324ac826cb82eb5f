"""The local Storage Read v1 server speaks the real protocol (raw GAPIC client calls)."""

import time

import grpc
import pyarrow as pa
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import types
from google.cloud.bigquery_storage_v1.services.big_query_read import (
    BigQueryReadClient as GapicReadClient,
)

from fakes.arrow_tables import make_typed_table, make_wide_table
from fakes.storage_server import (
    DEFAULT_TABLE,
    Faults,
    StorageReadServer,
    local_client,
    serve_in_subprocess,
)
from vertex_imbalanced.errors import PipelineInputError
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
    options = {"max_streams_returned": 1, "read_only_projects": ("p",), "session_lifetime_s": 60}
    with serve_in_subprocess(2000, kind="wide-key", batch_rows=512, **options) as address:
        client = local_client(address)
        with pytest.raises(PipelineInputError, match="billing project 'p'"):
            BigQueryStorageSource("p.d.t", ["key"], client=client)
        source = BigQueryStorageSource(
            "p.d.t", ["key", "s04", "f19"], num_streams=2, client=client, billing_project="b"
        )
        assert source.num_streams == 1
        got = pa.Table.from_batches(
            [b for i in range(source.num_streams) for b in source.read_stream(i)]
        )
    expected = make_wide_table(2000, key=True).select(["key", "s04", "f19"])
    assert got.sort_by("key").equals(expected)


def test_fewer_streams_than_asked_and_farm_fingerprint_like_bigquery():
    table = make_typed_table(30)
    with StorageReadServer(max_streams_returned=1) as srv:
        srv.add_table(DEFAULT_TABLE, table)
        client = local_client(srv.address)
        session = client.create_read_session(
            parent="projects/p", read_session=session_request(), max_stream_count=4
        )
        assert len(session.streams) == 1
        # BigQuery documents FARM_FINGERPRINT("alphabet") = -2427165924636348523.
        restriction = "FARM_FINGERPRINT('alphabet') = -2427165924636348523 AND key < 10"
        session = client.create_read_session(
            parent="projects/p", read_session=session_request(row_restriction=restriction)
        )
        assert session.estimated_row_count == 10


def test_billing_parent_must_be_a_project_that_allows_read_sessions(served):
    _, client = served
    with StorageReadServer(read_only_projects={"public-data"}) as srv:
        srv.add_table(DEFAULT_TABLE, make_typed_table(5))
        ro_client = local_client(srv.address)
        with pytest.raises(
            gexc.PermissionDenied,
            match="does not have 'bigquery.readsessions.create' permission for "
            "'projects/public-data'",
        ):
            ro_client.create_read_session(
                parent="projects/public-data", read_session=session_request()
            )
        session = ro_client.create_read_session(
            parent="projects/mine", read_session=session_request()
        )
        assert session.name.startswith("projects/mine/locations/")
    with pytest.raises(gexc.InvalidArgument, match="parent must be projects/"):
        client.create_read_session(parent="p", read_session=session_request())


def test_sessions_expire_like_bigquery():
    with StorageReadServer(session_lifetime_s=0.3) as srv:
        srv.add_table(DEFAULT_TABLE, make_typed_table(30))
        client = local_client(srv.address)
        before = time.time()
        session = client.create_read_session(parent="projects/p", read_session=session_request())
        expires = session.expire_time.timestamp()
        assert before + 0.3 <= expires + 1e-3 and expires <= time.time() + 0.3
        assert len(list(client.read_rows(session.streams[0].name))) > 0
        time.sleep(0.35)
        with pytest.raises(gexc.FailedPrecondition, match="session expired at"):
            list(client.read_rows(session.streams[0].name))


def test_throttling_carries_retry_info_the_official_reader_honours():
    table = make_typed_table(30)
    faults = Faults(
        break_at_row=12,
        break_times=1,
        break_code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        retry_delay_s=0.2,
    )
    with StorageReadServer(batch_rows=8) as srv:
        srv.add_table(DEFAULT_TABLE, table, faults)
        client = local_client(srv.address)
        session = client.create_read_session(parent="projects/p", read_session=session_request())
        name = session.streams[0].name
        with pytest.raises(gexc.ResourceExhausted) as info:
            list(GapicReadClient.read_rows(client, read_stream=name, retry=None))
        delays = [d.retry_delay.ToTimedelta() for d in info.value.details]
        assert [d.total_seconds() for d in delays] == [0.2]
        srv.set_faults(DEFAULT_TABLE, faults)  # new session, one more throttle
        session = client.create_read_session(parent="projects/p", read_session=session_request())
        waited = []
        reader = client.read_rows(session.streams[0].name, retry_delay_callback=waited.append)
        rows = sum(r.row_count for r in reader)
    assert rows == 30 and waited == [0.2]
