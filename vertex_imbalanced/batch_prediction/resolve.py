"""Which model to score with: a registry, a model name, and an alias or an explicit version.

The registry is named by the same URI as in the training pipeline (``local:///abs/dir`` or
``vertex://project/location``). The result points at the model directory of the train step's
artifact layout (:mod:`vertex_imbalanced.artifacts`): ``saved_model/`` and
``model_metadata.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from vertex_imbalanced.artifacts import MODEL_METADATA_FILE, SAVED_MODEL_DIR
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.base import CHAMPION_ALIAS, RegisteredVersion, open_registry

LOCAL_MODEL_DIR = "model"
"""Sub-directory of a local registry version that holds the model artifact."""


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A registered model version ready to load.

    Attributes:
        name: registered model name.
        version: registered version id (``"3"``).
        model_dir: the model directory (local path, or ``gs://`` URI on Vertex).
        registry_uri: the registry it came from.
        requested: what was asked for (``"champion"``, ``"version 3"``).
    """

    name: str
    version: str
    model_dir: str
    registry_uri: str
    requested: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: str(data[f.name]) for f in dataclasses.fields(cls)})


def _model_dir(found: RegisteredVersion) -> str:
    """Model directory of a registered version (local layout or the version's artifact URI)."""
    artifact = getattr(found, "artifact_uri", "")
    if artifact:
        return str(artifact).rstrip("/").removesuffix(f"/{SAVED_MODEL_DIR}")
    if found.resource_name:
        raise PipelineInputError(
            f"registry version {found.uri} does not say where its model files are "
            "(RegisteredVersion.artifact_uri is empty)"
        )
    return str(Path(found.uri) / LOCAL_MODEL_DIR)


def _lookup(registry: Any, name: str, wanted: str) -> RegisteredVersion | None:
    get = getattr(registry, "get", None)
    if get is not None:
        return get(name, wanted)
    if wanted == CHAMPION_ALIAS:
        return registry.champion(name)
    raise PipelineInputError(
        f"registry {registry!r} can only look up the {CHAMPION_ALIAS!r} alias, not {wanted!r}"
    )


def resolve_model(
    registry_uri: str, model_name: str, alias: str = CHAMPION_ALIAS, version: str = ""
) -> ResolvedModel:
    """Find the model version to score with.

    Args:
        registry_uri: ``local:///abs/dir`` or ``vertex://project/location``.
        model_name: registered model name (Vertex: display name).
        alias: alias to resolve (default ``champion``); ignored when ``version`` is given.
        version: explicit version id ('' = use ``alias``).

    Returns:
        The resolved version and its model directory.

    Raises:
        PipelineInputError: unknown registry URI, model, alias or version (one line naming it),
            or a local version without a SavedModel.
    """
    version = str(version or "").strip()
    alias = str(alias or "").strip()
    if not version and not alias:
        raise PipelineInputError("give a model alias (e.g. 'champion') or an explicit version")
    if version and not version.isdigit():
        raise PipelineInputError(f"model version must be a number like '3', got {version!r}")
    wanted = version or alias
    requested = f"version {version}" if version else f"alias {alias!r}"
    registry = open_registry(registry_uri)
    found = _lookup(registry, model_name, wanted)
    if found is None:
        raise PipelineInputError(
            f"model {model_name!r} has no {requested} in registry {registry_uri}"
            + _known(registry, model_name)
        )
    model_dir = _model_dir(found)
    if not model_dir.startswith("gs://"):
        _check_local_model_dir(model_dir)
    return ResolvedModel(found.name, found.version, model_dir, registry_uri, requested)


def _known(registry: Any, name: str) -> str:
    """``"; it has aliases ... and versions ..."`` when the registry can list them."""
    try:
        aliases = registry.aliases(name) if hasattr(registry, "aliases") else {}
        versions = (
            [v.version for v in registry.versions(name)] if hasattr(registry, "versions") else []
        )
    except PipelineInputError:
        return ""
    if not versions:
        models = registry_model_names(registry)
        listed = f"; models there: {', '.join(models)}" if models else ""
        if models is not None and not models:
            listed = "; no model is registered there"
        return f" (no versions of {name!r} are registered there{listed})"
    return f" (aliases: {sorted(aliases) or 'none'}; versions: {', '.join(versions)})"


def registry_model_names(registry: Any) -> list[str] | None:
    """Names of the models with at least one version, or None when the registry cannot list.

    A local registry lists its model directories; a registry object may offer
    ``model_names()`` itself. Vertex's is not listed (it would page through every model of
    the project).
    """
    names = getattr(registry, "model_names", None)
    if callable(names):
        return sorted(names())
    root = getattr(registry, "root", None)
    if root is None:
        return None
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            try:
                if registry.versions(child.name):
                    found.append(child.name)
            except PipelineInputError:
                continue
    return found


def _check_local_model_dir(model_dir: str) -> None:
    root = Path(model_dir)
    if not (root / SAVED_MODEL_DIR / "saved_model.pb").is_file():
        raise PipelineInputError(
            f"registered model directory {model_dir} has no {SAVED_MODEL_DIR}/saved_model.pb"
        )
    if not (root / MODEL_METADATA_FILE).is_file():
        raise PipelineInputError(
            f"registered model directory {model_dir} has no {MODEL_METADATA_FILE}"
        )


def read_model_metadata(model_dir: str) -> dict[str, Any]:
    """``model_metadata.json`` of a model directory (local path or ``gs://`` via tf.io.gfile).

    Raises:
        PipelineInputError: the file is missing or not a JSON object with ``classes``.
    """
    path = f"{model_dir.rstrip('/')}/{MODEL_METADATA_FILE}"
    try:
        if model_dir.startswith("gs://"):
            import tensorflow as tf

            text = tf.io.gfile.GFile(path).read()
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
        data["classes"] = [str(c) for c in data["classes"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PipelineInputError(f"cannot read the classes from {path}: {err}") from err
    return data
