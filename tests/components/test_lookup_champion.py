"""The lookup_champion component returns the champion's metrics, never the challenger's."""

import json

from kfp import dsl
from kfp.dsl import Dataset

from components.lookup_champion import lookup_champion
from fakes.vertex import FakeVertex
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.registry.champion import Problem
from vertex_imbalanced.registry.local import LocalRegistry
from vertex_imbalanced.registry.vertex import VertexRegistry
from vertex_imbalanced.warehouse.prepare import PreparedData


def metrics_for(macro_f1):
    return {"classes": ["neg", "pos"], "macro_f1": macro_f1, "confusion_matrix": [[5, 1], [1, 3]]}


def test_local_champion_under_kfp_local(local_kfp, tmp_path, model_dir):
    uri = f"local://{tmp_path / 'registry'}"
    empty = lookup_champion(registry_uri=uri, model_name="fraud-model")
    assert (empty.outputs["metrics_json"], empty.outputs["version"]) == ("", "")
    assert empty.outputs["note"] == "no champion of 'fraud-model' yet"

    registry = LocalRegistry(tmp_path / "registry")
    registry.register("fraud-model", str(model_dir), metrics_for(0.7), {}, "run-a", True)
    registry.register("fraud-model", str(model_dir), metrics_for(0.9), {}, "run-b", False)

    task = lookup_champion(registry_uri=uri, model_name="fraud-model")
    assert task.outputs["version"] == "1"
    assert json.loads(task.outputs["metrics_json"]) == metrics_for(0.7)


def test_vertex_champion_reads_the_champions_evaluation(model_dir):
    with FakeVertex() as fake:
        uri = f"vertex://p/us-central1?api_endpoint={fake.endpoint}"
        none = lookup_champion.python_func(registry_uri=uri, model_name="fraud model")
        assert (none.metrics_json, none.version, none.model_name) == ("", "", "fraud model")

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
        metrics_json, version, _, _ = lookup_champion.python_func(
            registry_uri=uri, model_name="fraud model"
        )
        lookups = [r.path for r in fake.requests[before:]]

    assert version == "1"
    assert json.loads(metrics_json) == metrics_for(0.7)
    model_id = first.resource_name.rsplit("/", 1)[1]
    assert any(p.endswith(f"models/{model_id}@champion") for p in lookups)
    assert any(p.endswith(f"models/{model_id}@1/evaluations") for p in lookups)
    assert not any("@2" in p for p in lookups)


def _prepared(tmp_path, label, classes):
    spec = FeatureSpec(label=label, numeric=("x",), key="id")
    path = tmp_path / "prepared.json"
    split = f"duckdb://{tmp_path}/w.db?table=t"
    prepared = PreparedData(split, split, split, tuple(classes), spec, {}, {})
    path.write_text(prepared.to_json())
    return path


def test_champion_of_another_problem_is_ignored_and_names_do_not_collide(
    local_kfp, tmp_path, model_dir
):
    """Issue 11 case 13: the demo's champion does not gate the first run on a new table."""
    registry = LocalRegistry(tmp_path / "registry")
    demo = Problem("label", ("0", "1", "2"))
    demo_metrics = dict(metrics_for(0.9445), classes=list(demo.classes))
    registry.register("shared", str(model_dir), demo_metrics, demo.labels(), "demo", True)
    prepared = _prepared(tmp_path, "churn", ["stayed", "churned"])
    uri = f"local://{tmp_path / 'registry'}"

    @dsl.pipeline
    def look_up(model_name: str) -> str:
        splits = dsl.importer(artifact_uri=str(prepared), artifact_class=Dataset, reimport=False)
        task = lookup_champion(
            registry_uri=uri,
            model_name=model_name,
            prepared_data=splits.output,
            source_uri="bq://p.crm.customers",
        )
        return task.outputs["note"]

    shared = look_up(model_name="shared")
    assert shared.output == (
        "champion version 1 of 'shared' solves another problem (label 'label', classes "
        "['0', '1', '2']; this run: label 'churn', classes ['stayed', 'churned']): ignored"
    )
    derived = lookup_champion.python_func(
        registry_uri=uri,
        model_name="",
        prepared_data=Dataset(uri=str(prepared)),
        source_uri="bq://p.crm.customers",
    )
    assert derived.model_name == "crm.customers-churn"
    assert (derived.metrics_json, derived.version) == ("", "")
    # an ignored champion is still reported as seen, for the register step's compare-and-set
    ignored = lookup_champion.python_func(
        registry_uri=uri, model_name="shared", prepared_data=Dataset(uri=str(prepared))
    )
    assert (ignored.metrics_json, ignored.version) == ("", "1")
