"""Register the trained model in the model registry (local directory or Vertex AI)."""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    metrics: Input[Artifact],
    registry_uri: str,
    model_display_name: str,
    run_id: str,
    make_champion: bool,
    vertex_model: Output[VertexModel],
    labels_json: str = "{}",
    serving_image: str = "",
    source_uri: str = "",
    git_commit: str = "",
    prepared_data: Input[Dataset] = None,
    champion_version: str = "unchecked",
    gate_metric: str = "macro_f1",
    min_metric: float = 0.0,
    tolerance: float = 0.0,
    kms_key: str = "",
) -> NamedTuple(
    "RegisterOutputs", [("version", str), ("registered_json", str), ("promotion", str)]
):
    """Register ``model`` as a new version; idempotent per ``run_id``.

    Promotion is a compare-and-set: the champion is read again when the alias moves; if it is
    no longer ``champion_version`` (another run promoted a model since the gate), that model is
    re-scored on this run's test split and the gate's rule decides again. A model that no
    longer wins is registered without ``champion`` (``promotion`` says why).

    Args:
        model: the train step's model artifact (``saved_model/`` inside).
        metrics: the evaluate step's metrics JSON (a ``vertex_evaluation.json`` beside it, or
            inside it when it is a directory, is imported into Vertex as given).
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_display_name: the registered model's name ('' = derived from ``source_uri`` and
            the label, as the lookup step does).
        run_id: the pipeline run id (a rerun of the same run registers nothing new).
        make_champion: whether the new version takes the ``champion`` alias (the gate passed).
        vertex_model: output ``google.VertexModel`` (``resourceName`` = versioned model name;
            for the local registry the version directory).
        labels_json: JSON object of extra labels (pipeline job id, source table, git commit).
        serving_image: Vertex serving container; '' = Google's prebuilt TF CPU image.
        source_uri: the training table, recorded as label ``source_table``.
        git_commit: commit the pipeline was compiled from, recorded as label ``git_commit``.
        prepared_data: this run's PreparedData: the problem (label, classes) recorded with the
            version, and the test split a newer champion is re-scored on.
        champion_version: the version the lookup step saw holding ``champion`` ('' none);
            ``unchecked`` (the default, for pipelines that do not pass it): promote as the gate
            said, without the compare-and-set.
        gate_metric: the gate's metric.
        min_metric: the gate's minimum.
        tolerance: the gate's tolerance.
        kms_key: CMEK key for the uploaded Vertex model ('' = Google-managed).

    Returns:
        ``version``, ``registered_json`` (the RegisteredVersion as JSON) and ``promotion``
        (what was decided about ``champion``).
    """
    import json
    from collections import namedtuple

    from vertex_imbalanced.errors import PipelineInputError
    from vertex_imbalanced.registry.base import open_registry, read_metrics_artifact
    from vertex_imbalanced.registry.champion import (
        champion_check,
        resolve_model_name,
        run_problem,
    )
    from vertex_imbalanced.warehouse.prepare import PreparedData

    try:
        labels = json.loads(labels_json or "{}")
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"labels_json is not JSON: {err}") from err
    if not isinstance(labels, dict):
        raise PipelineInputError(f"labels_json must be a JSON object, got {labels_json!r}")
    labels = {str(k): str(v) for k, v in labels.items()}
    provenance = {"pipeline_job": run_id, "source_table": source_uri, "git_commit": git_commit}
    for key, value in provenance.items():
        if value:
            labels.setdefault(key, value)
    metric_values, evaluation = read_metrics_artifact(metrics.path)
    prepared = PreparedData.read(prepared_data.path) if prepared_data is not None else None
    problem = run_problem(prepared, model.path)
    if problem is not None:
        labels.update(problem.labels())
    name = resolve_model_name(model_display_name, source_uri, problem.label if problem else "")
    promotion = None
    if champion_version != "unchecked":
        promotion = champion_check(
            metric_values,
            problem=problem,
            prepared=prepared,
            compared_version=champion_version,
            metric=gate_metric,
            min_value=min_metric,
            tolerance=tolerance,
        )
    elif make_champion:
        print("champion_version not given: promoting without the compare-and-set check")

    if registry_uri.startswith("vertex://"):
        options = {"serving_image": serving_image} if serving_image else {}
        registry = open_registry(registry_uri, kms_key=kms_key or None, **options)
        version = registry.register(
            name,
            model.path,
            metric_values,
            labels,
            run_id,
            make_champion,
            artifact_uri=model.uri,
            evaluation=evaluation,
            promotion=promotion,
        )
        location = version.resource_name.split("/")[3]
        vertex_model.uri = f"https://{location}-aiplatform.googleapis.com/v1/{version.uri}"
        vertex_model.metadata["resourceName"] = version.uri
    else:
        registry = open_registry(registry_uri)
        version = registry.register(
            name, model.path, metric_values, labels, run_id, make_champion, promotion=promotion
        )
        vertex_model.uri = version.uri
        vertex_model.metadata["resourceName"] = ""
    vertex_model.metadata["version"] = version.version
    vertex_model.metadata["aliases"] = list(version.aliases)
    print(f"registered {version.name} version {version.version} aliases {list(version.aliases)}")
    if version.promotion:
        print(f"champion: {version.promotion}")
    outputs = namedtuple("RegisterOutputs", ["version", "registered_json", "promotion"])
    return outputs(version.version, version.to_json(), version.promotion)
