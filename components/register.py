"""Register the trained model in the model registry (local directory or Vertex AI)."""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

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
) -> NamedTuple("RegisterOutputs", [("version", str), ("registered_json", str)]):
    """Register ``model`` as a new version; idempotent per ``run_id``.

    Args:
        model: the train step's model artifact (``saved_model/`` inside).
        metrics: the evaluate step's metrics JSON (a ``vertex_evaluation.json`` beside it, or
            inside it when it is a directory, is imported into Vertex as given).
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_display_name: the registered model's name.
        run_id: the pipeline run id (a rerun of the same run registers nothing new).
        make_champion: whether the new version takes the ``champion`` alias (the gate passed).
        vertex_model: output ``google.VertexModel`` (``resourceName`` = versioned model name;
            for the local registry the version directory).
        labels_json: JSON object of extra labels (pipeline job id, source table, git commit).
        serving_image: Vertex serving container; '' = Google's prebuilt TF CPU image.
        source_uri: the training table, recorded as label ``source_table``.
        git_commit: commit the pipeline was compiled from, recorded as label ``git_commit``.

    Returns:
        ``version`` and ``registered_json`` (the RegisteredVersion as JSON).
    """
    import json
    from collections import namedtuple

    from vertex_imbalanced.errors import PipelineInputError
    from vertex_imbalanced.registry.base import open_registry, read_metrics_artifact

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

    if registry_uri.startswith("vertex://"):
        options = {"serving_image": serving_image} if serving_image else {}
        registry = open_registry(registry_uri, **options)
        version = registry.register(
            model_display_name,
            model.path,
            metric_values,
            labels,
            run_id,
            make_champion,
            artifact_uri=model.uri,
            evaluation=evaluation,
        )
        location = version.resource_name.split("/")[3]
        vertex_model.uri = f"https://{location}-aiplatform.googleapis.com/v1/{version.uri}"
        vertex_model.metadata["resourceName"] = version.uri
    else:
        registry = open_registry(registry_uri)
        version = registry.register(
            model_display_name, model.path, metric_values, labels, run_id, make_champion
        )
        vertex_model.uri = version.uri
        vertex_model.metadata["resourceName"] = ""
    vertex_model.metadata["version"] = version.version
    vertex_model.metadata["aliases"] = list(version.aliases)
    print(f"registered {version.name} version {version.version} aliases {list(version.aliases)}")
    outputs = namedtuple("RegisterOutputs", ["version", "registered_json"])
    return outputs(version.version, version.to_json())
