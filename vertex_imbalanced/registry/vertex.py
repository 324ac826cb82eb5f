"""Vertex AI Model Registry: versions, aliases, labels and the imported evaluation.

How a registration goes (every step safe to repeat, so a retried task finishes the work):

1. Check the inputs (display name, SavedModel, metrics, labels) before any call.
2. Find the model by the stable label ``imbalanced_model=<sanitised display name>``; more than
   one model with it is an error. No model: the upload creates one.
3. Find a version carrying this run's label ``imbalanced_run=<run id>``; if there is none,
   upload one (``parent_model`` = the model found), after taking the run alias
   (``challenger``) off whichever version holds it (an alias names one version per model).
4. Import the evaluation (Vertex's classification metrics schema; our full metrics dict in
   the evaluation's metadata) unless this run already imported it.
5. With ``make_champion``: promote (take ``champion`` off the old champion, put ``champion``
   and ``default`` on the new version) if the ``promotion`` rule still agrees.

Promotion is as close to a compare-and-set as Vertex allows. Alias updates take no
precondition (``mergeVersionAliases`` has no etag), so the champion is read and judged, read
again right before the alias moves (judged again if it changed meanwhile), and read once more
after the move. The window left open is the time between that last read before the move and the
two ``mergeVersionAliases`` calls that make it (a few hundred milliseconds: two API round
trips): a run that promotes in exactly that window is not compared with this one. When that
happens the read after the move sees the other version (or the move fails because the alias was
taken), and the returned version's ``promotion`` note and the log say so, naming both versions.

The champion is the version holding the ``champion`` alias; its metrics come from *its*
imported evaluation, never from the newest version.

Errors: HTTP 5xx / 429 / connection errors are retried ``max_attempts`` times with backoff, then
raise :class:`RegistryError`; other 4xx raise :class:`RegistryError` at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud import aiplatform
from google.cloud.aiplatform import initializer
from google.cloud.aiplatform import utils as aip_utils
from google.protobuf import json_format

from vertex_imbalanced.artifacts import SAVED_MODEL_DIR
from vertex_imbalanced.errors import PipelineInputError, RegistryError
from vertex_imbalanced.evaluation.vertex_schema import (
    CLASSIFICATION_SCHEMA_URI,
    check_classification_metrics,
    metrics_from_classification,
    overall_classification_metrics,
    to_classification_metrics,
)
from vertex_imbalanced.registry.base import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    PromotionDecision,
    PromotionRule,
    RegisteredVersion,
    find_saved_model,
)
from vertex_imbalanced.registry.labels import (
    check_label_count,
    sanitize_label_key,
    sanitize_label_value,
)
from vertex_imbalanced.registry.local import validate_alias

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

MODEL_LABEL = "imbalanced_model"
RUN_LABEL = "imbalanced_run"
# Newest TensorFlow prebuilt *prediction* image Vertex publishes (Nov 2026: tf2-cpu.2-15; no
# 2.16+ prediction images exist). TF Serving 2.15 loads SavedModels from newer TF as long as
# they use no newer ops; for anything else pass serving_image= (a custom serving container).
SERVING_TF_VERSION = "2.15"
METRIC_LABELS = (
    "accuracy",
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "weighted_f1",
    "log_loss",
    "roc_auc",
    "pr_auc",
)
# Left out of the copy of metrics.json stored in the evaluation's metadata (size).
BULKY_METRIC_KEYS = ("curves", "threshold_counts")
MAX_DISPLAY_NAME = 128
_KMS_KEY_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_RETRYABLE = (
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    api_exceptions.RetryError,
    ConnectionError,
)


def default_serving_image(location: str) -> str:
    """Google's prebuilt TF CPU prediction image for ``location`` (us/europe/asia registry)."""
    try:
        return aiplatform.helpers.get_prebuilt_prediction_container_uri(
            "tensorflow", SERVING_TF_VERSION, region=location, accelerator="cpu"
        )
    except ValueError:
        return f"us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.{SERVING_TF_VERSION.replace('.', '-')}:latest"


