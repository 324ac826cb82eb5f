"""Which champion a run competes with, on which rows, and the compare-and-set rule of promotion.

A champion counts only when it solves the same problem: the same label column and the same
ordered classes. Registration stores that identity with every version (labels
``problem_id`` / ``problem_label``); a champion of another problem is named and ignored.

The gate compares like with like: the champion's exported model is re-scored on *this* run's
test split with this run's metric definition
(:func:`vertex_imbalanced.evaluation.evaluate.evaluate_model`, the function that scored the
challenger), so a grown table or a changed metric never compares unlike figures.

Promotion is a compare-and-set (:class:`ChampionCheck`): at registration the registry reads the
champion again; if it is still the version the gate compared with, the gate's verdict stands;
if another run promoted a version since, that version is re-scored on this run's rows and the
gate's rule is applied again; a model that no longer wins is registered without ``champion``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertex_imbalanced.errors import LabelError, PipelineInputError
from vertex_imbalanced.registry.base import PromotionDecision, RegisteredVersion, Registry
from vertex_imbalanced.scratch import remove_dead_scratch, scratch_directory

if TYPE_CHECKING:
    from vertex_imbalanced.warehouse.prepare import PreparedData

_LOG = logging.getLogger(__name__)

PROBLEM_ID_LABEL = "problem_id"
"""Label holding :func:`problem_id` of the version's label column and classes."""
PROBLEM_LABEL_LABEL = "problem_label"
"""Label holding the label column's name (readable; Vertex may sanitise it)."""
RESCORE_PREFIX = "champion-rescore-"
"""Local scratch directories of champion re-scoring (see :mod:`vertex_imbalanced.scratch`)."""
MAX_MODEL_NAME = 128
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclasses.dataclass(frozen=True)
class Problem:
    """What a model predicts: the label column and the ordered class names."""

    label: str
    classes: tuple[str, ...]

    @property
    def id(self) -> str:
        """Stable 16-hex-digit identity (see :func:`problem_id`)."""
        return problem_id(self.label, self.classes)

    def labels(self) -> dict[str, str]:
        """The registry labels that record this problem."""
        return {PROBLEM_ID_LABEL: self.id, PROBLEM_LABEL_LABEL: self.label}

    def describe(self) -> str:
        """``label 'churn', classes ['no', 'yes']``."""
        return f"label {self.label!r}, classes {list(self.classes)}"


