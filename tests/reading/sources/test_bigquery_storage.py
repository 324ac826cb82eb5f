"""BigQueryStorageSource against the local Storage Read v1 gRPC server (no Google Cloud)."""

import collections
import concurrent.futures
import functools
import pickle
import time

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fakes.arrow_tables import make_nested_table, make_typed_table, make_wide_table
from fakes.storage_server import Faults, StorageReadServer, local_client
from vertex_imbalanced.errors import PipelineInputError, SchemaError, SourceError
from vertex_imbalanced.reading.sources.base import RecordBatchSource, worker_shard
from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource

TYPED = make_typed_table(60, seed=1)
WIDE = make_wide_table(5000, n_float=3, n_string=2, seed=2, key=True)


def path(name: str) -> str:
    return f"projects/p/datasets/d/tables/{name}"


@pytest.fixture(scope="module")
def server():
    with StorageReadServer(batch_rows=1000) as srv:
        srv.add_table(path("typed"), TYPED)
        srv.add_table(path("wide"), WIDE)
        srv.add_table(path("nested"), make_nested_table())
        srv.add_table(path("empty"), TYPED.slice(0, 0))
        srv.add_table(path("zero"), TYPED, Faults(zero_streams=True))
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return local_client(server.address)


def open_source(client, table, columns=None, **kwargs) -> BigQueryStorageSource:
    kwargs.setdefault("retry_backoff_s", 0.001)
    return BigQueryStorageSource(f"p.d.{table}", columns, client=client, **kwargs)


def read_all(source) -> pa.Table:
    batches = [b for i in range(source.num_streams) for b in source.read_stream(i)]
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    return pa.Table.from_batches(batches, schema=source.schema)


def requests_for(server, stream_name):
    return [offset for name, offset in server.read_requests if name == stream_name]


def test_round_trip_keeps_types_values_and_nulls(client):
    source = open_source(client, "typed", TYPED.schema.names, num_streams=1)
    assert isinstance(source, RecordBatchSource)
    assert source.description == "bq://p.d.typed"
    assert source.schema == TYPED.schema
    got = read_all(source)
    assert got.equals(TYPED)
    assert got.column("f64").null_count == TYPED.column("f64").null_count > 0
    assert got.column("cat").null_count > 0


def test_selected_columns_come_in_requested_order(client):
    columns = ["label", "cat", "key"]
    source = open_source(client, "typed", columns)
    assert source.schema.names == columns
    got = read_all(source)
    assert got.equals(TYPED.select(columns))


def test_row_restriction_is_applied_by_the_server(client):
    source = open_source(client, "typed", ["key", "cat"], row_restriction='cat = "red" AND i64 > 0')
    got = read_all(source)
    mask = pc.and_(pc.equal(TYPED["cat"], "red"), pc.greater(TYPED["i64"], 0))
    expected = TYPED.filter(mask)["key"].to_pylist()
    assert 0 < len(expected) < TYPED.num_rows
    assert sorted(got["key"].to_pylist()) == expected
    assert "WHERE" in source.description


def test_streams_cover_every_row_exactly_once(client):
    source = open_source(client, "wide", ["key", "f00", "s01"], num_streams=3)
    assert source.num_streams == 3
    keys = [k for i in range(3) for b in source.read_stream(i) for k in b["key"].to_pylist()]
    assert sorted(keys) == list(range(WIDE.num_rows))
    per_stream = [sum(b.num_rows for b in source.read_stream(i)) for i in range(3)]
    assert all(n > 0 for n in per_stream)


def test_fewer_streams_than_asked_when_the_table_is_small(server, client):
    server.add_table(path("two_rows"), TYPED.slice(0, 2))
    source = open_source(client, "two_rows", ["key"], num_streams=4)
    assert source.num_streams == 2
    assert sorted(read_all(source)["key"].to_pylist()) == [0, 1]


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED],
)
def test_broken_stream_resumes_with_no_row_lost_or_doubled(server, client, code):
    # Breaks inside a record batch (1500 with 1000-row batches), twice per stream.
    server.add_table(path("flaky"), WIDE, Faults(break_at_row=1500, break_times=2, break_code=code))
    source = open_source(client, "flaky", ["key", "f01", "s00"], num_streams=2)
    got = read_all(source)
    counts = collections.Counter(got["key"].to_pylist())
    assert counts == collections.Counter(range(WIDE.num_rows))
    for name in source.stream_names:
        assert requests_for(server, name) == [0, 1500, 1500]  # 2 breaks, then success
    by_key = got.sort_by("key")
    assert by_key["f01"].equals(WIDE["f01"]) and by_key["s00"].equals(WIDE["s00"])


