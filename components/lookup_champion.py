"""Look up the current champion's metrics for the gate (never the challenger's)."""

from typing import NamedTuple

from kfp import dsl

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def lookup_champion(registry_uri: str, model_name: str) -> NamedTuple(
    "ChampionOutputs", [("metrics_json", str), ("version", str)]
):
    """Read the champion version of ``model_name`` and the metrics registered with it.

    Run it uncached: the registry changes between runs.

    Args:
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_name: the registered model's name (Vertex: display name).

    Returns:
        ``metrics_json`` (the champion's metrics dict as JSON, '' when there is no champion)
        and ``version`` ('' when there is none).
    """
    import json
    from collections import namedtuple

    from vertex_imbalanced.registry.base import open_registry

    outputs = namedtuple("ChampionOutputs", ["metrics_json", "version"])
    champion = open_registry(registry_uri).champion(model_name)
    if champion is None:
        print(f"no champion for {model_name!r} in {registry_uri}")
        return outputs("", "")
    print(f"champion of {model_name!r}: version {champion.version} ({champion.uri})")
    return outputs(json.dumps(champion.metrics, sort_keys=True), champion.version)
