"""One entry point from a source URI to a RecordBatchSource."""

from __future__ import annotations

from collections.abc import Sequence

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.sources.base import RecordBatchSource
from vertex_imbalanced.warehouse.identifiers import TableRef


def open_source(
    uri: str,
    columns: Sequence[str],
    row_restriction: str | None = None,
    num_streams: int = 2,
    *,
    billing_project: str | None = None,
) -> RecordBatchSource:
    """Open ``bq://project.dataset.table`` or ``duckdb:///abs/path.db?table=[schema.]name``.

    Args:
        uri: source URI (as written by ``prepare_data`` into ``PreparedData``); DuckDB URIs
            in the forms :func:`~vertex_imbalanced.reading.sources.duckdb_source.parse_duckdb_uri`
            documents.
        columns: columns to read, in this order.
        row_restriction: optional filter (trusted SQL text).
        num_streams: streams to request.
        billing_project: project BigQuery read sessions run in and bill to (default: the
            table's project; callers pass the pipeline's project). Not used for DuckDB.

    Returns:
        A BigQuery Storage Read v1 source or a DuckDB source.

    Raises:
        PipelineInputError: unknown scheme or malformed URI.
    """
    if uri.startswith("duckdb://"):
        from vertex_imbalanced.reading.sources.duckdb_source import DuckDBSource, parse_duckdb_uri

        path, ref = parse_duckdb_uri(uri)
        return DuckDBSource(path, ref, columns, row_restriction, num_streams)
    if uri.startswith("bq://"):
        from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource

        ref = TableRef.parse(uri)
        if ref.project is None or ref.dataset is None:
            raise PipelineInputError(f"BigQuery URI {uri!r} must be bq://project.dataset.table")
        return BigQueryStorageSource(
            ref,
            list(columns),
            row_restriction=row_restriction,
            num_streams=num_streams,
            billing_project=billing_project,
        )
    raise PipelineInputError(
        f"unsupported source URI {uri!r}: use bq://project.dataset.table or "
        "duckdb:///absolute/path.db?table=name"
    )
