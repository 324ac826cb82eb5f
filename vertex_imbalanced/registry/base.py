"""What every model registry returns and offers, and how a registry URI picks one.

Two registries implement :class:`Registry`: :class:`vertex_imbalanced.registry.local.LocalRegistry`
(a directory, the embedded default) and :class:`vertex_imbalanced.registry.vertex.VertexRegistry`
(Vertex AI Model Registry). Pipelines name one with a URI: ``local:///abs/dir`` or
``vertex://project/location``.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vertex_imbalanced.artifacts import (
    SAVED_MODEL_DIR,
    SAVED_MODEL_PROTO,
    VERTEX_EVALUATION_FILE,
    check_model_complete,
    metrics_path,
    vertex_evaluation_path,
)
from vertex_imbalanced.errors import PipelineInputError

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version.

    Attributes:
        name: the model name (Vertex: display name).
        version: the version id (``"1"``, ``"2"``...).
        uri: where the version lives: the version directory (local) or the versioned resource
            name ``projects/../models/ID@VERSION`` (Vertex).
        aliases: aliases on this version (``champion``, ``challenger``...).
        metrics: the evaluation metrics dict (``metrics.json``) registered with the version.
        labels: the labels stored with the version.
        run_id: the pipeline run that registered it.
        resource_name: Vertex model resource name without version ('' for local).
        artifact_uri: the version's model directory in the train step's layout (holding
            ``saved_model/`` and ``model_metadata.json``): ``<version dir>/model`` (local) or
            the uploaded ``gs://`` directory above ``saved_model`` (Vertex); '' if unknown.
        promotion: what the registration decided about ``champion`` (one sentence; '' when
            the version was read rather than just registered, or no promotion was asked).
    """

    name: str
    version: str
    uri: str
    aliases: tuple[str, ...] = ()
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    run_id: str = ""
    resource_name: str = ""
    artifact_uri: str = ""
    promotion: str = ""

    @property
    def is_champion(self) -> bool:
        """Whether the version holds the ``champion`` alias."""
        return CHAMPION_ALIAS in self.aliases

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = dataclasses.asdict(self)
        out["aliases"] = list(self.aliases)
        return out

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegisteredVersion:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["aliases"] = tuple(kwargs.get("aliases", ()))
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """Whether a newly registered version may take ``champion`` from the current holder.

    Attributes:
        promote: take the alias.
        reason: one sentence naming the versions and numbers compared.
    """

    promote: bool
    reason: str


PromotionRule = Callable[[RegisteredVersion | None], PromotionDecision]
"""Called by ``register`` with the champion read *at promotion time* (None: no champion).

Registries call it under their lock (local) or right before promoting (Vertex), so a champion
promoted by another run after this run's gate is judged again instead of being overwritten
(see :mod:`vertex_imbalanced.registry.champion`).
"""


@runtime_checkable
class Registry(Protocol):
    """A model registry (see docs/ARCHITECTURE.md, "Registry interface")."""

    def register(
        self,
        model_name: str,
        model_dir: str,
        metrics: dict[str, Any],
        labels: dict[str, str],
        run_id: str,
        make_champion: bool,
        alias: str = CHALLENGER_ALIAS,
        *,
        promotion: PromotionRule | None = None,
    ) -> RegisteredVersion:
        """Register ``model_dir`` as a new version; idempotent per ``run_id``.

        With ``make_champion`` and a ``promotion`` rule, the version takes ``champion`` only
        when the rule, called with the champion read at promotion time, says so.
        """
        ...

    def get(self, model_name: str, version_or_alias: str) -> RegisteredVersion | None:
        """A version by number or alias (``champion``, ``challenger``...), or None."""
        ...

    def champion(self, model_name: str) -> RegisteredVersion | None:
        """The version holding the ``champion`` alias, or None."""
        ...


