"""The lookup_champion component returns the champion's metrics, never the challenger's."""

import json

from components.lookup_champion import lookup_champion
from fakes.vertex import FakeVertex
from vertex_imbalanced.registry.local import LocalRegistry
from vertex_imbalanced.registry.vertex import VertexRegistry


def metrics_for(macro_f1):
    return {"classes": ["neg", "pos"], "macro_f1": macro_f1, "confusion_matrix": [[5, 1], [1, 3]]}


def test_local_champion_under_kfp_local(local_kfp, tmp_path, model_dir):
    uri = f"local://{tmp_path / 'registry'}"
    empty = lookup_champion(registry_uri=uri, model_name="fraud-model")
    assert (empty.outputs["metrics_json"], empty.outputs["version"]) == ("", "")

    registry = LocalRegistry(tmp_path / "registry")
    registry.register("fraud-model", str(model_dir), metrics_for(0.7), {}, "run-a", True)
    registry.register("fraud-model", str(model_dir), metrics_for(0.9), {}, "run-b", False)

    task = lookup_champion(registry_uri=uri, model_name="fraud-model")
    assert task.outputs["version"] == "1"
    assert json.loads(task.outputs["metrics_json"]) == metrics_for(0.7)


def test_vertex_champion_reads_the_champions_evaluation(model_dir):
    with FakeVertex() as fake:
        uri = f"vertex://p/us-central1?api_endpoint={fake.endpoint}"
        assert lookup_champion.python_func(registry_uri=uri, model_name="fraud model") == ("", "")

        registry = VertexRegistry("p", "us-central1", api_endpoint=fake.endpoint)
        common = dict(model_name="fraud model", model_dir=str(model_dir), labels={})
        first = registry.register(
            **common,
            metrics=metrics_for(0.7),
            run_id="run-a",
            make_champion=True,
            artifact_uri="gs://b/a",
        )
        registry.register(
            **common,
            metrics=metrics_for(0.9),
            run_id="run-b",
            make_champion=False,
            artifact_uri="gs://b/b",
        )
        before = len(fake.requests)
        metrics_json, version = lookup_champion.python_func(
            registry_uri=uri, model_name="fraud model"
        )
        lookups = [r.path for r in fake.requests[before:]]

    assert version == "1"
    assert json.loads(metrics_json) == metrics_for(0.7)
    model_id = first.resource_name.rsplit("/", 1)[1]
    assert any(p.endswith(f"models/{model_id}@champion") for p in lookups)
    assert any(p.endswith(f"models/{model_id}@1/evaluations") for p in lookups)
    assert not any("@2" in p for p in lookups)
