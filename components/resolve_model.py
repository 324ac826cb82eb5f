"""KFP component: pick the registered model version a batch prediction run scores with."""

from typing import NamedTuple

from kfp import dsl

from components.image import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def resolve_model(
    registry_uri: str,
    model_name: str,
    alias: str = "champion",
    version: str = "",
) -> NamedTuple("ResolvedOutputs", [("resolved_json", str), ("version", str), ("model_dir", str)]):
    """Resolve ``alias`` (or an explicit ``version``) of ``model_name`` in the registry.

    Run it uncached: an alias moves between runs.

    Args:
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_name: registered model name (Vertex: display name).
        alias: alias to resolve (default ``champion``); ignored when ``version`` is given.
        version: explicit version id ('' = use ``alias``).

    Returns:
        ``resolved_json`` (the ResolvedModel as JSON: name, version, model_dir, ...),
        ``version`` and ``model_dir`` (the registered model directory, for ``dsl.importer``).
    """
    import json
    from collections import namedtuple

    from vertex_imbalanced.batch_prediction.resolve import resolve_model as resolve

    found = resolve(registry_uri, model_name, alias=alias, version=version)
    print(
        f"scoring with {found.name} version {found.version} ({found.requested}): {found.model_dir}"
    )
    outputs = namedtuple("ResolvedOutputs", ["resolved_json", "version", "model_dir"])
    return outputs(json.dumps(found.to_dict(), sort_keys=True), found.version, found.model_dir)
