"""Every DuckDB connection gets one fixed memory limit and a spill directory (issue 13 item 16)."""

from __future__ import annotations

import duckdb
import pytest

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse import duckdb_settings as ds


def _settings(con):
    return con.execute(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone()


def _limit_bytes(con):
    return con.execute(
        "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"
    ).fetchone()[0]


def test_default_limit_and_spill_directory_beside_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(ds.MEMORY_LIMIT_ENV, raising=False)
    db = tmp_path / "work.duckdb"
    with ds.connect(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        limit, spill = _settings(con)
        assert limit == "61.0 MiB"  # DuckDB prints 64MB (10^6 bytes) in MiB
        assert spill == f"{db.resolve()}.tmp"
    with ds.connect(db, read_only=True) as con:  # read-only connections are limited too
        assert _settings(con)[0] == "61.0 MiB"
    with ds.connect() as con:  # in memory: the system temp dir, not ./.tmp
        assert _settings(con)[1].endswith(ds.IN_MEMORY_SPILL_DIR)


def test_argument_then_environment_override_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.MEMORY_LIMIT_ENV, "1GB")
    with ds.connect(tmp_path / "a.duckdb") as con:
        assert _settings(con)[0] == "953.6 MiB"
    with ds.connect(tmp_path / "b.duckdb", limit="128MB") as con:
        assert _settings(con)[0] == "122.0 MiB"


def test_bad_limit_is_refused_before_any_file_is_opened(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(PipelineInputError, match=r"VI_DUCKDB_MEMORY_LIMIT='lots'.*256MB"):
        ds.connect(tmp_path / "x.duckdb")
    with pytest.raises(PipelineInputError, match=r"memory_limit='5 apples'"):
        ds.connect(tmp_path / "x.duckdb", limit="5 apples")
    assert not (tmp_path / "x.duckdb").exists()


def test_a_plain_connection_to_the_same_file_shares_the_limit(tmp_path, monkeypatch):
    """Settings are SET after connecting: DuckDB's same-file, same-config rule still holds."""
    monkeypatch.delenv(ds.MEMORY_LIMIT_ENV, raising=False)
    db = tmp_path / "w.duckdb"
    with ds.connect(db) as con, duckdb.connect(str(db)) as plain:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        assert plain.execute("SELECT a FROM t").fetchall() == [(1,)]
        assert _limit_bytes(plain) == _limit_bytes(con)


def test_a_grouping_larger_than_the_limit_spills_and_completes(tmp_path):
    """sql/key_stats.sql groups every key of the table: past the limit it must spill, not fail."""
    db = tmp_path / "big.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(300000)"
        )
    with ds.connect(db, limit="12MB") as con:
        con.execute("SET threads = 1")
        sql = "SELECT count(*), sum(n) FROM (SELECT s, count(*) AS n FROM t GROUP BY s)"
        assert con.execute(sql).fetchone() == (300_000, 300_000)
        used = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()[0]
        assert used <= 12e6


def test_chunks_are_written_whole_and_an_empty_stream_leaves_the_old_table(tmp_path):
    import pyarrow as pa

    from vertex_imbalanced.warehouse.duckdb_settings import write_table_chunks

    db = tmp_path / "c.db"
    parts = [pa.table({"k": [i, i + 1], "v": ["a", "b"]}) for i in (0, 2, 4)]
    assert str(write_table_chunks(db, "main.t", iter(parts))) == "main.t"
    with pytest.raises(ValueError, match="no rows to write into main.t"):
        write_table_chunks(db, "main.t", iter([]))
    with duckdb.connect(str(db), read_only=True) as con:
        names = con.sql("SELECT table_name FROM information_schema.tables").fetchall()
        got = con.sql("SELECT * FROM main.t ORDER BY k").to_arrow_table()
    assert names == [("t",)]
    assert got.equals(pa.concat_tables(parts).combine_chunks())