def test_stream_breaking_every_time_gives_source_error_naming_stream_and_offset(server, client):
    server.add_table(path("dead"), WIDE, Faults(break_at_row=700, break_times=None, streams=(1,)))
    source = open_source(client, "dead", ["key"], num_streams=2, max_retries=3)
    assert sum(b.num_rows for b in source.read_stream(0)) == 2500
    rows = 0
    with pytest.raises(SourceError) as info:
        for batch in source.read_stream(1):
            rows += batch.num_rows
    name = source.stream_names[1]
    assert name in str(info.value) and "offset 700" in str(info.value)
    assert rows == 700
    assert requests_for(server, name) == [0, 700, 700, 700]


def test_non_transient_stream_error_is_not_retried(server, client):
    faults = Faults(break_at_row=10, break_code=grpc.StatusCode.PERMISSION_DENIED)
    server.add_table(path("denied"), WIDE, faults)
    source = open_source(client, "denied", ["key"], num_streams=1)
    with pytest.raises(SourceError, match="offset 10"):
        list(source.read_stream(0))
    assert requests_for(server, source.stream_names[0]) == [0]


@pytest.mark.parametrize("table", ["zero", "empty"])
def test_zero_streams_is_a_clear_error(client, table):
    with pytest.raises(PipelineInputError, match=rf"table p\.d\.{table} is empty or the row"):
        open_source(client, table, ["key"])


def test_row_restriction_matching_nothing_names_it(client):
    with pytest.raises(PipelineInputError, match="matched no rows.*key < 0"):
        open_source(client, "typed", ["key"], row_restriction="key < 0")


def test_missing_table_is_named(client):
    with pytest.raises(PipelineInputError, match=r"table p\.d\.nope not found"):
        open_source(client, "nope", ["key"])


def test_misspelled_column_suggests_the_closest(client):
    with pytest.raises(SchemaError, match=r"no column 'lable'; did you mean 'label'\?"):
        open_source(client, "typed", ["key", "lable"])


def test_bad_row_restriction_is_input_error(client):
    with pytest.raises(PipelineInputError, match="row restriction 'no_such_col = 1'"):
        open_source(client, "typed", ["key"], row_restriction="no_such_col = 1")


@pytest.mark.parametrize(("column", "kind"), [("address", "STRUCT"), ("tags", "ARRAY")])
def test_struct_and_array_columns_are_rejected(client, column, kind):
    with pytest.raises(SchemaError, match=rf"column '{column}' .* unsupported type {kind}"):
        open_source(client, "nested", ["key", column])


@pytest.mark.parametrize("bad", ["p.d.t; DROP TABLE x", "d.t"])
def test_bad_table_reference(client, bad):
    with pytest.raises(PipelineInputError):
        BigQueryStorageSource(bad, ["key"], client=client)


def test_streams_interleaved_into_tf_data_survive_a_broken_stream(server, client):
    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.reading.datasets import make_dataset

    server.add_table(path("flaky_tf"), WIDE, Faults(break_at_row=1234, break_times=1))
    spec = FeatureSpec(label="label", numeric=("f00", "f02"), categorical=("s01",), key="key")
    source = open_source(client, "flaky_tf", ["key", "f00", "f02", "s01", "label"])
    labels = 0
    positives = 0
    for _, label, _ in make_dataset(source, spec):
        labels += int(label.shape[0])
        positives += int(label.numpy().sum())
    assert labels == WIDE.num_rows
    assert positives == pc.sum(WIDE["label"]).as_py()


# Throttling: RESOURCE_EXHAUSTED with RetryInfo is retried after the given delay ------------


