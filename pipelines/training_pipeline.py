"""The training pipeline: prepare -> train -> evaluate -> champion -> gate -> register.

One definition serves Vertex AI and local runs; only configuration differs:

- Vertex: ``source_uri=bq://project.dataset.table``, ``registry_uri=vertex://project/location``,
  and the train step wrapped as a custom job (``build_pipeline(VertexTrainingConfig(...))``).
  One Cloud KMS key (the ``kms_key`` parameter) encrypts what the pipeline creates: the custom
  job (its ``encryption_spec_key_name`` is wired to the parameter at run time), the registered
  model and every step that takes a ``kms_key`` input (the split tables, once the prepare step
  takes one); ``submit.py --kms-key`` also sets it on the pipeline job itself.
- Local (``run_local.py``): a DuckDB ``source_uri``, ``registry_uri=local:///abs/dir`` and
  ``build_pipeline(None)`` (train is an ordinary task).
"""

import functools
from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.evaluate import evaluate
from components.gate import gate
from components.lookup_champion import lookup_champion
from components.prepare_data import prepare_data
from components.register import register
from components.train import train
from pipelines.step_policy import StepPolicy, apply_policy
from pipelines.vertex_training import VertexTrainingConfig, as_custom_job
from vertex_imbalanced.config import DEFAULT_IMBALANCE_MODE

PIPELINE_NAME = "imbalanced-training"
DEFAULT_MODEL_NAME = ""
"""'' = derived per run from the source table and label
(:func:`vertex_imbalanced.registry.champion.default_model_name`), so datasets never share a
champion."""


# The source table may change between runs with the same parameters: never cache prepare.
PREPARE = StepPolicy("Prepare data", cache=False, cpu="1", memory="4G", retries=2, backoff="60s")
TRAIN = StepPolicy("Train", cache=True, cpu="4", memory="16G", retries=1, backoff="120s")
EVALUATE = StepPolicy("Evaluate", cache=True, cpu="2", memory="8G", retries=1, backoff="60s")
# The registry changes between runs: never reuse a cached lookup.
# The lookup loads the champion's SavedModel and scores this run's test split (as evaluate does).
LOOK_UP_CHAMPION = StepPolicy(
    "Look up champion", cache=False, cpu="2", memory="8G", retries=3, backoff="30s"
)
GATE = StepPolicy("Gate", cache=False, cpu="0.5", memory="1G")
# Registration is idempotent per run id, so a retry never adds a second version.
REGISTER = StepPolicy("Register", cache=False, cpu="0.5", memory="1G", retries=3, backoff="30s")


def optional_inputs(component: Any, **values: Any) -> dict[str, Any]:
    """The ``values`` that ``component`` declares as inputs (the others are left out).

    For settings that reach a step only once its component takes them (``kms_key``,
    ``billing_project``): ``submit.py`` reports a key that a step does not take
    (:func:`pipelines.submission.kms_key_gaps`) instead of dropping it silently.
    """
    declared = component.component_spec.inputs or {}
    return {name: value for name, value in values.items() if name in declared}


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
    step = functools.partial(apply_policy, retries=retries)

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
        imbalance_mode: str = DEFAULT_IMBALANCE_MODE,
        imbalance_max_ratio: float = 10.0,
        imbalance_target_share: float = 0.0,
        hyperparameters: str = "{}",
        gate_metric: str = "macro_f1",
        min_metric: float = 0.5,
        tolerance: float = 0.0,
        gate_baseline_check: bool = True,
        gate_baseline_min_tolerance: float = 0.02,
        evaluate_baselines: bool = True,
        baseline_max_rows: int = 50_000,
        model_display_name: str = DEFAULT_MODEL_NAME,
        serving_image: str = "",
        model_labels: str = "{}",
        git_commit: str = "",
        kms_key: str = "",
        billing_project: str = "",
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
            gate_baseline_check: reject a challenger whose macro F1 is below the logistic
                baseline's by more than the baseline tolerance (see ``components/gate.py``).
            gate_baseline_min_tolerance: the floor of that tolerance.
            evaluate_baselines: score the class prior and a logistic regression beside the
                model (the gate's baseline check needs them).
            baseline_max_rows: most train rows the logistic baseline is fitted on, and most
                validation rows its decision rule is chosen on.
            model_display_name: registry model name ('' = ``<dataset>.<table>-<label>`` for
                BigQuery, ``<table>-<label>`` for DuckDB, so datasets never share a champion).
            serving_image: serving container of the registered model on Vertex ('' = Google's
                prebuilt TensorFlow CPU image).
            model_labels: JSON object of extra labels on the registered version.
            git_commit: commit the pipeline was compiled from (compile.py fills it in).
            kms_key: Cloud KMS key ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` for the
                train step's custom job, the split tables and the registered model
                ('' = Google-managed; ``compile.py --kms-key`` sets the default).
            billing_project: project the BigQuery jobs and read sessions run and bill in
                ('' = the pipeline's project; ``submit.py`` fills it with ``--project``).
        """
        prepared = step(
            prepare_data(
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
                **optional_inputs(prepare_data, kms_key=kms_key, billing_project=billing_project),
            ),
            PREPARE,
        )
        custom_job = {} if vertex_training is None else {"encryption_spec_key_name": kms_key}
        trained = step(
            train_op(
                prepared_data=prepared.outputs["prepared"],
                hyperparameters=hyperparameters,
                **custom_job,
                **optional_inputs(train, billing_project=billing_project),
            ),
            TRAIN,
            resources=vertex_training is None,  # a custom job's machine comes from its pools
        )
        champion = step(
            lookup_champion(
                registry_uri=registry_uri,
                model_name=model_display_name,
                prepared_data=prepared.outputs["prepared"],
                source_uri=source_uri,
            ),
            LOOK_UP_CHAMPION,
        )
        evaluated = step(
            evaluate(
                model=trained.outputs["model"],
                prepared_data=prepared.outputs["prepared"],
                baselines=evaluate_baselines,
                baseline_max_rows=baseline_max_rows,
                model_name=champion.outputs["model_name"],
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                dataset=source_uri,
            ),
            EVALUATE,
        )
        decision = step(
            gate(
                challenger_metrics=evaluated.outputs["evaluation"],
                champion_metrics=champion.outputs["metrics_json"],
                metric=gate_metric,
                min_value=min_metric,
                tolerance=tolerance,
                baseline_check=gate_baseline_check,
                baseline_min_tolerance=gate_baseline_min_tolerance,
            ),
            GATE,
        )
        with dsl.If(decision.outputs["passed"] == True, name="gate-passed"):  # noqa: E712
            step(
                register(
                    model=trained.outputs["model"],
                    metrics=evaluated.outputs["evaluation"],
                    registry_uri=registry_uri,
                    model_display_name=champion.outputs["model_name"],
                    run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                    make_champion=True,
                    labels_json=model_labels,
                    serving_image=serving_image,
                    source_uri=source_uri,
                    git_commit=git_commit,
                    prepared_data=prepared.outputs["prepared"],
                    # compare-and-set: promote only if the champion is still the one seen
                    champion_version=champion.outputs["version"],
                    gate_metric=gate_metric,
                    min_metric=min_metric,
                    tolerance=tolerance,
                    kms_key=kms_key,
                ),
                REGISTER,
            )

    return training_pipeline
