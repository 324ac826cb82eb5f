"""Where each run's statistics are kept for the next run's drift check.

- BigQuery: a table ``project.dataset.table`` (columns ``series``, ``run_id``, ``created_at``,
  ``statistics`` JSON text), created by the first append (query job, WRITE_APPEND).
- Local: a DuckDB file of its own (e.g. beside the local registry), never a run's work database,
  so it outlives the runs.

A series names what is compared over time (by default the model and the scored table). The
baseline is the latest row of the series written by another run, so a rerun of a run compares
with the same baseline as its first attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import duckdb

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.engines import (
    BigQueryWarehouse,
    bigquery_parameters,
    load_sql,
    render,
    to_duckdb,
)
from vertex_imbalanced.warehouse.identifiers import TableRef

_TABLE = TableRef(None, None, "feature_statistics")


class StatisticsStore(Protocol):
    """Keeps statistics dicts per series and run."""

    def previous(self, series: str, run_id: str) -> tuple[str, dict[str, Any]] | None:
        """``(run_id, statistics)`` of the latest other run of the series, or None."""
        ...

    def put(self, series: str, run_id: str, statistics: dict[str, Any]) -> None:
        """Record a run's statistics."""
        ...


def _row_params(series: str, run_id: str, statistics: dict[str, Any]) -> dict[str, Any]:
    return {"series": series, "run_id": run_id, "statistics": json.dumps(statistics)}


class DuckDBStatisticsStore:
    """A statistics table in a DuckDB file of its own.

    Args:
        path: the store's file (created with its parent directory if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {_TABLE.duckdb} (series VARCHAR, run_id VARCHAR, "
            "created_at TIMESTAMPTZ, statistics VARCHAR)"
        )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path))
        con.execute(self._ddl)
        return con

    def previous(self, series: str, run_id: str) -> tuple[str, dict[str, Any]] | None:
        """The latest statistics of ``series`` stored by a run other than ``run_id``."""
        if not self.path.exists():
            return None
        sql = render(load_sql("statistics_store_latest"), tables={"store": _TABLE})
        with self._connect() as con:
            rows = con.execute(to_duckdb(sql), {"series": series, "run_id": run_id}).fetchall()
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def put(self, series: str, run_id: str, statistics: dict[str, Any]) -> None:
        """Replace the run's row of the series (a rerun leaves one row)."""
        row_sql = to_duckdb(render(load_sql("statistics_store_row")))
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute(
                f"DELETE FROM {_TABLE.duckdb} WHERE series = ? AND run_id = ?", [series, run_id]
            )
            con.execute(
                f"INSERT INTO {_TABLE.duckdb} {row_sql}", _row_params(series, run_id, statistics)
            )
            con.execute("COMMIT")


class BigQueryStatisticsStore:
    """A statistics table in BigQuery (the dataset must exist; the table is created on first use).

    Args:
        table: ``project.dataset.table`` (``bq://`` prefix allowed).
        warehouse: runner whose client (and billing project) to use.
    """

    def __init__(self, table: str, warehouse: BigQueryWarehouse) -> None:
        self.ref = TableRef.parse(table)
        if self.ref.project is None or self.ref.dataset is None:
            raise PipelineInputError(f"statistics table {table!r} must be project.dataset.table")
        self.warehouse = warehouse

    def previous(self, series: str, run_id: str) -> tuple[str, dict[str, Any]] | None:
        """The latest statistics of ``series`` stored by a run other than ``run_id``."""
        if self.warehouse.table_schema(self.ref) is None:
            return None
        sql = render(load_sql("statistics_store_latest"), tables={"store": self.ref})
        rows = self.warehouse.query(sql, {"series": series, "run_id": run_id}).to_pylist()
        return (rows[0]["run_id"], json.loads(rows[0]["statistics"])) if rows else None

    def put(self, series: str, run_id: str, statistics: dict[str, Any]) -> None:
        """Append the run's row (a query job with WRITE_APPEND; the table is created if needed).

        A rerun appends a second row for its run id; :meth:`previous` skips the current run's
        rows and otherwise takes the latest, so duplicates change no comparison.
        """
        from google.cloud import bigquery

        sql = render(load_sql("statistics_store_row"))
        config = bigquery.QueryJobConfig(
            query_parameters=bigquery_parameters(_row_params(series, run_id, statistics)),
            use_legacy_sql=False,
            destination=str(self.ref),
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        client = self.warehouse.client
        client.query(sql, job_config=config, location=self.warehouse.location).result()


def open_store(uri: str, warehouse: Any = None) -> StatisticsStore:
    """Store for ``bq://project.dataset.table`` or a local DuckDB file path.

    Args:
        uri: where the statistics live.
        warehouse: the BigQuery runner to reuse for a ``bq://`` store (default: a new one).

    Raises:
        PipelineInputError: an empty URI.
    """
    if not uri:
        raise PipelineInputError("statistics store URI is empty")
    if uri.startswith("bq://"):
        ref = TableRef.parse(uri)
        if not isinstance(warehouse, BigQueryWarehouse):
            warehouse = BigQueryWarehouse(ref.project)
        return BigQueryStatisticsStore(uri, warehouse)
    return DuckDBStatisticsStore(uri.removeprefix("duckdb://"))
