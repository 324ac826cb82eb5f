import threading

import duckdb
import pyarrow as pa
import pytest

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.reading.sources.base import RecordBatchSource
from vertex_imbalanced.reading.sources.duckdb_source import (
    SCAN_MEMORY_LIMIT,
    SCAN_STREAMING_BUFFER,
    SCAN_THREADS,
    DuckDBSource,
    DuckDBTable,
    duckdb_uri,
    parse_duckdb_uri,
    scan_connection,
)
from vertex_imbalanced.reading.sources.open import open_source
from vertex_imbalanced.warehouse import duckdb_settings
from vertex_imbalanced.warehouse.identifiers import TableRef

ROWS = 20_000


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("duck") / "src.db"
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"CREATE TABLE t AS SELECT range AS id, 'v' || (range % 7) AS s, "
            f"CASE WHEN range % 5 = 0 THEN NULL ELSE range * 0.5::DOUBLE END AS x, "
            f"DATE '2020-01-01' + CAST(range % 100 AS INTEGER) AS d, range % 3 AS lab "
            f"FROM range({ROWS})"
        )
        con.execute("CREATE SCHEMA other")
        con.execute("CREATE TABLE other.u AS SELECT 1 AS a")
        con.execute("CREATE VIEW v AS SELECT * FROM t WHERE id < 100")
    return path


def _read_all(source):
    return [list(source.read_stream(i)) for i in range(source.num_streams)]


def test_streams_are_disjoint_complete_and_batched(db):
    source = DuckDBSource(db, "t", ["x", "id"], num_streams=3)
    assert isinstance(source, RecordBatchSource)
    assert source.num_streams == 3
    assert source.schema.names == ["x", "id"]
    assert source.schema.field("x").type == pa.float64()
    streams = _read_all(source)
    ids = [i for batches in streams for b in batches for i in b.column("id").to_pylist()]
    assert sorted(ids) == list(range(ROWS))
    assert all(0 < b.num_rows <= 8192 for batches in streams for b in batches)
    whole = [b.num_rows for b in DuckDBSource(db, "t", ["id"]).read_stream(0)]
    assert whole == [8192, 8192, ROWS - 2 * 8192]
    nulls = sum(b.column("x").null_count for batches in streams for b in batches)
    assert nulls == ROWS // 5


def test_streams_read_concurrently_from_threads(db):
    source = DuckDBSource(db, "t", ["id"], num_streams=4)
    counts = [0] * 4

    def read(i):
        counts[i] = sum(b.num_rows for b in source.read_stream(i))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == ROWS and min(counts) > 0


def test_row_restriction_and_schema_qualified_table(db):
    source = DuckDBSource(db, "t", ["id", "d"], row_restriction="id < 10", num_streams=2)
    ids = sorted(
        i for batches in _read_all(source) for b in batches for i in b.column("id").to_pylist()
    )
    assert ids == list(range(10))
    assert source.schema.field("d").type == pa.date32()
    other = DuckDBSource(db, "other.u", ["a"])
    assert [b.to_pylist() for b in other.read_stream(0)] == [[{"a": 1}]]
    with pytest.raises(PipelineInputError, match="';'"):
        DuckDBSource(db, "t", ["id"], row_restriction="1=1; DROP TABLE t")


def test_views_are_one_stream(db):
    source = DuckDBSource(db, "v", ["id"], num_streams=4)
    assert source.num_streams == 1
    assert sum(b.num_rows for b in source.read_stream(0)) == 100


def test_errors_name_the_table_and_column(db, tmp_path):
    with pytest.raises(SchemaError, match=r"no column 'xx'; did you mean 'x'"):
        DuckDBSource(db, "t", ["id", "xx"])
    with pytest.raises(PipelineInputError, match="table .*:missing does not exist"):
        DuckDBSource(db, "missing", ["id"])
    with pytest.raises(PipelineInputError, match="does not exist"):
        DuckDBSource(tmp_path / "none.db", "t", ["id"])
    with pytest.raises(PipelineInputError, match="invalid column"):
        DuckDBSource(db, "t", ['id" FROM t; --'])


def test_reading_while_this_process_holds_the_file_for_writing(db):
    with duckdb.connect(str(db)) as writer:
        assert writer.execute("SELECT count(*) FROM t").fetchall() == [(ROWS,)]
        source = DuckDBSource(db, "t", ["id"], num_streams=2)
        assert sum(b.num_rows for b in source.read_stream(1)) == ROWS // 2


def test_open_source_dispatches_and_rejects_unknown_schemes(db):
    uri = duckdb_uri(db, "t")
    assert uri == f"duckdb://{db.resolve()}?table=t"
    assert parse_duckdb_uri(uri) == (str(db.resolve()), TableRef(None, None, "t"))
    source = open_source(uri, ["id"], num_streams=2)
    assert isinstance(source, DuckDBSource) and source.num_streams == 2
    with pytest.raises(PipelineInputError, match="unsupported source URI"):
        open_source("postgres://h/db?table=t", ["id"])
    with pytest.raises(PipelineInputError, match="invalid DuckDB URI"):
        open_source("duckdb://relative.db?table=t", ["id"])
    with pytest.raises(PipelineInputError, match="exactly one"):
        open_source(f"duckdb://{db}", ["id"])
    with pytest.raises(PipelineInputError, match="project.dataset.table"):
        open_source("bq://t", ["id"])