def problem_id(label: str, classes: Sequence[str]) -> str:
    """Identity of a problem: SHA-256 of the label column and ordered classes, 16 hex digits.

    Exact where Vertex labels are not (they are lowercased and cut at 63 characters); the
    class order matters, since class ids follow it.
    """
    text = json.dumps([str(label), [str(c) for c in classes]], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def version_problem(version: RegisteredVersion) -> str:
    """A registered version's problem in words (for messages); '' when it recorded none."""
    label = version.labels.get(PROBLEM_LABEL_LABEL, "")
    classes = version.metrics.get("classes")
    parts = [f"label {label!r}" if label else "", f"classes {list(classes)}" if classes else ""]
    return ", ".join(p for p in parts if p)


def same_problem(version: RegisteredVersion, problem: Problem) -> bool:
    """Whether ``version`` was registered for ``problem`` (a version without the label: no)."""
    return version.labels.get(PROBLEM_ID_LABEL) == problem.id


def default_model_name(source_uri: str, label: str) -> str:
    """Registry name for a model when the user gives none: ``<table>-<label>``.

    BigQuery tables give ``<dataset>.<table>-<label>``; DuckDB tables ``<table>-<label>``
    (``<schema>.<table>-<label>`` outside ``main``). The file path and project are left out, so
    reruns on a re-imported copy of the same table find their champion. Characters other than
    letters, digits, ``.``, ``_``, ``-`` become ``_`` and a short hash of the exact text is
    appended then (and when the name is cut to 128 characters), so different tables and labels
    never share a name.

    Args:
        source_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/file.db?table=name``.
        label: the label column.

    Returns:
        A name valid for the local and the Vertex registry.

    Raises:
        PipelineInputError: the URI is not one of the two forms, or the label is empty.
    """
    from vertex_imbalanced.warehouse.engines import source_table

    if not isinstance(label, str) or not label.strip():
        raise PipelineInputError("the label column must be named to derive a model name")
    ref = source_table(source_uri)
    table = ref.table if source_uri.startswith("duckdb://") else f"{ref.dataset}.{ref.table}"
    if source_uri.startswith("duckdb://") and ref.dataset not in (None, "", "main"):
        table = f"{ref.dataset}.{ref.table}"
    raw = f"{table}-{label}"
    name = _NAME_UNSAFE.sub("_", raw).lstrip("._-") or "model"
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    if name != raw or len(name) > MAX_MODEL_NAME:
        name = f"{name[: MAX_MODEL_NAME - 9]}-{digest}"
    return name


def resolve_model_name(model_name: str, source_uri: str, label: str) -> str:
    """``model_name`` if given, else :func:`default_model_name` of the source and label."""
    return (
        model_name.strip()
        if model_name and model_name.strip()
        else (default_model_name(source_uri, label))
    )


def local_model_dir(artifact_uri: str, gcs_mount: str | Path = "/gcs") -> Path:
    """Where a registered model directory can be read: ``gs://b/x`` -> ``<gcs_mount>/b/x``.

    Raises:
        PipelineInputError: the version records no model directory.
    """
    if not artifact_uri:
        raise PipelineInputError("the registered version records no model directory")
    if artifact_uri.startswith("gs://"):
        return Path(gcs_mount) / artifact_uri[len("gs://") :]
    return Path(artifact_uri)


def rescore(
    version: RegisteredVersion,
    prepared: PreparedData,
    *,
    gcs_mount: str | Path = "/gcs",
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Metrics of a registered model on this run's test split, as the challenger was scored.

    Calls :func:`vertex_imbalanced.evaluation.evaluate.evaluate_model` (the evaluate step's
    function: same splits, same operating-point choice on validation, same metrics) into a
    temporary directory.

    Args:
        version: the registered version (its ``artifact_uri`` is read).
        prepared: this run's prepared splits, spec and classes.
        gcs_mount: where ``gs://`` is mounted (``/gcs`` on Vertex).
        batch_size: rows per prediction batch.

    Returns:
        The metrics dict.

    Raises:
        PipelineInputError: the model cannot be read or needs columns this run does not have.
        LabelError: the model's classes differ from this run's.
    """
    from vertex_imbalanced.evaluation.evaluate import evaluate_model

    model_dir = local_model_dir(version.artifact_uri, gcs_mount)
    remove_dead_scratch(RESCORE_PREFIX)  # left by lookups killed while re-scoring
    out = scratch_directory(RESCORE_PREFIX)
    try:
        result = evaluate_model(
            model_dir=model_dir,
            test_source=prepared.test_uri,
            validation_source=prepared.validation_uri,
            spec=prepared.spec,
            classes=prepared.classes,
            output_dir=out,
            batch_size=batch_size,
            baselines=False,  # the champion is compared with the challenger, not re-baselined
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result.metrics


Rescorer = Callable[[RegisteredVersion], dict[str, Any]]
"""Metrics of a registered version on this run's test split (e.g. :func:`rescore` bound)."""


@dataclasses.dataclass(frozen=True)
class ComparableChampion:
    """Outcome of :func:`comparable_champion`.

    Attributes:
        version: the champion this run competes with (None: none counts).
        metrics: its metrics on this run's test split ({} when there is none).
        note: one sentence saying what was found (printed by the lookup step).
        seen: the version that held ``champion`` ('' when none did), counted or ignored:
            registration's :attr:`ChampionCheck.compared_version`.
    """

    version: RegisteredVersion | None
    metrics: dict[str, Any]
    note: str
    seen: str = ""

    def metrics_json(self) -> str:
        """The metrics as the gate step takes them ('' when no champion counts)."""
        return json.dumps(self.metrics, sort_keys=True) if self.version is not None else ""


def comparable_champion(
    champion: RegisteredVersion | None,
    problem: Problem | None,
    rescorer: Rescorer,
    model_name: str,
) -> ComparableChampion:
    """The champion's figures on this run's rows, or why there is none to compare with.

    Args:
        champion: the version holding ``champion`` (None if none).
        problem: this run's label and classes (None: unknown; the champion then counts with
            its registered figures, as before problems were recorded).
        rescorer: scores a version on this run's test split.
        model_name: the registry name (for the note).

    Returns:
        The champion and its re-scored metrics, or no champion and the reason (another
        problem, or a model that cannot read this run's columns) in ``note``.
    """
    if champion is None:
        return ComparableChampion(None, {}, f"no champion of {model_name!r} yet")
    seen = champion.version
    if problem is None:
        return ComparableChampion(
            champion,
            dict(champion.metrics),
            f"champion version {seen} of {model_name!r}: figures as registered (this run's "
            "problem and rows are unknown, so it was not re-scored)",
            seen,
        )
    if not same_problem(champion, problem):
        theirs = version_problem(champion) or "no recorded problem"
        return ComparableChampion(
            None,
            {},
            f"champion version {champion.version} of {model_name!r} solves another problem "
            f"({theirs}; this run: {problem.describe()}): ignored",
            seen,
        )
    try:
        metrics = rescorer(champion)
    except (PipelineInputError, LabelError) as err:
        return ComparableChampion(
            None,
            {},
            f"champion version {champion.version} of {model_name!r} cannot be scored on this "
            f"run's test split ({err}): ignored",
            seen,  # registration must see it unchanged, or it withholds the alias
        )
    return ComparableChampion(
        champion,
        metrics,
        f"champion version {champion.version} of {model_name!r} re-scored on this run's test split",
    )


def run_problem(
    prepared: PreparedData | None, model_dir: str | Path | None = None
) -> Problem | None:
    """This run's problem: from the prepared data, else the model's metadata, else None."""
    if prepared is not None:
        return Problem(prepared.spec.label, tuple(prepared.classes))
    if model_dir is None:
        return None
    from vertex_imbalanced.artifacts import model_metadata_path

    try:
        meta = json.loads(model_metadata_path(model_dir).read_text(encoding="utf-8"))
        return Problem(str(meta["feature_spec"]["label"]), tuple(str(c) for c in meta["classes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lookup_for_run(
    registry: Registry,
    model_name: str,
    prepared: PreparedData | None,
    *,
    gcs_mount: str | Path = "/gcs",
) -> ComparableChampion:
    """The lookup step: the champion of ``model_name``, re-scored on this run's test split.

    Args:
        registry: the registry.
        model_name: the (resolved) model name.
        prepared: this run's splits (None: figures as registered, no problem check).
        gcs_mount: where ``gs://`` is mounted, to read a Vertex champion's files.

    Returns:
        See :func:`comparable_champion`.
    """

    def rescorer(version: RegisteredVersion) -> dict[str, Any]:
        assert prepared is not None
        return rescore(version, prepared, gcs_mount=gcs_mount)

    return comparable_champion(
        registry.champion(model_name), run_problem(prepared), rescorer, model_name
    )


def champion_check(
    challenger_metrics: Mapping[str, Any],
    *,
    problem: Problem | None,
    prepared: PreparedData | None,
    compared_version: str,
    metric: str,
    min_value: float,
    tolerance: float,
    gcs_mount: str | Path = "/gcs",
) -> ChampionCheck:
    """The register step's compare-and-set rule (re-scores with ``prepared`` when given)."""
    rescorer = None
    if prepared is not None:
        split = prepared

        def rescorer(version: RegisteredVersion) -> dict[str, Any]:
            return rescore(version, split, gcs_mount=gcs_mount)

    return ChampionCheck(
        problem,
        dict(challenger_metrics),
        compared_version,
        metric,
        min_value,
        tolerance,
        rescorer,
    )


@dataclasses.dataclass(frozen=True)
class ChampionCheck:
    """The compare-and-set rule a registry applies when it is about to move ``champion``.

    Attributes:
        problem: this run's problem (a champion of another problem is no obstacle); None
            when unknown (every champion counts).
        challenger_metrics: the challenger's metrics (the evaluate step's ``metrics.json``).
        compared_version: the champion version the lookup step saw ('' when there was none),
            whether it counted (compared on this run's rows) or was ignored (another problem,
            unreadable): while it is still champion, the gate's verdict stands.
        metric: the gate's metric.
        min_value: the gate's minimum.
        tolerance: the gate's tolerance.
        rescorer: scores a champion promoted since the gate on this run's test split; None
            when the registration cannot score models (then such a champion is kept).
    """

    problem: Problem | None
    challenger_metrics: Mapping[str, Any]
    compared_version: str = ""
    metric: str = "macro_f1"
    min_value: float = 0.0
    tolerance: float = 0.0
    rescorer: Rescorer | None = None

    def __call__(self, current: RegisteredVersion | None) -> PromotionDecision:
        """Decide, given the champion read at promotion time (None: no champion)."""
        from vertex_imbalanced.evaluation.gate import decide

        if current is None or (
            self.problem is not None and not same_problem(current, self.problem)
        ):
            gated = decide(
                self.challenger_metrics, None, self.metric, self.min_value, self.tolerance
            )
            other = (
                "" if current is None else f" (version {current.version} solves another problem)"
            )
            return PromotionDecision(
                gated.passed, f"no champion of this problem{other}; {gated.reason}"
            )
        if current.version == self.compared_version:
            return PromotionDecision(
                True, f"champion is still version {current.version}, the one the gate saw"
            )
        since = f"version {current.version} became champion after the gate saw " + (
            f"version {self.compared_version}" if self.compared_version else "no champion"
        )
        if self.rescorer is None:
            return PromotionDecision(
                False, f"{since}; it cannot be re-scored here, so it stays champion"
            )
        try:
            theirs = self.rescorer(current)
        except (PipelineInputError, LabelError) as err:
            return PromotionDecision(
                False, f"{since}; re-scoring it failed ({err}), so it stays champion"
            )
        gated = decide(self.challenger_metrics, theirs, self.metric, self.min_value, self.tolerance)
        verdict = "promoted" if gated.passed else "not promoted"
        return PromotionDecision(
            gated.passed, f"{since}; re-scored on this run's test split: {gated.reason}; {verdict}"
        )
