"""KFP component: train the classifier on the prepared (downsampled, weighted) train split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def train(
    prepared_data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    hyperparameters: str = "{}",
    feature_config: str = "",
    num_streams: int = 2,
):
    """Train, export the model directory and log the training metrics.

    Args:
        prepared_data: PreparedData JSON from ``prepare_data`` (train/validation URIs, classes,
            feature spec, imbalance report).
        model: the model directory (``saved_model/``, ``model.keras``, ``model_metadata.json``,
            and ``_COMPLETE`` written last: readers refuse a directory without it);
            metadata: framework, classes, feature spec, imbalance report, decision rule,
            serving input names, training budget.
        metrics: final training metrics (validation loss/accuracy, epochs, rows per epoch).
        hyperparameters: ``Hyperparameters`` fields as JSON (missing fields take defaults;
            batch_size, epochs, early_stopping_patience left out are fitted to the rows).
        feature_config: FeatureSpec JSON/YAML overriding the prepared spec ("" = use it).
        num_streams: read streams per split.
    """
    import json

    from vertex_imbalanced.config import FeatureSpec, Hyperparameters
    from vertex_imbalanced.training.trainer import backup_dir_for, train_prepared
    from vertex_imbalanced.warehouse.prepare import PreparedData

    result = train_prepared(
        PreparedData.read(prepared_data.path),
        Hyperparameters.from_dict(json.loads(hyperparameters or "{}")),
        model.path,
        feature_config=FeatureSpec.from_json(feature_config) if feature_config else None,
        backup_dir=backup_dir_for(model.path),
        num_streams=num_streams,
    )
    meta = result.metadata
    model.metadata.update(
        {
            "framework": meta["framework"],
            "tf_version": meta["tf_version"],
            "classes": meta["classes"],
            "feature_spec": meta["feature_spec"],
            "imbalance": meta["imbalance"],
            "decision_rule": meta["decision_rule"],
            "serving_inputs": meta["serving_inputs"],
            "training_budget": meta["training_budget"],
        }
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, float(value))
