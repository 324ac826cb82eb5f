"""Publishing the predictions table into DuckDB: all or nothing, replaced on rerun."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.identifiers import TableRef

SCHEMA = output.output_schema("id", pa.string())
TABLE = TableRef.parse("preds")


def rows(ids, version="1"):
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "class_id": pa.array([1] * n, pa.int64()),
            "class_name": ["b"] * n,
            "probabilities": pa.array([[0.25, 0.75]] * n, pa.list_(pa.float64())),
            "model_name": ["m"] * n,
            "model_version": [version] * n,
            "scored_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=SCHEMA,
    )


def write_parts(directory, tables):
    directory.mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(tables):
        pq.write_table(table, directory / f"part-{i:05d}-of-{len(tables):05d}.parquet")
    return output.parquet_parts(directory)


def test_publish_then_rerun_replaces_the_table(tmp_path):
    db = str(tmp_path / "out.duckdb")
    parts = write_parts(tmp_path / "s1", [rows(["a", "b"]), rows(["c"])])
    description = output.table_description("m", "1", ["x", "y"])
    assert output.publish_duckdb(parts, db, TABLE, SCHEMA, description, "run-1") == 3
    parts = write_parts(tmp_path / "s2", [rows(["d"], version="2")])
    assert output.publish_duckdb(parts, db, TABLE, SCHEMA, description, "run-1") == 1
    with duckdb.connect(db, read_only=True) as con:
        assert con.sql("SELECT id, model_version FROM preds").fetchall() == [("d", "2")]
        comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'preds'")
        assert '["x", "y"]' in comment.fetchall()[0][0]
        names = [r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert names == ["preds"]  # no staging table left


def test_a_failing_publish_leaves_the_previous_state(tmp_path):
    db = str(tmp_path / "out.duckdb")
    good = write_parts(tmp_path / "good", [rows(["a"])])
    output.publish_duckdb(good, db, TABLE, SCHEMA, "d", "run-1")
    # the second part is not Parquet: the load fails after the first part was read
    bad = write_parts(tmp_path / "bad", [rows(["x"]), rows(["y"])])
    with open(bad[1], "wb") as f:
        f.write(b"not parquet")
    with pytest.raises(Exception):  # noqa: B017 - DuckDB or pyarrow, whichever reads it first
        output.publish_duckdb(bad, db, TABLE, SCHEMA, "d", "run-2")
    with duckdb.connect(db, read_only=True) as con:
        assert con.sql("SELECT id FROM preds").fetchall() == [("a",)]
        assert len(con.sql("SELECT * FROM duckdb_tables()").fetchall()) == 1


def test_nothing_to_publish_and_foreign_schemas_are_refused(tmp_path):
    db = str(tmp_path / "out.duckdb")
    with pytest.raises(PipelineInputError, match="wrote no rows"):
        output.publish_duckdb([], db, TABLE, SCHEMA, "d", "r")
    parts = write_parts(tmp_path / "s", [rows(["a"]).drop_columns(["scored_at"])])
    with pytest.raises(PipelineInputError, match="has schema"):
        output.publish_duckdb(parts, db, TABLE, SCHEMA, "d", "r")
    assert not output.duckdb_table_exists(db, TABLE)


def test_destinations_and_reserved_key_names():
    assert output.parse_destination("bq://p.d.t")[:2] == ("bigquery", TableRef("p", "d", "t"))
    kind, ref, path = output.parse_destination("duckdb:///x/y.db?table=s.t")
    assert (kind, str(ref), path) == ("duckdb", "s.t", "/x/y.db")
    with pytest.raises(PipelineInputError, match="bq://project.dataset.table"):
        output.parse_destination("bq://d.t")
    with pytest.raises(PipelineInputError, match="unsupported output URI"):
        output.parse_destination("gs://b/x")
    with pytest.raises(PipelineInputError, match="name of a prediction column"):
        output.output_schema("class_id", pa.int64())