def test_throttling_with_retry_info_waits_the_given_delay_and_resumes(server, client):
    faults = Faults(
        break_at_row=1500,
        break_times=2,
        break_code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        retry_delay_s=0.25,
    )
    server.add_table(path("throttled"), WIDE, faults)
    source = open_source(client, "throttled", ["key"], num_streams=1)
    keys = [k for b in source.read_stream(0) for k in b["key"].to_pylist()]
    assert collections.Counter(keys) == collections.Counter(range(WIDE.num_rows))
    name = source.stream_names[0]
    assert requests_for(server, name) == [0, 1500, 1500]
    times = [
        t
        for (n, _), t in zip(server.read_requests, server.read_request_times, strict=True)
        if n == name
    ]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.25 <= gap < 2.0 for gap in gaps), gaps  # the delay, not the 1 ms backoff


def test_throttling_without_retry_info_is_final(server, client):
    faults = Faults(break_at_row=100, break_code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    server.add_table(path("quota"), WIDE, faults)
    source = open_source(client, "quota", ["key"], num_streams=1)
    with pytest.raises(SourceError, match="offset 100: RESOURCE_EXHAUSTED without retry info"):
        list(source.read_stream(0))
    assert requests_for(server, source.stream_names[0]) == [0]


def test_endless_throttling_is_bounded(server, client):
    faults = Faults(
        break_at_row=700,
        break_times=None,
        break_code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        retry_delay_s=0.01,
    )
    server.add_table(path("always_throttled"), WIDE, faults)
    source = open_source(client, "always_throttled", ["key"], num_streams=1, max_throttle_retries=3)
    with pytest.raises(SourceError, match=r"throttled at offset 700 4 times in a row"):
        list(source.read_stream(0))
    assert requests_for(server, source.stream_names[0]) == [0, 700, 700, 700]


# Session expiry: every pass reads every row once, across sessions ----------------------------


def read_pass(source) -> list[int]:
    """One epoch: all streams read concurrently (as tf.data's interleave does)."""
    with concurrent.futures.ThreadPoolExecutor(source.num_streams) as pool:
        parts = pool.map(
            lambda i: [k for b in source.read_stream(i) for k in b["key"].to_pylist()],
            range(source.num_streams),
        )
        return [k for part in parts for k in part]


def test_epochs_longer_than_the_session_lifetime_read_every_row_every_epoch():
    with StorageReadServer(batch_rows=400, session_lifetime_s=0.8) as srv:
        srv.add_table(path("wide"), WIDE)
        source = open_source(
            local_client(srv.address),
            "wide",
            ["key", "f00"],
            num_streams=3,
            session_refresh_margin_s=0.3,
        )
        assert source.num_streams == 3
        srv.max_streams_returned = 1  # later sessions come with one stream only
        started = time.monotonic()
        for _ in range(8):
            keys = read_pass(source)
            assert collections.Counter(keys) == collections.Counter(range(WIDE.num_rows))
            time.sleep(0.25)
        assert time.monotonic() - started > 2 * srv.session_lifetime_s
    assert source.sessions_created >= 3
    assert [s.streams for s in srv.created_sessions][:2] == [3, 1]
    assert all(s.parent == "projects/p" for s in srv.created_sessions)


def test_a_pass_that_outlives_its_session_fails_clearly():
    with StorageReadServer(batch_rows=400, session_lifetime_s=0.5) as srv:
        srv.add_table(path("wide"), WIDE, Faults(break_at_row=700))
        # The reconnect after the break waits 0.6-1.2 s: past the session's expiry.
        source = open_source(
            local_client(srv.address),
            "wide",
            ["key"],
            num_streams=1,
            retry_backoff_s=1.2,
            session_refresh_margin_s=0,
        )
        with pytest.raises(SourceError, match=r"expired while stream .* at offset 700"):
            list(source.read_stream(0))


# Billing project: sessions run in the caller's project, not the data project ----------------


def test_read_sessions_run_in_the_billing_project():
    with StorageReadServer(read_only_projects={"public-data"}) as srv:
        srv.add_table("projects/public-data/datasets/d/tables/t", TYPED)
        client = local_client(srv.address)
        with pytest.raises(
            PipelineInputError,
            match=r"billing project 'public-data'.*bigquery.readsessions.create.*billing_project=",
        ):
            BigQueryStorageSource("public-data.d.t", ["key"], client=client)
        source = BigQueryStorageSource(
            "public-data.d.t", ["key"], client=client, billing_project="mine"
        )
        assert source.billing_project == "mine"
        assert source.session_name.startswith("projects/mine/")
        assert read_all(source)["key"].to_pylist() == TYPED["key"].to_pylist()
        shard = source.shard(1, 2, "key")
        assert shard.billing_project == "mine"
        assert {s.parent for s in srv.created_sessions} == {"projects/mine"}


# Worker shards: disjoint and complete whatever the number of streams returned ----------------


@pytest.fixture(scope="module")
def one_stream_client():
    with StorageReadServer(batch_rows=700, max_streams_returned=1) as srv:
        srv.add_table(path("wide"), WIDE)
        yield local_client(srv.address)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_worker_shards_cover_every_row_once_when_the_service_returns_one_stream(
    one_stream_client, workers
):
    per_worker = []
    for index in range(workers):  # every worker opens its own source, as on Vertex
        whole = open_source(one_stream_client, "wide", ["key", "s00"], num_streams=4)
        assert whole.num_streams == 1
        shard = worker_shard(whole, index, workers, key="key")
        assert shard.num_streams == 1
        epochs = [read_pass(shard) for _ in range(2)]
        assert collections.Counter(epochs[0]) == collections.Counter(epochs[1])
        per_worker.append(set(epochs[0]))
        assert len(epochs[0]) == len(per_worker[-1])  # no row twice within a shard
    assert sum(len(keys) for keys in per_worker) == WIDE.num_rows
    assert set().union(*per_worker) == set(range(WIDE.num_rows))
    share = WIDE.num_rows / workers
    assert all(abs(len(keys) - share) < 0.15 * share for keys in per_worker)


def test_shards_keep_the_row_restriction(one_stream_client):
    restriction = "label = 1"
    expected = WIDE.filter(pc.equal(WIDE["label"], 1))["key"].to_pylist()
    keys = []
    for index in range(3):
        whole = open_source(one_stream_client, "wide", ["key"], row_restriction=restriction)
        shard = worker_shard(whole, index, 3, key="key")
        assert shard.description.startswith("bq://p.d.wide WHERE (label = 1) AND (ABS(MOD(")
        keys += read_pass(shard)
    assert sorted(keys) == expected


def test_bigquery_shards_need_a_key(one_stream_client):
    whole = open_source(one_stream_client, "wide", ["key"])
    with pytest.raises(ValueError, match="pass key="):
        worker_shard(whole, 0, 2)
    with pytest.raises(PipelineInputError, match="invalid column name"):
        worker_shard(whole, 0, 2, key="key; DROP")


def test_pickled_copies_read_the_launchers_session_and_never_renew_it(server):
    # Beam ships one source to many workers: all must read the streams of one session.
    factory = functools.partial(local_client, server.address)
    source = BigQueryStorageSource(
        "p.d.wide",
        ["key"],
        num_streams=3,
        client_factory=factory,
        session_refresh_margin_s=6 * 3600 - 1e-3,  # any pass renews the session
    )
    copies = [pickle.loads(pickle.dumps(source)) for _ in range(source.num_streams)]
    keys = [k for i, c in enumerate(copies) for b in c.read_stream(i) for k in b["key"].to_pylist()]
    assert sorted(keys) == list(range(WIDE.num_rows))
    assert {c.session_name for c in copies} == {source.session_name}
    assert all(c.sessions_created == 1 for c in copies)
    assert sorted(read_pass(source)) == list(range(WIDE.num_rows))
    assert source.sessions_created == 2  # the original renews between passes


def test_a_renewed_session_with_another_schema_fails_clearly(server, client):
    server.add_table(path("changing"), WIDE)
    source = open_source(
        client, "changing", ["key", "f00"], num_streams=2, session_refresh_margin_s=6 * 3600 - 1e-3
    )
    assert sorted(read_pass(source)) == list(range(WIDE.num_rows))
    retyped = WIDE.set_column(1, "f00", pc.cast(WIDE["f00"], pa.float32()))
    server.add_table(path("changing"), retyped)
    with pytest.raises(SourceError, match=r"schema of table p\.d\.changing changed"):
        read_pass(source)