def metric_label_value(value: float) -> str:
    """A metric as a label value: 4 decimals, ``.`` -> ``_`` (``0.81234`` -> ``0_8123``)."""
    return f"{float(value):.4f}".replace(".", "_").replace("-", "m")


def validate_display_name(name: str) -> str:
    """Return ``name`` if Vertex accepts it as a model display name.

    Raises:
        PipelineInputError: if empty, longer than 128 characters, padded with spaces or
            holding control characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise PipelineInputError("model display name must be a non-empty string")
    if len(name) > MAX_DISPLAY_NAME:
        raise PipelineInputError(
            f"model display name {name[:40]!r}... is {len(name)} characters; "
            f"Vertex allows at most {MAX_DISPLAY_NAME}"
        )
    if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise PipelineInputError(
            f"model display name {name!r} has leading/trailing spaces or control characters"
        )
    return name


def gcs_uri(path: str) -> str:
    """``gs://`` form of a model path (``/gcs/b/x`` -> ``gs://b/x``).

    Raises:
        PipelineInputError: if the path is not on Cloud Storage.
    """
    if path.startswith("gs://"):
        return path.rstrip("/")
    if path.startswith("/gcs/"):
        return "gs://" + path[len("/gcs/") :].rstrip("/")
    raise PipelineInputError(
        f"model artifact {path!r} is not on Cloud Storage: Vertex AI reads models from gs:// "
        "(run the pipeline with a gs:// pipeline root)"
    )


def _same_version(a: RegisteredVersion | None, b: RegisteredVersion | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.version == b.version)


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` without the bulky curve data (kept in the imported evaluation's own fields)."""
    return {k: v for k, v in metrics.items() if k not in BULKY_METRIC_KEYS}