def test_feeds_the_tf_data_converter(db):
    import numpy as np

    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.reading.datasets import make_dataset

    spec = FeatureSpec(label="lab", numeric=("x", "d"), categorical=("s",))
    source = DuckDBSource(db, "t", spec.read_columns, row_restriction="id < 1000", num_streams=2)
    rows, nans = 0, 0
    for features, label, _weight in make_dataset(source, spec):
        rows += int(label.shape[0])
        nans += int(np.isnan(features["x"].numpy()).sum())
        assert set(np.unique(label.numpy())) <= {0, 1, 2}
        assert features["s"].dtype.name == "string"
    assert rows == 1000 and nans == 200


@pytest.mark.parametrize(
    ("path", "table", "uri"),
    [
        ("/data/w.db", "events", "duckdb:///data/w.db?table=events"),
        ("/data/w.db", "sales.events", "duckdb:///data/w.db?table=sales.events"),
        ("/my data/w#1.db", "t", "duckdb:///my%20data/w%231.db?table=t"),
    ],
)
def test_uri_round_trip_in_both_table_forms(path, table, uri):
    assert duckdb_uri(path, table) == uri
    parsed = parse_duckdb_uri(uri)
    assert parsed == DuckDBTable(path, TableRef.parse(table))
    assert (parsed.path, str(parsed.table)) == (path, table)
    assert duckdb_uri(*parsed) == uri


def test_uri_build_makes_the_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert duckdb_uri("rel/w.db", "t") == f"duckdb://{tmp_path.resolve()}/rel/w.db?table=t"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("bq://p.d.t", "the scheme is not duckdb://"),
        ("duckdb://w.db?table=t", "the path must be absolute"),
        ("duckdb:w.db?table=t", "the path must be absolute"),
        ("duckdb:///w.db", "needs exactly one ?table=, got 0"),
        ("duckdb:///w.db?table=a&table=b", "needs exactly one ?table=, got 2"),
        ("duckdb:///w.db?table=t&schema=s", "unknown query key(s) schema"),
        ("duckdb:///w.db?table=t#frag", "unexpected fragment #frag"),
        ("duckdb:///w.db?table=p.d.t", "table 'p.d.t' is not name or schema.name"),
        ("duckdb:///w.db?table=t;drop", "invalid table name 't;drop'"),
        ("duckdb:///w.db?table=", "invalid table reference ''"),
    ],
)
def test_bad_uris_name_the_uri_the_fault_and_the_accepted_forms(uri, why):
    with pytest.raises(PipelineInputError) as info:
        parse_duckdb_uri(uri)
    message = str(info.value)
    assert message.startswith(f"invalid DuckDB URI {uri!r}: {why}")
    assert "duckdb:///absolute/path.db?table=name (or ?table=schema.name)" in message


def test_uri_build_refuses_a_project_qualified_table():
    with pytest.raises(PipelineInputError, match="'p.d.t' is not name or schema.name"):
        duckdb_uri("/w.db", "p.d.t")


def _setting(con, name):
    return con.execute("SELECT current_setting(?)", [name]).fetchone()[0]


def _as_set(name, value):
    """What DuckDB reports for ``name`` after ``SET name = value`` on a fresh database."""
    with duckdb.connect() as fresh:
        default = _setting(fresh, name)
        fresh.execute(f"SET {name} = '{value}'")
        return default, _setting(fresh, name)


def test_scans_run_with_a_small_result_queue_and_memory_limit(tmp_path, monkeypatch):
    """Issue 13 item 16: a scan's memory is a small fixed amount (by default DuckDB queues
    10 MiB of results per query and keeps the blocks it read up to the memory limit); the
    user's ``VI_DUCKDB_MEMORY_LIMIT`` still wins."""
    path = tmp_path / "scan.db"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS id FROM range(10)")
    monkeypatch.delenv(duckdb_settings.MEMORY_LIMIT_ENV, raising=False)
    queue_default, queue = _as_set("streaming_buffer_size", SCAN_STREAMING_BUFFER)
    _, limit = _as_set("memory_limit", SCAN_MEMORY_LIMIT)
    assert queue != queue_default
    with scan_connection(str(path)) as con:
        assert _setting(con, "streaming_buffer_size") == queue
        assert _setting(con, "memory_limit") == limit
        assert _setting(con, "threads") == SCAN_THREADS
        # another of the pipeline's connections to the same instance takes its own settings
        with duckdb_settings.connect(path, read_only=True) as other, duckdb.connect() as fresh:
            assert _setting(other, "threads") == _setting(fresh, "threads")
            assert _setting(other, "streaming_buffer_size") != queue  # per connection
    monkeypatch.setenv(duckdb_settings.MEMORY_LIMIT_ENV, "96MB")
    with scan_connection(str(path)) as con:
        assert _setting(con, "memory_limit") == _as_set("memory_limit", "96MB")[1]
    assert [b.num_rows for b in DuckDBSource(path, "t", ["id"]).read_stream(0)] == [10]
