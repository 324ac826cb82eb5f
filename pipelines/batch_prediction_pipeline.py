"""The batch prediction pipeline: resolve model -> score (Beam RunInference) -> monitor.

One definition serves Vertex AI and local runs; only configuration differs:

- Vertex: ``input_uri=bq://project.dataset.table``, ``registry_uri=vertex://project/location``,
  ``output_location=bq://project.dataset``, ``staging_root=gs://bucket/path`` and a
  ``dataflow_config`` JSON: the score step launches a Dataflow job and waits for it.
- Local (``predict_local.py``): a DuckDB ``input_uri``, ``registry_uri=local:///abs/dir``, a
  DuckDB ``output_location`` and a local ``staging_root``; ``dataflow_config`` empty runs the
  Beam DirectRunner inside the score task.

The predictions table is run-scoped (``predictions_<pipeline job name>``) and published only
when complete; rerunning a run replaces it with the same result.
"""

import functools
from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.batch_predict import batch_predict
from components.image import PROJECT_IMAGE
from components.monitor import monitor
from components.resolve_model import resolve_model
from pipelines.step_policy import StepPolicy, apply_policy

PIPELINE_NAME = "imbalanced-batch-prediction"

# On Vertex; kfp.local ignores resources. With Dataflow, the score step only launches and
# waits; without it (DirectRunner on Vertex) it needs this size.
# The alias moves between runs: never reuse a cached lookup.
RESOLVE = StepPolicy("Resolve model", cache=False, cpu="0.5", memory="1G", retries=3, backoff="30s")
# The input table changes between runs with the same parameters; a retry of the same run
# replaces the run-scoped table with the same result.
SCORE = StepPolicy("Batch predict", cache=False, cpu="4", memory="16G", retries=1, backoff="120s")
MONITOR = StepPolicy(
    "Monitor skew and drift", cache=False, cpu="1", memory="4G", retries=1, backoff="60s"
)


def build_pipeline(_vertex_training: Any = None, *, retries: bool = True) -> Callable[..., Any]:
    """Build the pipeline function.

    Args:
        _vertex_training: ignored (the training pipeline's custom-job settings; compile.py
            passes the same argument to every pipeline builder).
        retries: retry steps on failure; local runs pass False.

    Returns:
        The ``@dsl.pipeline`` function, ready for ``Compiler().compile`` or a kfp.local call.
    """
    step = functools.partial(apply_policy, retries=retries)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Batch prediction: resolve the registered model (alias or version), score a table "
            "with Apache Beam RunInference (DirectRunner or Dataflow), publish a run-scoped "
            "predictions table, then monitor skew and drift."
        ),
    )
    def batch_prediction_pipeline(
        input_uri: str,
        registry_uri: str,
        output_location: str,
        staging_root: str,
        model_name: str,
        model_alias: str = "champion",
        model_version: str = "",
        key: str = "",
        row_restriction: str = "",
        num_streams: int = 2,
        dataflow_config: str = "",
        dataflow_image: str = PROJECT_IMAGE,
        bigquery_location: str = "",
        statistics_store: str = "",
        monitoring_thresholds: str = "{}",
        default_threshold: float = 0.3,
        prior_threshold: float = 0.1,
        timestamp_column: str = "",
        window_seconds: int = 86400,
        fail_on_alert: bool = False,
        adjusted_probabilities: bool = False,
    ) -> None:
        """Score a table with a registered model and publish the predictions.

        Args:
            input_uri: table to score: ``bq://project.dataset.table`` or
                ``duckdb:///abs/file.db?table=name``.
            registry_uri: ``vertex://project/location`` or ``local:///abs/dir``.
            output_location: ``bq://project.dataset`` or ``duckdb:///abs/file.db``; the table is
                ``predictions_<run>`` (or give a full table URI).
            staging_root: where the run's Parquet parts are staged (``gs://`` on Vertex).
            model_name: registered model name (required: training derives it from the source
                table and the label, ``<dataset>.<table>-<label>``, unless it was given).
            model_alias: alias to score with (default ``champion``).
            model_version: explicit version ('' = use ``model_alias``).
            key: the input's key column ('' = the key recorded with the model).
            row_restriction: optional filter of the rows to score (SQL predicate).
            num_streams: read streams (Storage Read API streams / DuckDB row ranges).
            dataflow_config: JSON of the Dataflow settings (project, region, temp_location,
                service_account, network, subnetwork, machine_type, max_workers, kms_key,
                no_public_ips); '' runs the Beam DirectRunner inside the score task.
            dataflow_image: SDK container of the Dataflow workers (the project image;
                compile.py --image replaces it).
            bigquery_location: location of the output dataset (BigQuery output).
            statistics_store: where scored-table statistics persist for run-to-run drift
                (``bq://project.dataset.table`` or a local DuckDB file; '' = no drift check).
            monitoring_thresholds: JSON object feature -> alert threshold.
            default_threshold: alert threshold of the other features.
            prior_threshold: alert when the estimated serving prior moves a class share by more.
            timestamp_column: TIMESTAMP column for drift between consecutive windows ('' = off).
            window_seconds: window length of the window drift.
            fail_on_alert: fail the run when any alert fired (after writing the report).
            adjusted_probabilities: add the ``adjusted_probabilities`` column (probabilities
                re-weighted to this run's EM serving prior; the predicted class stays the
                served decision).
        """
        resolved = resolve_model(
            registry_uri=registry_uri,
            model_name=model_name,
            alias=model_alias,
            version=model_version,
        )
        step(resolved, RESOLVE)

        scored = batch_predict(
            resolved_json=resolved.outputs["resolved_json"],
            input_uri=input_uri,
            output_location=output_location,
            staging_root=staging_root,
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            key=key,
            row_restriction=row_restriction,
            num_streams=num_streams,
            dataflow_config=dataflow_config,
            dataflow_image=dataflow_image,
            bigquery_location=bigquery_location,
            adjust_probabilities=adjusted_probabilities,
        )
        step(scored, SCORE)

        # The registered model directory as a Model artifact (no copy; lineage on Vertex).
        model = dsl.importer(
            artifact_uri=resolved.outputs["model_dir"], artifact_class=dsl.Model, reimport=True
        )
        model.set_display_name("Registered model")

        monitored = monitor(
            model=model.output,
            features_uri=input_uri,
            predictions_uri=scored.outputs["output_uri"],
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            statistics_store=statistics_store,
            thresholds=monitoring_thresholds,
            default_threshold=default_threshold,
            prior_threshold=prior_threshold,
            timestamp_column=timestamp_column,
            window_seconds=window_seconds,
            fail_on_alert=fail_on_alert,
        )
        step(monitored, MONITOR)

    return batch_prediction_pipeline
