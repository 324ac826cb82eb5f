"""KFP component: evaluate the trained model on the untouched test split."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    prepared_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    batch_size: int = 4096,
    baselines: bool = True,
    baseline_max_rows: int = 50_000,
    model_name: str = "",
    run_name: str = "",
    dataset: str = "",
):
    """Evaluate ``model`` on the test split at its operating point, with baselines beside it.

    Args:
        model: the train step's model directory.
        prepared_data: PreparedData JSON (reads ``test_uri``, ``validation_uri``,
            ``train_uri``, ``classes``, ``spec``, ``split_counts``).
        metrics: scalar metrics (``test_macro_f1``, ``test_argmax_macro_f1``,
            ``test_baseline_logistic_regression_macro_f1``, ...) for the Vertex run comparison.
        classification_metrics: confusion matrix at the operating point with class names;
            ROC curve when binary.
        report: the self-contained HTML report.
        evaluation: directory with ``metrics.json``, ``vertex_evaluation.json``, ``report.html``.
        batch_size: rows per prediction batch.
        baselines: also score the class prior and a logistic regression on the model's
            preprocessed features (fitted on the train split).
        baseline_max_rows: most training rows the logistic regression is fitted on, and most
            validation rows its decision rule is chosen on (uniform samples above it).
        model_name: the model's display name, for the report title.
        run_name: the pipeline run, for the report title.
        dataset: the source table, for the report title (default: the test split).
    """
    import shutil

    from vertex_imbalanced.evaluation.evaluate import (
        evaluate_model,
        roc_points,
        scalar_metrics,
    )
    from vertex_imbalanced.warehouse.prepare import PreparedData

    splits = PreparedData.read(prepared_data.path)
    result = evaluate_model(
        model_dir=model.path,
        test_source=splits.test_uri,
        validation_source=splits.validation_uri,
        spec=splits.spec,
        classes=splits.classes,
        output_dir=evaluation.path,
        batch_size=batch_size,
        train_source=splits.train_uri if baselines else None,
        baselines=baselines,
        baseline_max_rows=baseline_max_rows,
        context={
            "dataset": dataset,
            "model_name": model_name,
            "run": run_name,
            "split_counts": splits.split_counts,
            "skipped_labels": getattr(splits, "skipped_labels", None),
        },
    )
    m = result.metrics
    for name, value in scalar_metrics(m).items():
        metrics.log_metric(name, value)
    classification_metrics.log_confusion_matrix(list(m["classes"]), m["confusion_matrix"])
    if len(m["classes"]) == 2:
        fpr, tpr, thresholds = roc_points(m)
        classification_metrics.log_roc_curve(fpr, tpr, thresholds)
    shutil.copyfile(result.report_path, report.path)
    evaluation.metadata.update(
        {
            "metrics_file": result.metrics_path.name,
            "vertex_evaluation_file": result.vertex_evaluation_path.name,
            "report_file": result.report_path.name,
            "macro_f1": m["macro_f1"],
            "operating_point": m["operating_point"]["kind"],
        }
    )