def _finite(value: Any) -> Any:
    """``value`` with NaN / infinity replaced by None (JSON and protobuf Values reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class VertexRegistry:
    """Vertex AI Model Registry implementing :class:`vertex_imbalanced.registry.base.Registry`.

    Constructing one calls ``aiplatform.init`` (the SDK keeps its settings process-wide).

    Args:
        project: Google Cloud project.
        location: Vertex AI region, e.g. ``us-central1``.
        api_endpoint: optional endpoint override; an ``http://`` endpoint (a local emulator)
            uses the REST transport and anonymous credentials.
        credentials: optional credentials (default: application default credentials).
        serving_image: serving container image (default: :func:`default_serving_image`).
        description: model description for new versions.
        max_attempts: attempts per call on retryable errors (5xx, 429, connection).
        retry_delay_s: first retry delay; doubles per attempt, capped at 30 s.
        kms_key: CMEK key ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` that encrypts
            uploaded models ('' / None: Google-managed encryption).
        max_promotion_checks: how often the champion may change while a promotion is judged
            before the version is registered without ``champion``.
    """

    def __init__(
        self,
        project: str,
        location: str,
        *,
        api_endpoint: str | None = None,
        credentials: Any = None,
        serving_image: str | None = None,
        description: str = "Imbalanced classification model (imbalanced pipeline)",
        max_attempts: int = 5,
        retry_delay_s: float = 1.0,
        kms_key: str | None = None,
        max_promotion_checks: int = 3,
    ):
        if max_attempts < 1:
            raise PipelineInputError(f"max_attempts must be >= 1, got {max_attempts}")
        if kms_key and not _KMS_KEY_RE.match(kms_key):
            raise PipelineInputError(
                f"kms_key must be projects/P/locations/L/keyRings/R/cryptoKeys/K, got {kms_key!r}"
            )
        self.kms_key = kms_key or None
        self.max_promotion_checks = max(1, max_promotion_checks)
        self.project = project
        self.location = location
        self.serving_image = serving_image or default_serving_image(location)
        self.description = description
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        init_kwargs: dict[str, Any] = {"project": project, "location": location}
        if api_endpoint:
            init_kwargs["api_endpoint"] = api_endpoint
            if api_endpoint.startswith("http://"):
                from google.auth.credentials import AnonymousCredentials

                init_kwargs["api_transport"] = "rest"
                credentials = credentials or AnonymousCredentials()
        if credentials is not None:
            init_kwargs["credentials"] = credentials
        aiplatform.init(**init_kwargs)
        self._client = initializer.global_config.create_client(
            client_class=aip_utils.ModelClientWithOverride, location_override=location
        )

    def __repr__(self) -> str:
        return f"VertexRegistry({self.project!r}, {self.location!r})"

    # ------------------------------------------------------------------ calls and retries
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call with bounded retries on transient errors."""
        delay = self.retry_delay_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except _RETRYABLE as err:
                if attempt == self.max_attempts:
                    raise RegistryError(
                        f"Vertex AI failed to {what} after {attempt} attempts: {err}"
                    ) from err
                _LOG.warning("%s failed (attempt %d): %s; retrying", what, attempt, err)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except api_exceptions.GoogleAPICallError as err:
                raise RegistryError(f"Vertex AI refused to {what}: {err}") from err
        raise AssertionError("unreachable")

    def _model_label(self, display_name: str) -> str:
        # Display names are free text; their label form is expected to differ: log, no warning.
        return sanitize_label_value(display_name, what="model display name", warn=False)

    def _find_model(self, display_name: str) -> str | None:
        """Resource name of the model carrying our label for ``display_name``, or None."""
        label = self._model_label(display_name)
        found = self._call(
            f"list models labelled {MODEL_LABEL}={label}",
            lambda: list(
                self._client.list_models(
                    request={
                        "parent": initializer.global_config.common_location_path(
                            self.project, self.location
                        ),
                        "filter": f'labels.{MODEL_LABEL}="{label}"',
                    }
                )
            ),
        )
        names = sorted({m.name for m in found})
        if len(names) > 1:
            raise RegistryError(
                f"{len(names)} Vertex models carry the label {MODEL_LABEL}={label} "
                f"(display name {display_name!r}): {names}. Delete or relabel all but one."
            )
        return names[0] if names else None

    def _versions(self, resource_name: str, label_filter: str = "") -> list[Any]:
        return self._call(
            f"list versions of {resource_name}",
            lambda: list(
                self._client.list_model_versions(
                    request={"name": resource_name, "filter": label_filter}
                )
            ),
        )

    def _get(self, name: str) -> Any | None:
        try:
            return self._call(f"get {name}", lambda: self._client.get_model(name=name))
        except RegistryError as err:
            if isinstance(err.__cause__, api_exceptions.NotFound):
                return None
            raise

    def _merge_aliases(self, resource_name: str, version: str, changes: list[str]) -> None:
        name = f"{resource_name}@{version}"
        self._call(
            f"change aliases {changes} of {name}",
            lambda: self._client.merge_version_aliases(name=name, version_aliases=changes),
        )

    def _free_alias(self, resource_name: str, alias: str, keep_version: str | None) -> None:
        holder = self._get(f"{resource_name}@{alias}")
        if holder is not None and holder.version_id != keep_version:
            self._merge_aliases(resource_name, holder.version_id, [f"-{alias}"])

    # ------------------------------------------------------------------ register
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
        artifact_uri: str | None = None,
        evaluation: dict[str, Any] | None = None,
        promotion: PromotionRule | None = None,
    ) -> RegisteredVersion:
        """Upload ``model_dir`` as a new version of ``model_name`` (see the module docstring).

        Args:
            model_name: the model display name (also the source of the stable model label).
            model_dir: local view of the model artifact (``/gcs/...`` on Vertex); must hold a
                SavedModel.
            metrics: our metrics dict (``metrics.json``); stored in the evaluation's metadata.
            labels: extra labels (pipeline job id, source table, git commit...); sanitised.
            run_id: the pipeline run (idempotency key, stored as label ``imbalanced_run``).
            make_champion: whether the new version becomes champion and default.
            alias: the run's alias.
            artifact_uri: ``gs://`` model directory to upload; default: ``model_dir`` mapped
                from ``/gcs/`` to ``gs://``. The SavedModel subdirectory is what is uploaded.
            evaluation: Vertex evaluation JSON (``vertex_evaluation.json``, ``slicedMetrics``
                or classification metrics); default: built from ``metrics`` by
                :func:`vertex_imbalanced.evaluation.vertex_schema.to_classification_metrics`.
            promotion: the compare-and-set rule applied to the champion read right before
                promoting (None: promote whenever ``make_champion``).

        Returns:
            The registered version (fresh from the service); ``promotion`` says what was
            decided about ``champion``.

        Raises:
            PipelineInputError: bad inputs, found before any call; its subclass
                :class:`~vertex_imbalanced.errors.VertexSchemaError` for metrics or an
                evaluation that do not fit Vertex's classification schema.
            RegistryError: the service failed or refused; ambiguous models.
        """
        display_name = validate_display_name(model_name)
        validate_alias(alias)
        if not isinstance(run_id, str) or not run_id.strip():
            raise PipelineInputError("run_id must be a non-empty string")
        saved_model = find_saved_model(model_dir)
        base_uri = gcs_uri(artifact_uri or str(model_dir))
        relative = saved_model.relative_to(model_dir).as_posix()
        upload_uri = base_uri if relative == "." else f"{base_uri}/{relative}"
        vertex_metrics = overall_classification_metrics(
            evaluation or to_classification_metrics(metrics)
        )
        check_classification_metrics(vertex_metrics, "evaluation metrics")
        all_labels = self._labels(display_name, run_id, labels, metrics)

        resource_name = self._find_model(display_name)
        run_filter = f'labels.{RUN_LABEL}="{all_labels[RUN_LABEL]}"'
        version = self._find_run_version(resource_name, run_filter)
        if version is None:
            resource_name, version = self._upload(
                resource_name,
                display_name,
                upload_uri,
                all_labels,
                alias,
                run_filter,
            )
            newest = True
        else:
            _LOG.info(
                "run %s is already %s@%s; not uploading again", run_id, resource_name, version
            )
            # Redo alias moves a failure may have skipped, unless newer versions exist since.
            newest = version == max((v.version_id for v in self._versions(resource_name)), key=int)
        self._import_evaluation(
            resource_name, version, display_name, run_id, vertex_metrics, metrics
        )
        note = ""
        if newest:
            note = self._set_aliases(resource_name, version, alias, make_champion, promotion)
        info = self._version_info(resource_name, version, metrics)
        return dataclasses.replace(info, promotion=note)

    def _labels(
        self, display_name: str, run_id: str, labels: dict[str, str], metrics: dict[str, Any]
    ) -> dict[str, str]:
        out = {
            sanitize_label_key(k): sanitize_label_value(v, what=f"label {k!r} value")
            for k, v in (labels or {}).items()
        }
        for name in METRIC_LABELS:
            if isinstance(metrics.get(name), int | float):
                out[f"metric_{name}"] = metric_label_value(metrics[name])
        out[MODEL_LABEL] = self._model_label(display_name)
        out[RUN_LABEL] = sanitize_label_value(run_id, what="run id")
        check_label_count(out)
        return out

    def _find_run_version(self, resource_name: str | None, run_filter: str) -> str | None:
        if resource_name is None:
            return None
        versions = self._versions(resource_name, run_filter)
        return versions[0].version_id if versions else None

    def _upload(
        self,
        resource_name: str | None,
        display_name: str,
        upload_uri: str,
        labels: dict[str, str],
        alias: str,
        run_filter: str,
    ) -> tuple[str, str]:
        """Upload a version, retrying transient errors without ever uploading twice."""
        delay = self.retry_delay_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                if resource_name is not None:
                    self._free_alias(resource_name, alias, keep_version=None)
                model = aiplatform.Model.upload(
                    display_name=display_name,
                    description=self.description,
                    artifact_uri=upload_uri,
                    serving_container_image_uri=self.serving_image,
                    parent_model=resource_name,
                    # default moves together with champion, after the evaluation is in
                    is_default_version=resource_name is None,
                    version_aliases=[alias],
                    labels=labels,
                    encryption_spec_key_name=self.kms_key,
                    project=self.project,
                    location=self.location,
                )
                return model.resource_name, model.version_id
            except _RETRYABLE as err:
                if attempt == self.max_attempts:
                    raise RegistryError(
                        f"Vertex AI failed to upload {display_name!r} after {attempt} attempts: {err}"
                    ) from err
                _LOG.warning("upload failed (attempt %d): %s; retrying", attempt, err)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                # The failed call may still have created the version: look before uploading.
                resource_name = resource_name or self._find_model(display_name)
                found = self._find_run_version(resource_name, run_filter)
                if found is not None:
                    return resource_name, found  # type: ignore[return-value]
            except api_exceptions.GoogleAPICallError as err:
                raise RegistryError(f"Vertex AI refused to upload {display_name!r}: {err}") from err
        raise AssertionError("unreachable")

    def _evaluations(self, resource_name: str, version: str) -> list[dict[str, Any]]:
        parent = f"{resource_name}@{version}"
        found = self._call(
            f"list evaluations of {parent}",
            lambda: list(self._client.list_model_evaluations(parent=parent)),
        )
        return [json_format.MessageToDict(type(e).pb(e)) for e in found]

    def _import_evaluation(
        self,
        resource_name: str,
        version: str,
        display_name: str,
        run_id: str,
        vertex_metrics: dict[str, Any],
        metrics: dict[str, Any],
    ) -> None:
        parent = f"{resource_name}@{version}"
        for existing in self._evaluations(resource_name, version):
            if (existing.get("metadata") or {}).get("run_id") == run_id:
                _LOG.info("evaluation of run %s already imported on %s", run_id, parent)
                return
        evaluation = aiplatform.gapic.ModelEvaluation(
            display_name=f"{display_name} {run_id}"[:MAX_DISPLAY_NAME],
            metrics_schema_uri=CLASSIFICATION_SCHEMA_URI,
            metrics=vertex_metrics,
            metadata={"run_id": run_id, "metrics": _finite(_compact(metrics))},
        )
        self._call(
            f"import the evaluation into {parent}",
            lambda: self._client.import_model_evaluation(
                parent=parent, model_evaluation=evaluation
            ),
        )

    def _set_aliases(
        self,
        resource_name: str,
        version: str,
        alias: str,
        make_champion: bool,
        promotion: PromotionRule | None = None,
    ) -> str:
        """Put the run alias (and maybe ``champion`` + ``default``) on ``version``.

        Returns:
            What was decided about ``champion`` ('' when not asked).
        """
        current = self._get(f"{resource_name}@{version}")
        have = set(current.version_aliases) if current is not None else set()
        if alias not in have:
            self._free_alias(resource_name, alias, keep_version=version)
            self._merge_aliases(resource_name, version, [alias])
        if not make_champion:
            return ""
        if CHAMPION_ALIAS in have:
            return f"version {version} already holds {CHAMPION_ALIAS!r}"
        return self._promote(resource_name, version, promotion)

    def _champion_version(self, resource_name: str) -> RegisteredVersion | None:
        holder = self._get(f"{resource_name}@{CHAMPION_ALIAS}")
        return None if holder is None else self._version_info(resource_name, holder.version_id)

    def _promote(self, resource_name: str, version: str, promotion: PromotionRule | None) -> str:
        """Compare-and-set of ``champion`` as far as Vertex allows (module docstring).

        The champion is read, judged, and read again right before the alias moves; when it
        changed while it was judged (re-scoring takes a while) the new one is judged. After the
        move the champion is read once more: if another run moved it meanwhile, say so.
        """
        holder = self._champion_version(resource_name)
        for _ in range(self.max_promotion_checks):
            decision = (
                promotion(holder)
                if promotion is not None
                else PromotionDecision(True, "promoted without a champion check")
            )
            if not decision.promote:
                _LOG.warning(
                    "version %s registered without %r: %s", version, CHAMPION_ALIAS, decision.reason
                )
                return decision.reason
            again = self._champion_version(resource_name)
            if _same_version(again, holder):
                break
            holder = again
        else:
            reason = (
                f"the champion kept changing while version {version} was judged "
                f"({self.max_promotion_checks} checks); registered without {CHAMPION_ALIAS!r}"
            )
            _LOG.warning("%s", reason)
            return reason
        # The window: from the read above to the alias move below no precondition holds.
        try:
            if holder is not None:
                self._merge_aliases(resource_name, holder.version, [f"-{CHAMPION_ALIAS}"])
            self._merge_aliases(resource_name, version, [CHAMPION_ALIAS, "default"])
        except RegistryError as err:
            winner = self._champion_version(resource_name)
            if winner is not None and winner.version != version:
                reason = (
                    f"version {winner.version} was promoted by another run while version "
                    f"{version} was being promoted; {version} is registered without "
                    f"{CHAMPION_ALIAS!r} ({err})"
                )
                _LOG.warning("%s", reason)
                return reason
            raise
        after = self._champion_version(resource_name)
        if after is None or after.version != version:
            found = "no version" if after is None else f"version {after.version}"
            reason = (
                f"{decision.reason}; but {found} holds {CHAMPION_ALIAS!r} right after version "
                f"{version} took it: another run promoted it in the same moment, without "
                f"comparing it with version {version}"
            )
            _LOG.warning("%s", reason)
            return reason
        return decision.reason

    def _version_info(
        self, resource_name: str, version: str, metrics: dict[str, Any] | None = None
    ) -> RegisteredVersion:
        model = self._get(f"{resource_name}@{version}")
        if model is None:
            raise RegistryError(f"version {resource_name}@{version} vanished")
        labels = dict(model.labels)
        if metrics is None:
            metrics = self._stored_metrics(resource_name, version)
        artifact_uri = model.artifact_uri.rstrip("/")
        suffix = f"/{SAVED_MODEL_DIR}"
        if artifact_uri.endswith(suffix):
            artifact_uri = artifact_uri[: -len(suffix)]
        return RegisteredVersion(
            name=model.display_name,
            version=model.version_id,
            uri=f"{resource_name}@{model.version_id}",
            aliases=tuple(sorted(model.version_aliases)),
            metrics=metrics,
            labels=labels,
            run_id=labels.get(RUN_LABEL, ""),
            resource_name=resource_name,
            artifact_uri=artifact_uri,
        )

    def _stored_metrics(self, resource_name: str, version: str) -> dict[str, Any]:
        """Metrics of a version's newest imported evaluation ({} if none)."""
        evaluations = self._evaluations(resource_name, version)
        if not evaluations:
            return {}
        newest = max(evaluations, key=lambda e: e.get("createTime", ""))
        stored = (newest.get("metadata") or {}).get("metrics")
        if isinstance(stored, dict) and stored:
            return stored
        return metrics_from_classification(newest.get("metrics") or {})

    # ------------------------------------------------------------------ champion
    def get(self, model_name: str, version_or_alias: str) -> RegisteredVersion | None:
        """A version by id or alias with the metrics of *its* evaluation, or None.

        Raises:
            PipelineInputError: a bad display name or an empty version / alias.
            RegistryError: the service failed or refused; ambiguous models.
        """
        if not isinstance(version_or_alias, str) or not version_or_alias.strip():
            raise PipelineInputError(
                f"version or alias must be a non-empty string, got {version_or_alias!r}"
            )
        resource_name = self._find_model(validate_display_name(model_name))
        if resource_name is None:
            return None
        holder = self._get(f"{resource_name}@{version_or_alias}")
        if holder is None:
            return None
        return self._version_info(resource_name, holder.version_id)

    def champion(self, model_name: str) -> RegisteredVersion | None:
        """The version with the ``champion`` alias and the metrics of *its* evaluation, or None."""
        return self.get(model_name, CHAMPION_ALIAS)
