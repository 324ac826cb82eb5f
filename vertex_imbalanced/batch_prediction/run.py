"""The scoring step: resolved model + input table -> a published predictions table.

Everything that can be checked is checked before the Beam job starts (output URI, model
metadata, input columns and types, an empty table); the job writes Parquet parts into a
run-scoped staging directory; only a job that finished is published (:mod:`.output`). A rerun
with the same ``run_id`` clears the staging directory and replaces the table: the result is the
same.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.batch_prediction.dataflow import DataflowConfig, pipeline_flags
from vertex_imbalanced.batch_prediction.prior_adjustment import PriorAdjustment
from vertex_imbalanced.batch_prediction.resolve import ResolvedModel, read_model_metadata
from vertex_imbalanced.batch_prediction.scoring import InputColumns
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.sources.base import RecordBatchSource


@dataclasses.dataclass(frozen=True)
class ScoringResult:
    """What a scoring run published.

    Attributes:
        output_uri: the predictions table (``duckdb:///..?table=..`` or ``bq://p.d.t``).
        rows: rows scored and published.
        classes: class names in id order (``probabilities[i]`` is class ``classes[i]``).
        model: the model version used.
        input_uri: the scored table.
        key: the key column.
        job_id: the Dataflow job id, or ``"direct"``.
        seconds: wall time of the step.
        em_prior: with prior-adjusted probabilities, the EM serving prior they were adjusted
            to (class -> share); None otherwise.
    """

    output_uri: str
    rows: int
    classes: tuple[str, ...]
    model: ResolvedModel
    input_uri: str
    key: str
    job_id: str
    seconds: float
    em_prior: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the step's metadata)."""
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        return out


def input_columns(metadata: dict[str, Any], key: str, model_dir: str) -> InputColumns:
    """The model's inputs from ``model_metadata.json`` and the key column to carry.

    Raises:
        PipelineInputError: no key given and none recorded with the model.
    """
    spec = metadata.get("feature_spec") or {}
    key = key or spec.get("key") or ""
    if not key:
        raise PipelineInputError(
            f"no key column: pass key=... (the model in {model_dir} records none)"
        )
    return InputColumns(tuple(spec.get("numeric", ())), tuple(spec.get("categorical", ())), key)


def require_rows(source: RecordBatchSource) -> None:
    """Raise unless the source has at least one row (reads at most one batch per stream).

    Raises:
        PipelineInputError: the table (after its row restriction) is empty.
    """
    for index in range(source.num_streams):
        for batch in source.read_stream(index):
            if batch.num_rows:
                return
    raise PipelineInputError(f"input table {source.description} is empty: nothing to score")


def score_table(
    model: ResolvedModel,
    input_uri: str,
    output_uri: str,
    run_id: str,
    staging_root: str,
    *,
    key: str = "",
    row_restriction: str | None = None,
    num_streams: int = 2,
    dataflow: DataflowConfig | None = None,
    bigquery_location: str | None = None,
    source: RecordBatchSource | None = None,
    adjust_probabilities: bool = False,
) -> ScoringResult:
    """Score ``input_uri`` with ``model`` and publish the predictions at ``output_uri``.

    Args:
        model: the resolved model version.
        input_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/file.db?table=name``.
        output_uri: the predictions table, same forms; replaced if it exists.
        run_id: the pipeline run (names the staging directory, staging table and Dataflow job).
        staging_root: directory (local, or ``gs://`` for Dataflow / BigQuery output) under which
            the run's Parquet parts are written.
        key: key column of the input ('' = the key recorded with the model).
        row_restriction: optional filter on the input (trusted SQL text, as in training).
        num_streams: read streams to ask for.
        dataflow: run on Dataflow with these settings; None runs the DirectRunner here.
        bigquery_location: location of the output dataset (BigQuery output only).
        source: an already opened input source (tests, benchmarks); default: ``open_source``.
        adjust_probabilities: add the ``adjusted_probabilities`` column: the probabilities
            re-weighted to this run's EM serving prior (:mod:`.prior_adjustment`; needs the
            training class prior in the model's ``feature_statistics.json``).

    Returns:
        What was published.

    Raises:
        PipelineInputError: bad output URI, model metadata, missing/mistyped columns, an empty
            table, a staging location the output cannot load from, or (with
            ``adjust_probabilities``) a model without training statistics (nothing is written).
        ScoringJobError: the Beam job failed (nothing is published).
    """
    started = time.monotonic()
    kind, table, database = output.parse_destination(output_uri)
    if not run_id.strip():
        raise PipelineInputError("run_id must be a non-empty string")
    remote = staging_root.startswith("gs://")
    if (kind == "bigquery" or dataflow is not None) and not remote:
        raise PipelineInputError(
            f"staging location {staging_root!r} must be gs://BUCKET/PATH for "
            f"{'Dataflow' if dataflow else 'BigQuery output'}"
        )
    metadata = read_model_metadata(model.model_dir)
    classes = tuple(metadata["classes"])
    inputs = input_columns(metadata, key, model.model_dir)
    adjustment = _adjustment(model.model_dir, classes) if adjust_probabilities else None
    if source is None:
        from vertex_imbalanced.reading.sources.open import open_source

        source = open_source(input_uri, inputs.read_columns, row_restriction, num_streams)
    inputs.check(source.description, source.schema)
    require_rows(source)
    schema = output.output_schema(inputs.key, source.schema.field(inputs.key).type)

    from vertex_imbalanced.batch_prediction.beam_pipeline import (
        RecordBatchModelHandler,
        clear_directory,
        run_scoring,
    )

    staging = f"{staging_root.rstrip('/')}/{_safe(run_id)}"
    handler = RecordBatchModelHandler(model.model_dir, model.name, model.version, inputs)
    # DuckDB inputs and outputs run under the fixed memory limit of every connection
    # (vertex_imbalanced.warehouse.duckdb_settings): the scoring process stays flat with rows.
    job_id = run_scoring(source, handler, staging, schema, pipeline_flags(dataflow, run_id))
    description = output.table_description(model.name, model.version, classes)
    if kind == "duckdb":
        parts = output.parquet_parts(staging)
        rows = output.publish_duckdb(
            parts,
            database,
            table,
            schema,
            description,
            run_id,
            adjustment=adjustment,
        )
    else:
        rows = output.publish_bigquery(
            [f"{staging}/{output.PART_PREFIX}-*.parquet"],
            table,
            description,
            run_id,
            location=bigquery_location,
            kms_key=dataflow.kms_key if dataflow else "",
            adjustment=adjustment,
        )
    clear_directory(staging)
    return ScoringResult(
        output_uri=output.destination_uri(kind, table, database),
        rows=rows,
        classes=classes,
        model=model,
        input_uri=input_uri,
        key=inputs.key,
        job_id=job_id,
        seconds=round(time.monotonic() - started, 3),
        em_prior=adjustment.em_prior if adjustment else None,
    )


def _adjustment(model_dir: str, classes: tuple[str, ...]) -> PriorAdjustment:
    """The prior adjustment for a model: its training class prior, read before the job.

    Raises:
        PipelineInputError: no ``feature_statistics.json`` (named) or no class prior in it.
    """
    from vertex_imbalanced.monitoring.statistics import read_training_statistics
    from vertex_imbalanced.registry.champion import local_model_dir

    statistics = read_training_statistics(local_model_dir(model_dir))
    prior = statistics.get("class_prior") or {}
    if not prior:
        raise PipelineInputError(
            f"the training statistics of {model_dir} have no class_prior: cannot adjust "
            "probabilities"
        )
    return PriorAdjustment(classes, prior)


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[:200]


def read_predictions(database: str | Path, table: str) -> pa.Table:
    """Read a published DuckDB predictions table (tests, the local command's summary)."""
    import duckdb

    from vertex_imbalanced.warehouse.identifiers import TableRef

    ref = TableRef.parse(table)
    with duckdb.connect(str(database), read_only=True) as con:
        return con.sql(f"SELECT * FROM {ref.duckdb}").to_arrow_table()
