"""KFP component: split the source table, downsample + weight the train split."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def prepare_data(
    source_uri: str,
    feature_config: str,
    output_prefix: str,
    prepared: Output[Dataset],
    imbalance_metrics: Output[Metrics],
    train_ratio: float = 0.8,
    validation_ratio: float = 0.1,
    test_ratio: float = 0.1,
    imbalance_mode: str = "downsample_upweight",
    max_ratio: float = 10.0,
    target_share: float = 0.0,
    num_classes: int = 0,
    expiration_hours: float = 72.0,
    output_dataset: str = "",
    billing_project: str = "",
    kms_key: str = "",
):
    """Write train/validation/test tables and the PreparedData JSON.

    Args:
        source_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/path.db?table=name``.
        feature_config: FeatureSpec as JSON/YAML text (``label`` and ``key`` required).
        output_prefix: prefix of the output tables (the pipeline passes the job id).
        prepared: file holding ``PreparedData.to_json()``; metadata holds the counts.
        imbalance_metrics: original/kept/weighted counts and keep rate per class.
        train_ratio: share of rows in the train split.
        validation_ratio: share of rows in the validation split.
        test_ratio: share of rows in the test split.
        imbalance_mode: downsample_upweight, class_weight, none or downsample_only.
        max_ratio: largest majority:minority ratio kept (0: no limit).
        target_share: largest share any class may keep (0: no limit).
        num_classes: number of classes for INT64 labels (0: max label + 1).
        expiration_hours: BigQuery output tables expire after this many hours (0: never).
        output_dataset: BigQuery ``[project.]dataset`` for the outputs ("" = the source's).
        billing_project: BigQuery project that runs and pays for the query jobs ("" = the
            default credentials' project: on Vertex AI, the pipeline's).
        kms_key: Cloud KMS key for the split tables ("" = Google-managed encryption).
    """
    from vertex_imbalanced.config import FeatureSpec, ImbalanceConfig
    from vertex_imbalanced.warehouse.prepare import prepare_data as run

    result = run(
        source_uri,
        FeatureSpec.from_json(feature_config),
        output_prefix=output_prefix,
        split_ratios=(train_ratio, validation_ratio, test_ratio),
        imbalance=ImbalanceConfig(
            mode=imbalance_mode,
            max_ratio=max_ratio or None,
            target_share=target_share or None,
        ),
        expiration_hours=expiration_hours,
        num_classes=num_classes or None,
        output_dataset=output_dataset or None,
        billing_project=billing_project or None,
        kms_key=kms_key or None,
    )
    with open(prepared.path, "w") as f:
        f.write(result.to_json())
    report = result.imbalance_report
    prepared.metadata.update(
        {
            "train_uri": result.train_uri,
            "validation_uri": result.validation_uri,
            "test_uri": result.test_uri,
            "classes": list(result.classes),
            "split_counts": result.split_counts,
            "imbalance": report.to_dict(),
        }
    )
    for name in result.classes:
        imbalance_metrics.log_metric(f"original_count_{name}", report.original_counts[name])
        imbalance_metrics.log_metric(f"keep_rate_{name}", report.keep_rates[name])
        imbalance_metrics.log_metric(f"kept_count_{name}", report.kept_counts[name])
        imbalance_metrics.log_metric(f"weighted_count_{name}", report.weighted_counts[name])
    imbalance_metrics.log_metric("train_rows_original", sum(report.original_counts.values()))
    imbalance_metrics.log_metric("train_rows_kept", sum(report.kept_counts.values()))
