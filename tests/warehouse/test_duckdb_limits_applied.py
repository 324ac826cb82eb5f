"""The prepare step's warehouse and the train/evaluate steps' reader run under DuckDB's fixed limit."""

from __future__ import annotations

import duckdb

from vertex_imbalanced.warehouse import duckdb_settings as ds


def _settings(con):
    return con.execute(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone()


def test_the_warehouse_and_the_split_reader_run_under_the_limit(tmp_path, monkeypatch):
    """The prepare step's warehouse and the train/evaluate steps' reader use :func:`ds.connect`."""
    from vertex_imbalanced.reading.sources.duckdb_source import DuckDBSource
    from vertex_imbalanced.warehouse.engines import DuckDBWarehouse

    monkeypatch.setenv(ds.MEMORY_LIMIT_ENV, "48MB")
    db = tmp_path / "work.duckdb"
    with DuckDBWarehouse(db) as warehouse:
        warehouse.con.execute("CREATE TABLE t AS SELECT range AS id FROM range(10)")
        assert _settings(warehouse.con) == ("45.7 MiB", f"{db.resolve()}.tmp")
    batches = DuckDBSource(db, "t", ["id"], batch_rows=4).read_stream(0)
    assert len(next(batches)) == 4  # the source's connection is open while it reads
    with duckdb.connect(str(db), read_only=True) as reader:  # shares the source's instance
        assert _settings(reader)[0] == "45.7 MiB"
    assert sum(len(b) for b in batches) == 6
