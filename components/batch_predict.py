"""KFP component: score a table with Beam RunInference and publish the predictions table."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def batch_predict(
    resolved_json: str,
    input_uri: str,
    output_location: str,
    staging_root: str,
    run_id: str,
    predictions: Output[Dataset],
    key: str = "",
    row_restriction: str = "",
    num_streams: int = 2,
    dataflow_config: str = "",
    dataflow_image: str = "",
    bigquery_location: str = "",
    adjust_probabilities: bool = False,
) -> NamedTuple("PredictOutputs", [("output_uri", str), ("rows", int)]):
    """Score ``input_uri`` with the resolved model; publish a run-scoped predictions table.

    Locally (``dataflow_config`` empty) the Beam DirectRunner runs in this task; on Vertex a
    Dataflow job runs and this task waits for it, failing with the job's error.

    Args:
        resolved_json: the resolve step's ``resolved_json``.
        input_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/file.db?table=name``.
        output_location: ``bq://project.dataset`` or ``duckdb:///abs/file.db`` (the table is
            ``predictions_<run>``), or a full table URI.
        staging_root: where the run's Parquet parts go (``gs://`` for Dataflow/BigQuery).
        run_id: the pipeline run (names the table, the staging directory and the job).
        predictions: output Dataset: ``metadata`` holds the table URI, row count, classes
            (probability order), model name and version.
        key: the input's key column ('' = the key recorded with the model).
        row_restriction: optional filter of the input rows (trusted SQL text).
        num_streams: read streams to ask for.
        dataflow_config: JSON of ``DataflowConfig`` fields (project, region, temp_location,
            service_account, network, subnetwork, machine_type, max_workers, kms_key, ...);
            '' runs the DirectRunner here.
        dataflow_image: SDK container image for Dataflow (the pipeline passes the project
            image).
        bigquery_location: location of the output dataset (BigQuery output).
        adjust_probabilities: add ``adjusted_probabilities`` (the probabilities re-weighted to
            this run's EM serving prior; ``class_id`` stays the served decision); the prior is
            in ``predictions.metadata["em_prior"]``.

    Returns:
        ``output_uri`` (the published table) and ``rows``.
    """
    import json
    from collections import namedtuple

    from vertex_imbalanced.batch_prediction.dataflow import DataflowConfig
    from vertex_imbalanced.batch_prediction.output import run_output_uri
    from vertex_imbalanced.batch_prediction.resolve import ResolvedModel
    from vertex_imbalanced.batch_prediction.run import score_table

    settings = json.loads(dataflow_config) if dataflow_config.strip() else {}
    if settings:
        settings.setdefault("sdk_container_image", dataflow_image)
    result = score_table(
        ResolvedModel.from_dict(json.loads(resolved_json)),
        input_uri,
        run_output_uri(output_location, run_id),
        run_id,
        staging_root,
        key=key,
        row_restriction=row_restriction or None,
        num_streams=num_streams,
        dataflow=DataflowConfig.from_json(json.dumps(settings)),
        bigquery_location=bigquery_location or None,
        adjust_probabilities=adjust_probabilities,
    )
    predictions.uri = result.output_uri
    predictions.metadata.update(result.to_dict())
    print(f"published {result.rows} predictions to {result.output_uri} ({result.seconds} s)")
    outputs = namedtuple("PredictOutputs", ["output_uri", "rows"])
    return outputs(result.output_uri, result.rows)
