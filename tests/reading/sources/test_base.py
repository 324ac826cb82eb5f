"""worker_shard / shard_restriction: disjoint worker shards that cover the table."""

import collections

import duckdb
import pyarrow as pa
import pytest
import sqlglot

from fakes.arrow_tables import make_wide_table
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.sources.base import (
    and_restrictions,
    shard_restriction,
    shard_streams,
    worker_shard,
)
from vertex_imbalanced.warehouse.fingerprint import register_farm_fingerprint

TABLE = make_wide_table(1000, n_float=1, n_string=1, seed=3, key=True)


def keys_of(source) -> list[int]:
    return [
        k
        for i in range(source.num_streams)
        for b in source.read_stream(i)
        for k in b["key"].to_pylist()
    ]


@pytest.mark.parametrize(("streams", "workers"), [(1, 3), (4, 2), (5, 3), (2, 5), (3, 1), (6, 3)])
def test_deterministic_sources_shard_by_stream_or_row_position(streams, workers):
    shards = [
        worker_shard(ArrowTableSource(TABLE, num_streams=streams, batch_rows=64), i, workers)
        for i in range(workers)
    ]
    per_worker = [keys_of(s) for s in shards]
    assert per_worker == [keys_of(s) for s in shards]  # the same rows every epoch
    counts = collections.Counter(k for keys in per_worker for k in keys)
    assert counts == collections.Counter(range(TABLE.num_rows))
    assert max(map(len, per_worker)) - min(map(len, per_worker)) <= max(1, streams // workers)
    assert all(s.schema == TABLE.schema for s in shards)


def test_shard_restriction_partitions_keys_with_bigquery_semantics():
    con = duckdb.connect()
    register_farm_fingerprint(con)
    keys = pa.table({"id": pa.array([*range(200), None], pa.int64())})
    con.register("t", keys)
    seen = collections.Counter()
    for index in range(3):
        predicate = shard_restriction("id", index, 3)
        sql = sqlglot.transpile(
            f"SELECT id FROM t WHERE {predicate}", read="bigquery", write="duckdb"
        )
        seen.update(row[0] for row in con.sql(sql[0]).fetchall())
    assert seen == collections.Counter([*range(200), None])
    assert shard_restriction("id", 1, 3) == (
        "ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(`id` AS STRING), '')), 3)) = 1"
    )


def test_bad_shard_arguments():
    for index, count in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match="out of range"):
            shard_restriction("id", index, count)
        with pytest.raises(ValueError, match="out of range"):
            shard_streams(4, index, count)
    assert and_restrictions(None, "a = 1", "") == "a = 1"
    assert and_restrictions("a = 1", "b = 2") == "(a = 1) AND (b = 2)"
