"""The Beam scoring pipeline: record batches in, RunInference, Parquet parts out.

Elements are whole Arrow record batches, never rows::

    Create(stream indices) -> Reshuffle -> ReadStream (one source stream -> record batches)
      -> RunInference(RecordBatchModelHandler) -> WriteToParquetBatched(staging/part-*.parquet)

The source object (``DuckDBSource`` or ``BigQueryStorageSource``) is created once by the
launcher: its schema is checked there, and for BigQuery its one read session (billing project,
row restriction, location rules of the training side) is shared by all workers, whose streams
are disjoint only within that session. Each worker reads the streams it is given.

The model handler loads the SavedModel once per worker (:class:`.scoring.BatchScorer`) and
scores each record batch as one inference call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, RunInference

from vertex_imbalanced.batch_prediction.output import PART_PREFIX
from vertex_imbalanced.batch_prediction.scoring import BatchScorer, InputColumns
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.sources.base import RecordBatchSource


class RecordBatchModelHandler(ModelHandler[pa.RecordBatch, pa.RecordBatch, BatchScorer]):
    """RunInference handler: one Arrow record batch in, one record batch of output rows out.

    Args:
        model_dir: the model directory (local path or ``gs://``).
        model_name: registered model name.
        model_version: registered version id.
        expected: the inputs the launcher checked the table for; a worker whose loaded
            signature differs fails instead of scoring other columns.
    """

    def __init__(
        self, model_dir: str, model_name: str, model_version: str, expected: InputColumns
    ) -> None:
        super().__init__()
        self._model_dir = model_dir
        self._name, self._version = model_name, model_version
        self._expected = expected

    def load_model(self) -> BatchScorer:
        """Load the SavedModel (once per worker; Beam shares it between the worker's threads)."""
        scorer = BatchScorer(self._model_dir, self._name, self._version, self._expected.key)
        if not scorer.inputs.same_roles(self._expected):
            raise PipelineInputError(
                f"the SavedModel in {self._model_dir} takes {scorer.inputs}, but its metadata "
                f"declares {self._expected}"
            )
        return scorer

    def run_inference(
        self,
        batch: Sequence[pa.RecordBatch],
        model: BatchScorer,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[pa.RecordBatch]:
        """Score each record batch of the (one-element) Beam batch."""
        return [model.score(b) for b in batch]

    def get_num_bytes(self, batch: Sequence[pa.RecordBatch]) -> int:
        """Bytes of the input record batches (Beam's inference byte counter)."""
        return sum(b.nbytes for b in batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of Beam's inference metrics for this handler."""
        return "imbalanced_batch_prediction"

    def batch_elements_kwargs(self) -> dict[str, int]:
        """One element per inference call: an element already is a whole record batch."""
        return {"min_batch_size": 1, "max_batch_size": 1}


class ReadStream(beam.DoFn):
    """Stream index -> the record batches of that stream of the source."""

    def __init__(self, source: RecordBatchSource) -> None:
        self._source = source
        self._rows = beam.metrics.Metrics.counter("imbalanced_batch_prediction", "rows_read")

    def process(self, index: int) -> Iterator[pa.RecordBatch]:
        """Yield the non-empty record batches of stream ``index``."""
        for batch in self._source.read_stream(index):
            if batch.num_rows:
                self._rows.inc(batch.num_rows)
                yield batch


def build_scoring(
    pipeline: beam.Pipeline,
    source: RecordBatchSource,
    handler: RecordBatchModelHandler,
    staging: str,
    schema: pa.Schema,
) -> None:
    """Add the read -> score -> write steps to ``pipeline``.

    Args:
        pipeline: the Beam pipeline.
        source: the opened input table.
        handler: the model handler.
        staging: directory (local or ``gs://``) the Parquet parts go to.
        schema: the output schema (:func:`.output.output_schema`).
    """
    _ = (
        pipeline
        | "Streams" >> beam.Create(list(range(source.num_streams)))
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(ReadStream(source))
        | "Score" >> RunInference(handler)
        | "ToTable" >> beam.Map(lambda batch: pa.Table.from_batches([batch]))
        | "Write"
        >> beam.io.parquetio.WriteToParquetBatched(
            f"{staging.rstrip('/')}/{PART_PREFIX}", schema, file_name_suffix=".parquet"
        )
    )


def clear_directory(path: str) -> None:
    """Delete a staging directory (local or ``gs://``) and everything in it, if it exists."""
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.exists(path):
        FileSystems.delete([path])


def run_scoring(
    source: RecordBatchSource,
    handler: RecordBatchModelHandler,
    staging: str,
    schema: pa.Schema,
    flags: list[str],
) -> str:
    """Run the scoring pipeline to completion.

    Args:
        source: the opened input table.
        handler: the model handler.
        staging: run-scoped directory for the Parquet parts (cleared first).
        schema: the output schema.
        flags: Beam pipeline flags (:func:`.dataflow.pipeline_flags`).

    Returns:
        The job id (Dataflow) or ``"direct"``.

    Raises:
        ScoringJobError: the job did not finish in state DONE (names the job and its error).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    clear_directory(staging)
    options = PipelineOptions(flags)
    pipeline = beam.Pipeline(options=options)
    build_scoring(pipeline, source, handler, staging, schema)
    job_id = "direct"
    try:
        # The DirectRunner runs inside run() and raises the failing DoFn's error there;
        # Dataflow returns at once and wait_until_finish raises DataflowRuntimeException
        # carrying the job's error messages.
        result = pipeline.run()
        job_id = getattr(result, "job_id", lambda: "direct")() or "direct"
        state = result.wait_until_finish()
    except Exception as err:
        raise ScoringJobError(f"scoring job {job_id} failed: {_first_line(err)}") from err
    if str(state) not in ("DONE", "PipelineState.DONE"):
        raise ScoringJobError(f"scoring job {job_id} ended in state {state}")
    return job_id


def describe_job(
    source: RecordBatchSource,
    handler: RecordBatchModelHandler,
    staging: str,
    schema: pa.Schema,
    flags: list[str],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The Dataflow job request Beam would send for these flags, built without sending it.

    Beam's DataflowRunner translates the pipeline (``--dry_run`` stops it before any call),
    then Beam's own ``DataflowApplicationClient.create_job_description`` fills in the job
    environment (workers, network, service account, KMS key, SDK image) with its uploads to
    the staging location captured in memory instead of sent.

    Returns:
        ``(job, staged)``: the job description as JSON (Dataflow's ``Job`` message) and the
        files Beam would have staged (``{gs:// path: bytes}``).
    """
    import json

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.internal import apiclient

    staged: dict[str, bytes] = {}

    class CapturingClient(apiclient.DataflowApplicationClient):
        def stage_file(self, gcs_or_local_path, file_name, stream, *args, **kwargs):
            staged[f"{gcs_or_local_path.rstrip('/')}/{file_name}"] = stream.read()

    pipeline = beam.Pipeline(options=PipelineOptions([*flags, "--dry_run=True"]))
    build_scoring(pipeline, source, handler, staging, schema)
    job = pipeline.run().job
    CapturingClient(job.options, job.root_staging_location).create_job_description(job)
    return json.loads(job.json()), staged


class ScoringJobError(RuntimeError):
    """The Beam / Dataflow scoring job failed; names the job and its error."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
