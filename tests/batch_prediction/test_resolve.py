"""resolve_model against a real local registry directory."""

import pytest
from conftest_models import build_tiny_model

from vertex_imbalanced.batch_prediction.resolve import (
    ResolvedModel,
    read_model_metadata,
    resolve_model,
)
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.local import LocalRegistry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("reg")
    reg = LocalRegistry(base / "registry")
    for i, classes in enumerate((("a", "b"), ("a", "b", "c"))):
        model_dir = build_tiny_model(base / f"m{i}", classes)
        reg.register("clf", str(model_dir), {"macro_f1": 0.5 + i}, {}, f"run-{i}", i == 0)
    return reg


def uri(reg):
    return f"local://{reg.root}"


def test_champion_is_the_default_and_a_version_can_be_named(registry):
    champion = resolve_model(uri(registry), "clf")
    assert (champion.name, champion.version, champion.requested) == ("clf", "1", "alias 'champion'")
    assert read_model_metadata(champion.model_dir)["classes"] == ["a", "b"]
    second = resolve_model(uri(registry), "clf", version="2")
    assert second.version == "2" and second.requested == "version 2"
    assert read_model_metadata(second.model_dir)["classes"] == ["a", "b", "c"]
    challenger = resolve_model(uri(registry), "clf", alias="challenger")
    assert challenger.version == "2"
    assert ResolvedModel.from_dict(second.to_dict()) == second


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alias": "prod"}, r"model 'clf' has no alias 'prod' in registry local://.*aliases: \["),
        ({"version": "9"}, r"model 'clf' has no version 9 .*versions: 1, 2"),
        ({"version": "latest"}, "model version must be a number like '3', got 'latest'"),
        ({"alias": ""}, "give a model alias"),
    ],
)
def test_unknown_alias_or_version_is_one_clear_error(registry, kwargs, message):
    with pytest.raises(PipelineInputError, match=message):
        resolve_model(uri(registry), "clf", **kwargs)


def test_unknown_model_and_registry(registry, tmp_path):
    # the error lists the models the registry holds (e.g. the one `make run` registered)
    with pytest.raises(
        PipelineInputError, match="no versions of 'other' are registered there; models there: clf"
    ):
        resolve_model(uri(registry), "other")
    empty = tmp_path / "empty-registry"
    with pytest.raises(PipelineInputError, match="no model is registered there"):
        resolve_model(f"local://{empty}", "clf")
    with pytest.raises(PipelineInputError, match="unknown registry URI"):
        resolve_model(str(tmp_path), "clf")
