"""Prior-adjusted probabilities in SQL (both engines) and in the published predictions table."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakes.bigquery_rest import FakeBigQuery
from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.batch_prediction.prior_adjustment import (
    ADJUSTED_PROBABILITIES,
    PriorAdjustment,
    adjusted_sql,
    adjustment_params,
)
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.monitoring.predictions import prediction_summary
from vertex_imbalanced.monitoring.prior_shift import adjust_probabilities
from vertex_imbalanced.warehouse.engines import BigQueryWarehouse, DuckDBWarehouse
from vertex_imbalanced.warehouse.identifiers import TableRef

PROJECT = "test-project"


def predictions(num_classes, n=300, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_classes), n)
    probs[0] = 0.0  # a row whose weighted sum is 0: uniform, as adjust_probabilities gives
    return probs, pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "class_id": pa.array(probs.argmax(axis=1), pa.int64()),
            "probabilities": pa.array(probs.tolist(), pa.list_(pa.float64())),
        }
    )


def shares(classes, values):
    return dict(zip(classes, values / values.sum(), strict=True))


@pytest.fixture(params=["duckdb", "bigquery"])
def engine(request, tmp_path):
    """(warehouse, load(name, arrow) -> TableRef) on DuckDB and on the BigQuery REST fake."""
    if request.param == "duckdb":
        with DuckDBWarehouse(tmp_path / "e.db") as wh:

            def load(name, table):
                wh.con.register("_in", table)
                wh.con.execute(f"CREATE TABLE {name} AS SELECT * FROM _in")
                wh.con.unregister("_in")
                return TableRef.parse(name)

            yield wh, load
        return
    with FakeBigQuery(tmp_path / f"{PROJECT}.db", PROJECT) as fake:
        fake.con.execute("CREATE SCHEMA ds")

        def load_bq(name, table):
            fake.con.register("_in", table)
            fake.con.execute(f"CREATE TABLE ds.{name} AS SELECT * FROM _in")
            fake.con.unregister("_in")
            return TableRef.parse(f"{PROJECT}.ds.{name}")

        yield BigQueryWarehouse(client=fake.client()), load_bq


@pytest.mark.parametrize("num_classes", [2, 3])
def test_adjusted_sql_equals_numpy_on_both_engines(engine, num_classes):
    warehouse, load = engine
    probs, table = predictions(num_classes)
    ref = load("preds", table)
    classes = [f"c{i}" for i in range(num_classes)]
    train = shares(classes, np.linspace(1, 2, num_classes))
    em = shares(classes, np.linspace(3, 1, num_classes))
    params = adjustment_params(classes, train, em)
    got = warehouse.query(adjusted_sql(ref, num_classes), params).sort_by("id")
    assert got.column_names == ["id", "class_id", "probabilities", ADJUSTED_PROBABILITIES]
    expected = adjust_probabilities(
        probs, np.array([train[c] for c in classes]), np.array([em[c] for c in classes])
    )
    np.testing.assert_allclose(
        np.array(got.column(ADJUSTED_PROBABILITIES).to_pylist()), expected, atol=1e-12
    )
    assert got.column("class_id").equals(table.column("class_id"))  # the decision is kept


def test_publishing_with_the_adjustment_uses_the_em_prior_of_the_staged_rows(tmp_path):
    schema = output.output_schema("id", pa.int64())
    probs, table = predictions(3, n=500, seed=4)
    n = table.num_rows
    rows = pa.table(
        {
            "id": table.column("id"),
            "class_id": table.column("class_id"),
            "class_name": pa.array([f"c{i}" for i in table.column("class_id").to_pylist()]),
            "probabilities": table.column("probabilities"),
            "model_name": ["m"] * n,
            "model_version": ["1"] * n,
            "scored_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=schema,
    )
    (tmp_path / "parts").mkdir()
    pq.write_table(rows, tmp_path / "parts" / "part-00000-of-00001.parquet")
    classes, train = ("c0", "c1", "c2"), {"c0": 0.5, "c1": 0.3, "c2": 0.2}
    adjustment = PriorAdjustment(classes, train)
    db = str(tmp_path / "out.duckdb")
    parts = output.parquet_parts(tmp_path / "parts")
    ref = TableRef.parse("preds")
    assert output.publish_duckdb(parts, db, ref, schema, "d", "r1", adjustment=adjustment) == n
    with DuckDBWarehouse(db, read_only=True) as wh:
        summary = prediction_summary(
            wh,
            ref,
            classes,
            train,
            class_id_column="class_id",
            probabilities_column="probabilities",
        )
        got = wh.query("SELECT * FROM preds ORDER BY id", {})
        names = [r[0] for r in wh.con.sql("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert names == ["preds"]  # the staging table is gone
    # the monitor finds the same prior (to rounding: DuckDB's parallel sums vary in order)
    assert adjustment.em_prior.keys() == summary["em_prior"].keys()
    for name, prior in adjustment.em_prior.items():
        assert prior == pytest.approx(summary["em_prior"][name], rel=1e-9, abs=1e-12)
    expected = adjust_probabilities(
        probs, np.array([0.5, 0.3, 0.2]), np.array([adjustment.em_prior[c] for c in classes])
    )
    np.testing.assert_allclose(
        np.array(got.column(ADJUSTED_PROBABILITIES).to_pylist()), expected, atol=1e-12
    )
    assert got.column_names == [*schema.names, ADJUSTED_PROBABILITIES]


def test_a_prior_missing_a_class_is_refused():
    with pytest.raises(PipelineInputError, match="does not cover the model's classes"):
        PriorAdjustment(("a", "b"), {"a": 1.0})
    with pytest.raises(PipelineInputError, match="class 'b' has no training prior"):
        adjustment_params(("a", "b"), {"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 0.5})
