"""VertexRegistry against a local HTTP server that receives the SDK's real REST calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fakes.vertex import FakeVertex
from vertex_imbalanced.artifacts import MODEL_COMPLETE_FILE
from vertex_imbalanced.errors import (
    LabelSanitizedWarning,
    PipelineInputError,
    RegistryError,
    VertexSchemaError,
)
from vertex_imbalanced.evaluation.metrics import ClassificationAccumulator
from vertex_imbalanced.evaluation.vertex_schema import (
    CLASSIFICATION_SCHEMA_URI,
    check_vertex_evaluation,
    to_classification_metrics,
    to_vertex_evaluation,
)
from vertex_imbalanced.registry.base import open_registry
from vertex_imbalanced.registry.labels import sanitize_label_value
from vertex_imbalanced.registry.vertex import MODEL_LABEL, RUN_LABEL, VertexRegistry

PARENT = "projects/p/locations/us-central1"
TF_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"


def metrics_for(macro_f1: float) -> dict:
    return {
        "classes": ["neg", "pos"],
        "accuracy": 0.9,
        "macro_f1": macro_f1,
        "macro_precision": 0.8,
        "macro_recall": 0.82,
        "log_loss": 0.31,
        "roc_auc": 0.95,
        "pr_auc": 0.7,
        "confusion_matrix": [[90, 5], [5, 10]],
        "per_class": {"neg": {"f1": 0.95}, "pos": {"f1": 0.67}},
    }


@pytest.fixture
def model_dir(tmp_path):
    # The Vertex registry checks that a SavedModel is there and uploads its URI; it never loads
    # the graph (tests/registry/test_local.py round-trips a real one), so skip importing TF here.
    saved = tmp_path / "model" / "saved_model"
    saved.mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "model" / MODEL_COMPLETE_FILE).write_text("{}")  # the train step's marker
    return tmp_path / "model"


@pytest.fixture
def fake():
    with FakeVertex() as server:
        yield server


@pytest.fixture
def registry(fake):
    return VertexRegistry("p", "us-central1", api_endpoint=fake.endpoint, retry_delay_s=0.01)


def register(registry, model_dir, run, *, champion, f1=0.8, **kwargs):
    return registry.register(
        "fraud model",
        str(model_dir),
        metrics_for(f1),
        {"pipeline_job_id": f"job-{run}", "git_commit": "abc123"},
        run,
        champion,
        artifact_uri=f"gs://bucket/{run}/model",
        **kwargs,
    )


def test_first_registration_uploads_and_imports_evaluation(fake, registry, model_dir):
    version = register(registry, model_dir, "run-1", champion=True, f1=0.81234)

    [upload] = fake.calls("POST", "models:upload")
    body = upload.body
    assert "parentModel" not in body
    model = body["model"]
    assert model["artifactUri"] == "gs://bucket/run-1/model/saved_model"
    assert model["containerSpec"]["imageUri"] == TF_IMAGE
    assert model["displayName"] == "fraud model"
    assert "challenger" in model["versionAliases"]
    labels = model["labels"]
    assert labels[MODEL_LABEL] == sanitize_label_value("fraud model", warn=False)
    assert labels[RUN_LABEL] == "run-1"
    assert labels["pipeline_job_id"] == "job-run-1"
    assert labels["metric_macro_f1"] == "0_8123"
    assert labels["metric_roc_auc"] == "0_9500"

    [imported] = fake.calls("POST", "evaluations:import")
    assert imported.path.endswith(
        f"{PARENT}/models/{version.resource_name.rsplit('/', 1)[1]}@1/evaluations:import"
    )
    evaluation = imported.body["modelEvaluation"]
    assert evaluation["metricsSchemaUri"] == CLASSIFICATION_SCHEMA_URI
    matrix = evaluation["metrics"]["confusionMatrix"]
    assert matrix["annotationSpecs"] == [
        {"id": "0", "displayName": "neg"},
        {"id": "1", "displayName": "pos"},
    ]
    assert matrix["rows"] == [[90, 5], [5, 10]]
    assert evaluation["metrics"]["auRoc"] == 0.95
    assert evaluation["metadata"]["run_id"] == "run-1"

    assert version.version == "1"
    assert set(version.aliases) == {"challenger", "champion", "default"}
    assert version.uri == f"{version.resource_name}@1"
    assert version.metrics["macro_f1"] == 0.81234


def test_versions_aliases_and_champion_lookup(fake, registry, model_dir):
    first = register(registry, model_dir, "run-1", champion=True, f1=0.7)
    second = register(registry, model_dir, "run-2", champion=False, f1=0.6)

    upload = fake.calls("POST", "models:upload")[-1].body
    assert upload["parentModel"] == first.resource_name
    assert upload["model"]["versionAliases"] == ["challenger"]
    assert second.version == "2" and second.aliases == ("challenger",)
    model_id = first.resource_name.rsplit("/", 1)[1]
    assert fake.version(model_id, "1")["versionAliases"] == ["default", "champion"]

    champ = registry.champion("fraud model")
    assert champ.version == "1"
    assert champ.metrics["macro_f1"] == 0.7  # the champion's evaluation, not the newest one

    third = register(registry, model_dir, "run-3", champion=True, f1=0.9)
    assert set(third.aliases) == {"challenger", "champion", "default"}
    assert fake.version(model_id, "1")["versionAliases"] == []
    assert fake.version(model_id, "2")["versionAliases"] == []
    moves = [r.body["versionAliases"] for r in fake.calls("POST", "mergeVersionAliases")]
    assert ["-champion"] in moves
    champ = registry.champion("fraud model")
    assert (champ.version, champ.metrics["macro_f1"], champ.run_id) == ("3", 0.9, "run-3")


def test_rerun_of_same_run_uploads_nothing(fake, registry, model_dir):
    first = register(registry, model_dir, "run-1", champion=True)
    again = register(registry, model_dir, "run-1", champion=True)
    assert len(fake.calls("POST", "models:upload")) == 1
    assert len(fake.calls("POST", "evaluations:import")) == 1
    assert again.version == first.version == "1"


def test_server_errors_are_retried(fake, registry, model_dir):
    fake.inject_error(503, times=2, method="POST", path_contains="models:upload")
    version = register(registry, model_dir, "run-1", champion=True)
    assert len(fake.calls("POST", "models:upload")) == 3
    assert version.version == "1"
    assert len(fake.models) == 1


def test_lost_upload_answer_is_not_uploaded_twice(fake, registry, model_dir):
    # the server creates the version but the answer is a 503: the retry must find it by label
    fake.inject_error(503, method="POST", path_contains="models:upload", after_handling=True)
    version = register(registry, model_dir, "run-1", champion=True)
    assert len(fake.calls("POST", "models:upload")) == 1
    [(model_id, versions)] = fake.models.items()
    assert list(versions) == ["1"] and version.version == "1"
    assert set(versions["1"]["versionAliases"]) == {"challenger", "champion", "default"}
    assert len(fake.calls("POST", "evaluations:import")) == 1


def test_rerun_of_an_older_run_leaves_aliases_alone(fake, registry, model_dir):
    register(registry, model_dir, "run-1", champion=True)
    register(registry, model_dir, "run-2", champion=True)
    again = register(registry, model_dir, "run-1", champion=True)
    assert again.version == "1" and again.aliases == ()
    assert registry.champion("fraud model").run_id == "run-2"
    assert len(fake.calls("POST", "models:upload")) == 2


def test_server_errors_give_up_after_bounded_retries(fake, model_dir):
    registry = VertexRegistry(
        "p", "us-central1", api_endpoint=fake.endpoint, max_attempts=3, retry_delay_s=0.01
    )
    fake.inject_error(500, times=100, method="GET", path_contains="/models")
    with pytest.raises(RegistryError, match="after 3 attempts"):
        register(registry, model_dir, "run-1", champion=True)
    assert len(fake.requests) == 3
    assert not fake.calls("POST")


def test_client_errors_fail_at_once(fake, registry, model_dir):
    fake.inject_error(403, method="POST", path_contains="models:upload", message="denied")
    with pytest.raises(RegistryError, match="refused to upload.*denied"):
        register(registry, model_dir, "run-1", champion=True)
    assert len(fake.calls("POST", "models:upload")) == 1


def test_ambiguous_models_are_an_error(fake, registry, model_dir):
    first = register(registry, model_dir, "run-1", champion=True)
    model_id = first.resource_name.rsplit("/", 1)[1]
    clone = dict(fake.models[model_id]["1"], name=f"{PARENT}/models/999")
    fake.models["999"] = {"1": clone}
    with pytest.raises(RegistryError, match="2 Vertex models carry the label"):
        register(registry, model_dir, "run-2", champion=False)
    with pytest.raises(RegistryError, match="999"):
        registry.champion("fraud model")


def test_bad_inputs_fail_before_any_call(fake, registry, model_dir, tmp_path):
    cases = {
        "x" * 129: (model_dir, "at most 128"),
        "bad\nname": (model_dir, "control characters"),
        "fraud model": (tmp_path / "missing", "does not exist"),
    }
    (tmp_path / "empty").mkdir()
    for name, (path, message) in cases.items():
        with pytest.raises(PipelineInputError, match=message):
            registry.register(
                name, str(path), metrics_for(0.8), {}, "r", True, artifact_uri="gs://b/m"
            )
    with pytest.raises(PipelineInputError, match="no SavedModel"):
        registry.register(
            "m", str(tmp_path / "empty"), metrics_for(0.8), {}, "r", True, artifact_uri="gs://b/m"
        )
    with pytest.raises(PipelineInputError, match="not on Cloud Storage"):
        registry.register("m", str(model_dir), metrics_for(0.8), {}, "r", True)
    bad = metrics_for(0.8) | {"confusion_matrix": [[1, 2, 3], [4, 5, 6]]}
    with pytest.raises(VertexSchemaError, match="must be 2x2"):
        registry.register("m", str(model_dir), bad, {}, "r", True, artifact_uri="gs://b/m")
    assert fake.requests == []


def test_labels_are_sanitised_and_accepted(fake, registry, model_dir):
    with pytest.warns(LabelSanitizedWarning) as caught:
        registry.register(
            "fraud model",
            str(model_dir),
            metrics_for(0.8),
            {"Source Table": "bq://My-Project.ds.Events", "git_commit": "A" * 70},
            "Run 1/Retry",
            True,
            artifact_uri="gs://bucket/m",
        )
    text = " ".join(str(w.message) for w in caught)
    assert "Source Table" in text and "bq://My-Project.ds.Events" in text and "Run 1/Retry" in text
    labels = fake.calls("POST", "models:upload")[0].body["model"]["labels"]
    assert labels["source_table"].startswith("bq___my-project_ds_events-")
    assert len(labels["git_commit"]) == 63
    assert labels[RUN_LABEL] == sanitize_label_value("Run 1/Retry", warn=False)
    # the fake rejects invalid labels with 400, so acceptance means they are valid
    assert len(fake.models) == 1


def test_sliced_evaluation_json_is_imported_as_given(fake, registry, model_dir):
    classification = {
        "auPrc": 0.5,
        "confusionMatrix": {
            "annotationSpecs": [
                {"id": "0", "displayName": "neg"},
                {"id": "1", "displayName": "pos"},
            ],
            "rows": [[3, 1], [0, 2]],
        },
    }
    sliced = {
        "slicedMetrics": [
            {"singleOutputSlicingSpec": {}, "metrics": {"classification": classification}}
        ]
    }
    # the evaluate step's file: ModelEvaluation fields plus slicedMetrics
    doc = {"metricsSchemaUri": CLASSIFICATION_SCHEMA_URI, "metrics": classification} | sliced
    for run, evaluation in (("run-1", sliced), ("run-2", doc), ("run-3", classification)):
        register(registry, model_dir, run, champion=True, evaluation=evaluation)
    for call in fake.calls("POST", "evaluations:import"):
        assert call.body["modelEvaluation"]["metrics"] == classification


def test_no_champion(fake, registry, model_dir):
    assert registry.champion("fraud model") is None
    register(registry, model_dir, "run-1", champion=False)
    assert registry.champion("fraud model") is None


def test_open_registry_uri(fake):
    reg = open_registry(f"vertex://p/us-central1?api_endpoint={fake.endpoint}")
    assert isinstance(reg, VertexRegistry)
    assert reg.champion("nothing") is None
    assert fake.calls("GET", f"{PARENT}/models")
    for bad, message in (
        ("vertex://p", "use vertex://PROJECT/LOCATION"),
        ("vertex:///us-central1", "use vertex://PROJECT/LOCATION"),
        ("gs://x", "unknown registry URI"),
        ("vertex://p/l?foo=1", r"unknown option\(s\) \['foo'\]"),
    ):
        with pytest.raises(PipelineInputError, match=message):
            open_registry(bad)


def test_upload_waits_for_the_long_running_operation(model_dir):
    with FakeVertex(operation_polls=1) as fake:
        registry = VertexRegistry("p", "us-central1", api_endpoint=fake.endpoint)
        version = register(registry, model_dir, "run-1", champion=True)
        polls = fake.calls("GET", "/operations/")
    assert len(polls) == 2  # first poll: still running; second: done with UploadModelResponse
    [operation] = fake.operations.values()
    assert operation["done"] and operation["response"]["modelVersionId"] == version.version


def _real_metrics() -> dict:
    """metrics.json of a real evaluation (with threshold_counts), as the evaluate step writes it."""
    rng = np.random.default_rng(7)
    y = (rng.random(500) < 0.15).astype(int)
    p1 = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, 500), 0.001, 0.999)
    acc = ClassificationAccumulator(("neg", "pos"))
    acc.update(y, np.c_[1 - p1, p1])
    return json.loads(json.dumps(acc.result()))


@pytest.mark.parametrize("from_file", [False, True])
def test_evaluation_round_trips_through_the_service(fake, registry, model_dir, from_file):
    metrics = _real_metrics()
    document = to_vertex_evaluation(metrics)
    check_vertex_evaluation(document)
    registry.register(
        "fraud model",
        str(model_dir),
        metrics,
        {},
        "run-1",
        True,
        artifact_uri="gs://bucket/m",
        evaluation=json.loads(json.dumps(document)) if from_file else None,
    )
    # the SDK sent it through protobuf; the (strict) fake accepted and stored it
    [stored] = next(iter(fake.evaluations.values()))
    assert stored["metricsSchemaUri"] == CLASSIFICATION_SCHEMA_URI
    assert stored["metrics"] == to_classification_metrics(metrics)  # counts come back as 3.0
    assert len(stored["metrics"]["confidenceMetrics"]) == 25
    champion = registry.champion("fraud model")
    assert champion.metrics["macro_f1"] == metrics["macro_f1"]
    assert "threshold_counts" not in champion.metrics  # bulky keys stay out of the metadata

    # an evaluation imported by someone else carries no copy of our metrics: derive them
    stored["metadata"] = {}
    derived = registry.champion("fraud model").metrics
    for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1"):
        assert derived[key] == pytest.approx(metrics[key])
    assert derived["confusion_matrix"] == metrics["confusion_matrix"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"confidenceMetrics": [{"truePositiveCount": 2.5}]}, "must be an integer"),
        ({"confidenceMetrics": [{"tp": 2}]}, "unknown confidenceMetrics fields"),
        (
            {"confusionMatrix": {"annotationSpecs": [{"name": "a"}], "rows": [[1]]}},
            "{id, displayName}",
        ),
        ({"confusionMatrix": {"annotationSpecs": [{"id": "0"}], "rows": [{"row": [1]}]}}, "square"),
        ({"accuracy": 0.9}, "unknown fields"),
    ],
)
def test_fake_refuses_what_the_service_refuses(fake, registry, model_dir, change, problem):
    version = register(registry, model_dir, "run-1", champion=False)
    path = f"/v1/{version.uri}/evaluations:import"
    evaluation = {"metricsSchemaUri": CLASSIFICATION_SCHEMA_URI, "metrics": change}
    status, body = fake.dispatch("POST", path, {}, {"modelEvaluation": evaluation})
    assert status == 400
    assert "Invalid Metrics Format" in body["error"]["message"]
    assert problem in body["error"]["message"]


def test_evaluation_without_annotation_ids_is_refused_before_any_call(fake, registry, model_dir):
    document = to_vertex_evaluation(_real_metrics())
    for spec in document["metrics"]["confusionMatrix"]["annotationSpecs"]:
        del spec["id"]
    with pytest.raises(VertexSchemaError, match=r"annotationSpecs\[0\]\.id must be a non-empty"):
        register(registry, model_dir, "run-1", champion=True, evaluation=document)
    assert fake.requests == []


def test_get_by_version_or_alias_and_the_model_directory(fake, registry, model_dir):
    register(registry, model_dir, "run-1", champion=True, f1=0.7)
    register(registry, model_dir, "run-2", champion=False, f1=0.6)
    first, second = registry.get("fraud model", "1"), registry.get("fraud model", "challenger")
    assert (first.version, first.metrics["macro_f1"], first.run_id) == ("1", 0.7, "run-1")
    assert (second.version, second.metrics["macro_f1"]) == ("2", 0.6)
    assert registry.get("fraud model", "champion") == registry.champion("fraud model") == first
    # the train step's model directory: the uploaded SavedModel's parent
    assert first.artifact_uri == "gs://bucket/run-1/model"
    assert second.artifact_uri == "gs://bucket/run-2/model"
    assert registry.get("fraud model", "7") is None
    assert registry.get("other model", "1") is None
    with pytest.raises(PipelineInputError, match="version or alias must be a non-empty string"):
        registry.get("fraud model", " ")