def find_saved_model(model_dir: str | Path) -> Path:
    """Return the SavedModel directory of a model artifact directory.

    Accepts ``<model_dir>/saved_model/saved_model.pb`` (the artifact layout of
    :mod:`vertex_imbalanced.artifacts`) or a SavedModel directory itself.

    Raises:
        PipelineInputError: if the directory does not exist or holds no SavedModel, or is a
            train step's output without its completion marker
            (:func:`vertex_imbalanced.artifacts.check_model_complete`).
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise PipelineInputError(f"model directory {str(model_dir)!r} does not exist")
    if (root / SAVED_MODEL_DIR / SAVED_MODEL_PROTO).is_file():
        check_model_complete(root)  # a killed train step's directory is never registered
        return root / SAVED_MODEL_DIR
    if (root / SAVED_MODEL_PROTO).is_file():
        return root
    raise PipelineInputError(
        f"model directory {str(model_dir)!r} holds no SavedModel "
        f"(expected {SAVED_MODEL_DIR}/{SAVED_MODEL_PROTO}, as written by the train step)"
    )


def open_registry(uri: str, **options: Any) -> Registry:
    """Open the registry a URI names.

    Args:
        uri: ``local:///abs/dir`` for a directory registry, or ``vertex://project/location``
            for Vertex AI Model Registry; ``vertex://p/l?api_endpoint=http://127.0.0.1:8080``
            talks to a local Vertex emulator (anonymous credentials for ``http://`` endpoints).
        **options: passed to the registry's constructor (e.g. ``serving_image``).

    Returns:
        The registry.

    Raises:
        PipelineInputError: for an unknown scheme or a malformed URI.
    """
    parsed = urllib.parse.urlsplit(uri or "")
    if parsed.scheme == "local":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise PipelineInputError(
                f"invalid local registry URI {uri!r}: use local:///absolute/directory"
            )
        from vertex_imbalanced.registry.local import LocalRegistry

        return LocalRegistry(parsed.path, **options)
    if parsed.scheme == "vertex":
        project, location = parsed.netloc, parsed.path.strip("/")
        if not project or not location or "/" in location:
            raise PipelineInputError(
                f"invalid Vertex registry URI {uri!r}: use vertex://PROJECT/LOCATION"
            )
        query = dict(urllib.parse.parse_qsl(parsed.query))
        unknown = set(query) - {"api_endpoint"}
        if unknown:
            raise PipelineInputError(f"unknown option(s) {sorted(unknown)} in registry URI {uri!r}")
        from vertex_imbalanced.registry.vertex import VertexRegistry

        return VertexRegistry(project, location, api_endpoint=query.get("api_endpoint"), **options)
    raise PipelineInputError(
        f"unknown registry URI {uri!r}: use local:///abs/dir or vertex://project/location"
    )


def read_metrics_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read the evaluate step's metrics and, if present, its Vertex evaluation JSON.

    Args:
        path: the metrics artifact: a directory holding ``metrics.json`` (and optionally
            ``vertex_evaluation.json``), or the metrics JSON file itself, with an optional
            ``vertex_evaluation.json`` beside it (names from :mod:`vertex_imbalanced.artifacts`).

    Returns:
        ``(metrics, vertex_evaluation or None)``.

    Raises:
        PipelineInputError: if the metrics are missing or not a JSON object.
    """
    path = Path(path)
    metrics_file = metrics_path(path)
    if not metrics_file.is_file():
        raise PipelineInputError(f"metrics artifact {str(path)!r} has no metrics JSON")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"metrics file {str(metrics_file)!r} is not JSON: {err}") from err
    if not isinstance(metrics, dict):
        raise PipelineInputError(f"metrics file {str(metrics_file)!r} must hold a JSON object")
    evaluation_file = vertex_evaluation_path(path)
    evaluation = None
    if evaluation_file.is_file() and evaluation_file != metrics_file:
        try:
            evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PipelineInputError(
                f"{VERTEX_EVALUATION_FILE} {str(evaluation_file)!r} is not JSON: {err}"
            ) from err
    return metrics, evaluation
