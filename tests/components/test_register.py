"""The register component: kfp.local into the local registry, and Vertex against a fake server."""

import json

import pytest
from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp import dsl
from kfp.dsl import Artifact, Model

from components.register import register
from fakes.vertex import FakeVertex
from vertex_imbalanced.artifacts import METRICS_FILE, VERTEX_EVALUATION_FILE
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.champion import Problem
from vertex_imbalanced.registry.local import LocalRegistry

METRICS = {"classes": ["neg", "pos"], "macro_f1": 0.75, "confusion_matrix": [[8, 1], [1, 2]]}


@pytest.fixture
def metrics_dir(tmp_path):
    root = tmp_path / "metrics"
    root.mkdir()
    (root / METRICS_FILE).write_text(json.dumps(METRICS))
    return root


def test_registers_into_local_registry_under_kfp_local(local_kfp, tmp_path, model_dir, metrics_dir):
    registry_dir = tmp_path / "registry"

    @dsl.pipeline
    def registration(run_id: str, make_champion: bool) -> str:
        model = dsl.importer(artifact_uri=str(model_dir), artifact_class=Model, reimport=False)
        metrics = dsl.importer(
            artifact_uri=str(metrics_dir), artifact_class=Artifact, reimport=False
        )
        task = register(
            model=model.output,
            metrics=metrics.output,
            registry_uri=f"local://{registry_dir}",
            model_display_name="fraud-model",
            run_id=run_id,
            make_champion=make_champion,
            labels_json='{"source_table": "demo.events"}',
            source_uri="duckdb:///ignored-when-labels-name-it",
            git_commit="abc123",
        )
        return task.outputs["version"]

    assert registration(run_id="run-a", make_champion=True).output == "1"
    assert registration(run_id="run-a", make_champion=True).output == "1"  # rerun: no new version
    assert registration(run_id="run-b", make_champion=False).output == "2"

    registry = LocalRegistry(registry_dir)
    assert [v.run_id for v in registry.versions("fraud-model")] == ["run-a", "run-b"]
    champion = registry.champion("fraud-model")
    assert (champion.version, champion.metrics, champion.labels) == (
        "1",
        METRICS,
        # provenance labels added by the component; the caller's own labels win
        {"source_table": "demo.events", "pipeline_job": "run-a", "git_commit": "abc123"},
    )


def test_registers_into_vertex(tmp_path, model_dir, metrics_dir):
    vertex_eval = {"slicedMetrics": [{"metrics": {"classification": {"auPrc": 0.4}}}]}
    (metrics_dir / VERTEX_EVALUATION_FILE).write_text(json.dumps(vertex_eval))
    model = Model(uri="gs://bucket/pipeline/train/model")
    model.custom_path = str(model_dir)  # what /gcs/bucket/... would show on Vertex
    metrics = Artifact(uri=str(metrics_dir))
    output = VertexModel(name="vertex_model", uri="", metadata={})

    with FakeVertex() as fake:
        result = register.python_func(
            model=model,
            metrics=metrics,
            registry_uri=f"vertex://p/us-central1?api_endpoint={fake.endpoint}",
            model_display_name="fraud-model",
            run_id="run-a",
            make_champion=True,
            vertex_model=output,
            labels_json='{"pipeline_job_id": "job-1"}',
            serving_image="us-docker.pkg.dev/p/serving/tf:1",
        )
        [upload] = fake.calls("POST", "models:upload")
        [imported] = fake.calls("POST", "evaluations:import")

    assert result.version == "1"
    resource = json.loads(result.registered_json)["uri"]
    assert resource.startswith("projects/p/locations/us-central1/models/") and resource.endswith(
        "@1"
    )
    assert output.metadata["resourceName"] == resource
    assert output.uri == f"https://us-central1-aiplatform.googleapis.com/v1/{resource}"
    assert upload.body["model"]["artifactUri"] == "gs://bucket/pipeline/train/model/saved_model"
    assert upload.body["model"]["containerSpec"]["imageUri"] == "us-docker.pkg.dev/p/serving/tf:1"
    assert upload.body["model"]["labels"]["pipeline_job_id"] == "job-1"
    assert imported.body["modelEvaluation"]["metrics"] == {"auPrc": 0.4}
    assert imported.body["modelEvaluation"]["metadata"]["metrics"]["macro_f1"] == 0.75


def test_bad_labels_json_is_refused(tmp_path, model_dir, metrics_dir):
    for bad, message in (("{not json", "not JSON"), ('["a"]', "JSON object")):
        with pytest.raises(PipelineInputError, match=message):
            register.python_func(
                model=Model(uri=str(model_dir)),
                metrics=Artifact(uri=str(metrics_dir)),
                registry_uri=f"local://{tmp_path / 'registry'}",
                model_display_name="fraud-model",
                run_id="run-a",
                make_champion=True,
                vertex_model=VertexModel(name="vertex_model", uri="", metadata={}),
                labels_json=bad,
            )
    assert not (tmp_path / "registry").exists()


def test_a_champion_promoted_since_the_gate_is_not_overwritten(tmp_path, model_dir, metrics_dir):
    """Issue 13 item 14: the gate saw no champion; one with 0.863 arrived before register."""
    (model_dir / "model_metadata.json").write_text(
        json.dumps({"classes": ["neg", "pos"], "feature_spec": {"label": "fraud"}})
    )
    problem = Problem("fraud", ("neg", "pos"))
    registry = LocalRegistry(tmp_path / "registry")
    better = dict(METRICS, macro_f1=0.863)
    registry.register("fraud-model", str(model_dir), better, problem.labels(), "other", True)

    result = register.python_func(
        model=Model(uri=str(model_dir)),
        metrics=Artifact(uri=str(metrics_dir)),
        registry_uri=f"local://{tmp_path / 'registry'}",
        model_display_name="fraud-model",
        run_id="late",
        make_champion=True,
        vertex_model=VertexModel(name="vertex_model", uri="", metadata={}),
        champion_version="",  # what this run's lookup saw
        min_metric=0.5,
    )
    assert result.version == "2"
    assert registry.champion("fraud-model").run_id == "other"
    assert "version 1 became champion after the gate saw no champion" in result.promotion
    assert "stays champion" in result.promotion
    late = registry.get("fraud-model", "2")
    assert late.labels["problem_id"] == problem.id and not late.is_champion


def test_vertex_upload_gets_the_kms_key(tmp_path, model_dir, metrics_dir):
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    model = Model(uri="gs://bucket/pipeline/train/model")
    model.custom_path = str(model_dir)
    with FakeVertex() as fake:
        register.python_func(
            model=model,
            metrics=Artifact(uri=str(metrics_dir)),
            registry_uri=f"vertex://p/us-central1?api_endpoint={fake.endpoint}",
            model_display_name="fraud-model",
            run_id="run-a",
            make_champion=True,
            vertex_model=VertexModel(name="vertex_model", uri="", metadata={}),
            kms_key=key,
        )
        [upload] = fake.calls("POST", "models:upload")
    assert upload.body["model"]["encryptionSpec"] == {"kmsKeyName": key}
