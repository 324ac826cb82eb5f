"""Warehouses for the monitoring tests: DuckDB, and BigQuery through the local REST fake."""

import pyarrow as pa
import pytest

from fakes.bigquery_rest import FakeBigQuery
from vertex_imbalanced.warehouse.engines import BigQueryWarehouse, DuckDBWarehouse
from vertex_imbalanced.warehouse.identifiers import TableRef

PROJECT = "test-project"


class Engine:
    """A warehouse plus a way to load Arrow tables into it."""

    def __init__(self, warehouse, con, prefix):
        self.warehouse, self._con, self._prefix = warehouse, con, prefix

    def load(self, name: str, table: pa.Table) -> TableRef:
        self._con.register("_arrow_in", table)
        target = f"ds.{name}" if self._prefix else name
        self._con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM _arrow_in")
        self._con.unregister("_arrow_in")
        return TableRef.parse(f"{self._prefix}ds.{name}" if self._prefix else name)

    def uri(self, ref: TableRef) -> str:
        return self.warehouse.uri(ref)


@pytest.fixture(params=["duckdb", "bigquery"])
def engine(request, tmp_path):
    if request.param == "duckdb":
        with DuckDBWarehouse(tmp_path / "engine.db") as wh:
            yield Engine(wh, wh.con, "")
    else:
        yield request.getfixturevalue("bq")


@pytest.fixture()
def bq(tmp_path):
    with FakeBigQuery(tmp_path / f"{PROJECT}.db", PROJECT) as fake:
        fake.con.execute("CREATE SCHEMA ds")
        yield Engine(BigQueryWarehouse(client=fake.client()), fake.con, f"{PROJECT}.")


@pytest.fixture()
def duck(tmp_path):
    with DuckDBWarehouse(tmp_path / "wh.db") as wh:
        yield Engine(wh, wh.con, "")
