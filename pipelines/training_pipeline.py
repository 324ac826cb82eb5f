"""The training pipeline: prepare -> train -> evaluate -> champion -> gate -> register.

One definition serves Vertex AI and local runs; only configuration differs:

- Vertex: ``source_uri=bq://project.dataset.table``, ``registry_uri=vertex://project/location``,
  and the train step wrapped as a custom job (``build_pipeline(VertexTrainingConfig(...))``).
- Local (``run_local.py``): a DuckDB ``source_uri``, ``registry_uri=local:///abs/dir`` and
  ``build_pipeline(None)`` (train is an ordinary task).
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.evaluate import evaluate
from components.gate import gate
from components.lookup_champion import lookup_champion
from components.prepare_data import prepare_data
from components.register import register
from components.train import train
from pipelines.vertex_training import VertexTrainingConfig, as_custom_job

PIPELINE_NAME = "imbalanced-training"
DEFAULT_MODEL_NAME = "imbalanced-classifier"

# (cpu, memory) per step on Vertex; kfp.local ignores them.
RESOURCES = {
    "prepare": ("1", "4G"),
    "train": ("4", "16G"),
    "evaluate": ("2", "8G"),
    "small": ("0.5", "1G"),
}


def _resources(task: dsl.PipelineTask, kind: str) -> dsl.PipelineTask:
    cpu, memory = RESOURCES[kind]
    return (
        task.set_cpu_request(cpu)
        .set_cpu_limit(cpu)
        .set_memory_request(memory)
        .set_memory_limit(memory)
    )


def build_pipeline(
    vertex_training: "VertexTrainingConfig | None" = None, *, retries: bool = True
) -> Callable[..., Any]:
    """Build the pipeline function.

    Args:
        vertex_training: run the train step as a Vertex AI custom job with these settings
            (fixed at compile time); None runs it as an ordinary task (local runs).
        retries: retry steps on failure (transient cloud errors). kfp.local honours retries
            too, where a failure is not transient: local runs pass False.

    Returns:
        The ``@dsl.pipeline`` function, ready for ``Compiler().compile`` or a kfp.local call.
    """
    train_op = train if vertex_training is None else as_custom_job(train, vertex_training)

    def retry(task: dsl.PipelineTask, times: int, backoff: str, factor: float = 2.0) -> None:
        if retries:
            task.set_retry(num_retries=times, backoff_duration=backoff, backoff_factor=factor)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Imbalanced classification: deterministic split + downsample/upweight, Keras "
            "training, evaluation on the true distribution, champion gate, registration."
        ),
    )
    def training_pipeline(
        source_uri: str,
        feature_config: str,
        registry_uri: str,
        output_dataset: str = "",
        table_expiration_hours: float = 72.0,
        train_ratio: float = 0.8,
        validation_ratio: float = 0.1,
        test_ratio: float = 0.1,
        imbalance_mode: str = "downsample_upweight",
        imbalance_max_ratio: float = 10.0,
        imbalance_target_share: float = 0.0,
        hyperparameters: str = "{}",
        gate_metric: str = "macro_f1",
        min_metric: float = 0.5,
        tolerance: float = 0.0,
        model_display_name: str = DEFAULT_MODEL_NAME,
        serving_image: str = "",
        model_labels: str = "{}",
        git_commit: str = "",
    ) -> None:
        """Train, evaluate, gate and register a classifier for an imbalanced table.

        Args:
            source_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/file.db?table=name``.
            feature_config: FeatureSpec as JSON/YAML: ``label`` and ``key`` required;
                ``numeric`` / ``categorical`` inferred from the schema when omitted.
            registry_uri: ``vertex://project/location`` or ``local:///abs/dir`` (submit.py
                fills ``vertex://PROJECT/REGION`` from its flags).
            output_dataset: BigQuery ``[project.]dataset`` for the split tables ('' = the
                source's). Tables are named after the pipeline job, so runs never collide.
            table_expiration_hours: the split tables expire after this many hours (0: never).
            train_ratio: share of rows in the train split (deterministic hash of the key).
            validation_ratio: share of rows in the validation split.
            test_ratio: share of rows in the test split.
            imbalance_mode: downsample_upweight, class_weight, none or downsample_only.
            imbalance_max_ratio: largest majority:minority ratio kept (0: no limit).
            imbalance_target_share: largest share any class may keep (0: no limit).
            hyperparameters: JSON object of ``vertex_imbalanced.config.Hyperparameters`` fields
                (missing fields take the defaults).
            gate_metric: metric the gate compares (higher is better).
            min_metric: minimum value of ``gate_metric``.
            tolerance: how far below the champion the challenger may be and still win.
            model_display_name: registry model name.
            serving_image: serving container of the registered model on Vertex ('' = Google's
                prebuilt TensorFlow CPU image).
            model_labels: JSON object of extra labels on the registered version.
            git_commit: commit the pipeline was compiled from (compile.py fills it in).
        """
        prepared = prepare_data(
            source_uri=source_uri,
            feature_config=feature_config,
            output_prefix=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            train_ratio=train_ratio,
            validation_ratio=validation_ratio,
            test_ratio=test_ratio,
            imbalance_mode=imbalance_mode,
            max_ratio=imbalance_max_ratio,
            target_share=imbalance_target_share,
            expiration_hours=table_expiration_hours,
            output_dataset=output_dataset,
        )
        # The source table may change between runs with the same parameters.
        prepared.set_display_name("Prepare data").set_caching_options(False)
        retry(prepared, 2, "60s")
        _resources(prepared, "prepare")

        trained = train_op(
            prepared_data=prepared.outputs["prepared"], hyperparameters=hyperparameters
        )
        trained.set_display_name("Train").set_caching_options(True)
        retry(trained, 1, "120s")
        if vertex_training is None:
            _resources(trained, "train")

        evaluated = evaluate(
            model=trained.outputs["model"], prepared_data=prepared.outputs["prepared"]
        )
        evaluated.set_display_name("Evaluate").set_caching_options(True)
        retry(evaluated, 1, "60s")
        _resources(evaluated, "evaluate")

        champion = lookup_champion(registry_uri=registry_uri, model_name=model_display_name)
        # The registry changes between runs: never reuse a cached lookup.
        champion.set_display_name("Look up champion").set_caching_options(False)
        retry(champion, 3, "30s")
        _resources(champion, "small")

        decision = gate(
            challenger_metrics=evaluated.outputs["evaluation"],
            champion_metrics=champion.outputs["metrics_json"],
            metric=gate_metric,
            min_value=min_metric,
            tolerance=tolerance,
        )
        decision.set_display_name("Gate").set_caching_options(False)
        _resources(decision, "small")

        with dsl.If(decision.outputs["passed"] == True, name="gate-passed"):  # noqa: E712
            registered = register(
                model=trained.outputs["model"],
                metrics=evaluated.outputs["evaluation"],
                registry_uri=registry_uri,
                model_display_name=model_display_name,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                make_champion=True,
                labels_json=model_labels,
                serving_image=serving_image,
                source_uri=source_uri,
                git_commit=git_commit,
            )
            # Registration is idempotent per run id, so a retry never adds a second version.
            registered.set_display_name("Register").set_caching_options(False)
            retry(registered, 3, "30s")
            _resources(registered, "small")

    return training_pipeline
