"""Look up the champion of this run's problem and score it on this run's test split."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def lookup_champion(
    registry_uri: str,
    model_name: str,
    prepared_data: Input[Dataset] = None,
    source_uri: str = "",
) -> NamedTuple(
    "ChampionOutputs",
    [("metrics_json", str), ("version", str), ("model_name", str), ("note", str)],
):
    """Read the champion of ``model_name`` and re-score it on this run's test split.

    A champion counts only when it was registered for the same label and classes; one of
    another problem (or one that cannot read this run's columns) is named and ignored. Run it
    uncached: the registry changes between runs.

    Args:
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_name: the registered model's name; '' derives it from ``source_uri`` and the
            label (``vertex_imbalanced.registry.champion.default_model_name``).
        prepared_data: this run's PreparedData (splits, spec, classes); without it the
            champion's registered figures are returned unchecked (older pipelines).
        source_uri: the training table (for the default model name).

    Returns:
        ``metrics_json``: the champion's metrics on this run's test split ('' when no champion
        counts); ``version``: the version holding ``champion`` ('' when none), counted or
        not, for the register step's compare-and-set; ``model_name``: the resolved name;
        ``note``: what was found, in one sentence.
    """
    from collections import namedtuple

    from vertex_imbalanced.registry.base import open_registry
    from vertex_imbalanced.registry.champion import lookup_for_run, resolve_model_name
    from vertex_imbalanced.warehouse.prepare import PreparedData

    prepared = PreparedData.read(prepared_data.path) if prepared_data is not None else None
    label = prepared.spec.label if prepared is not None else ""
    name = resolve_model_name(model_name, source_uri, label)
    found = lookup_for_run(open_registry(registry_uri), name, prepared)
    print(found.note)
    outputs = namedtuple("ChampionOutputs", ["metrics_json", "version", "model_name", "note"])
    return outputs(found.metrics_json(), found.seen, name, found.note)
