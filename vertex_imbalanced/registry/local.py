"""A model registry in a directory: the embedded default for local pipeline runs.

Layout (file names from :mod:`vertex_imbalanced.artifacts`)::

    <root>/<model_name>/
        aliases.json          # {"champion": "2", "challenger": "3"}, replaced atomically
        .lock                 # fcntl lock: version numbers, run-id check, alias moves
        1/ model/ metrics.json labels.json run_id COMPLETE
        2/ ...

Publishing renames no directory (Cloud Storage FUSE refuses to rename a non-empty directory
unless its mount allows it): under the lock a version directory is created with a ``.writer``
file naming the process; the model and the files are written in place, and the completion
marker ``COMPLETE`` is written last. Every reader lists only versions holding the marker, so a
crash never leaves a half-written version visible; the next registration removes directories
left incomplete by dead processes. Aliases move under the lock, only to complete versions.

Promotion is a compare-and-set: with a ``promotion`` rule, ``register`` re-reads the champion
under the lock and gives the new version ``champion`` only if the rule still says it beats the
champion of that moment (a run that overlapped ours may have promoted a better model since our
gate ran); otherwise the version is registered without the alias.

The lock is an ``fcntl`` lock, shared by the processes of one machine; on ``/gcs`` (gcsfuse,
one mount per machine) it does not reach other machines, so one registry directory on Cloud
Storage must be written by one machine at a time. Load the champion with one line::

    LocalRegistry("build/registry").champion("my-model")
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vertex_imbalanced.artifacts import (
    METRICS_FILE,
    REGISTRY_ALIASES_FILE,
    REGISTRY_COMPLETE_FILE,
    REGISTRY_LABELS_FILE,
    REGISTRY_MODEL_DIR,
    REGISTRY_RUN_ID_FILE,
)
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.base import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    PromotionDecision,
    PromotionRule,
    RegisteredVersion,
    find_saved_model,
)
from vertex_imbalanced.scratch import pid_alive

_LOG = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS_RE = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_TMP_PREFIX = ".tmp-"
_WRITER_FILE = ".writer"
COMPLETE_MARKER = REGISTRY_COMPLETE_FILE
"""Written last into a version directory; readers list only versions that hold it."""


def validate_model_name(name: str) -> str:
    """Return ``name`` if it can name a model directory.

    Raises:
        PipelineInputError: if it is empty, too long or has characters other than letters,
            digits, ``.``, ``_`` and ``-``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PipelineInputError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid run alias (Vertex's alias rules).

    Raises:
        PipelineInputError: if malformed, or one of the reserved ``champion`` / ``default``.
    """
    if alias in (CHAMPION_ALIAS, "default"):
        raise PipelineInputError(
            f"alias {alias!r} is reserved: pass make_champion=True to promote a version"
        )
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise PipelineInputError(
            f"invalid alias {alias!r}: use a lowercase letter, then letters, digits or '-' "
            "(2-128 characters, ending in a lowercase letter or digit)"
        )
    return alias


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class LocalRegistry:
    """Directory-backed registry implementing :class:`vertex_imbalanced.registry.base.Registry`.

    Args:
        root: the registry directory (created on first registration).
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------ reading
    def versions(self, model_name: str) -> list[RegisteredVersion]:
        """All registered versions of a model, oldest first ([] if none)."""
        return [self._load(model_name, v) for v in self._version_ids(model_name)]

    def aliases(self, model_name: str) -> dict[str, str]:
        """The alias -> version map of a model."""
        path = self.root / validate_model_name(model_name) / REGISTRY_ALIASES_FILE
        if not path.is_file():
            return {}
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))

    def get(self, model_name: str, version_or_alias: str) -> RegisteredVersion | None:
        """A version by number or alias, or None."""
        version = self.aliases(model_name).get(version_or_alias, version_or_alias)
        if version not in self._version_ids(model_name):
            return None
        return self._load(model_name, version)

    def champion(self, model_name: str) -> RegisteredVersion | None:
        """The version holding the ``champion`` alias, or None."""
        return self.get(model_name, CHAMPION_ALIAS)

    def _version_ids(self, model_name: str) -> list[str]:
        """Ids of the complete versions (holding the marker), oldest first."""
        model_root = self.root / validate_model_name(model_name)
        return sorted((p.name for p in _version_dirs(model_root) if _is_complete(p)), key=int)

    def _load(self, model_name: str, version: str) -> RegisteredVersion:
        vdir = self.root / model_name / version
        with open(vdir / METRICS_FILE, encoding="utf-8") as f:
            metrics = json.load(f)
        with open(vdir / REGISTRY_LABELS_FILE, encoding="utf-8") as f:
            labels = json.load(f)
        aliases = tuple(sorted(a for a, v in self.aliases(model_name).items() if v == version))
        return RegisteredVersion(
            name=model_name,
            version=version,
            uri=str(vdir),
            artifact_uri=str(vdir / REGISTRY_MODEL_DIR),
            aliases=aliases,
            metrics=metrics,
            labels=labels,
            run_id=(vdir / REGISTRY_RUN_ID_FILE).read_text(encoding="utf-8"),
        )

    # ------------------------------------------------------------------ writing
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
        """Copy ``model_dir`` into the registry as the next version of ``model_name``.

        The new version gets ``alias``; with ``make_champion`` it also takes ``champion`` from
        the previous holder, if ``promotion`` (called under the lock with the champion of that
        moment) agrees. Registering a ``run_id`` again returns its existing version; if that
        version is still the newest, the alias moves a crash may have skipped are redone.

        Args:
            model_name: the model (a directory name).
            model_dir: the model artifact directory (must hold a SavedModel).
            metrics: the evaluation metrics dict, stored as ``metrics.json``.
            labels: string labels stored as ``labels.json``.
            run_id: the pipeline run registering the model (idempotency key).
            make_champion: whether the version may become the champion.
            alias: the run's alias.
            promotion: the compare-and-set rule (None: promote whenever ``make_champion``).

        Returns:
            The registered version; ``promotion`` says what was decided about ``champion``.

        Raises:
            PipelineInputError: bad name, alias, run id, or a model dir without a SavedModel.
        """
        validate_model_name(model_name)
        validate_alias(alias)
        if not isinstance(run_id, str) or not run_id.strip():
            raise PipelineInputError("run_id must be a non-empty string")
        find_saved_model(model_dir)
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        json.dumps(metrics)  # fail before writing anything if metrics are not JSON

        model_root = self.root / model_name
        model_root.mkdir(parents=True, exist_ok=True)
        with self._locked(model_root):
            self._remove_stale(model_root)
            existing = self._version_of_run(model_name, run_id)
            if existing is None:
                vdir = _new_version_dir(model_root)
        if existing is not None:
            _LOG.info("run %s is already version %s of %s", run_id, existing, model_name)
            version = existing
        else:
            version = vdir.name
            try:
                _write_version(vdir, model_dir, metrics, labels, run_id)
            except BaseException:
                shutil.rmtree(vdir, ignore_errors=True)
                raise
        with self._locked(model_root):
            ids = self._version_ids(model_name)
            if existing is not None and version != ids[-1]:
                return self._load(model_name, version)  # newer versions exist: leave aliases
            note = self._move_aliases(model_root, version, alias, make_champion, promotion)
        registered = dataclasses.replace(self._load(model_name, version), promotion=note)
        _LOG.info("registered %s version %s %s", model_name, version, registered.aliases)
        if note:
            _LOG.info("%s", note)
        return registered

    def _version_of_run(self, model_name: str, run_id: str) -> str | None:
        ids = self._version_ids(model_name)
        return next((v for v in ids if self._run_id(model_name, v) == run_id), None)

    def _run_id(self, model_name: str, version: str) -> str:
        path = self.root / model_name / version / REGISTRY_RUN_ID_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def _move_aliases(
        self,
        model_root: Path,
        version: str,
        alias: str,
        make_champion: bool,
        promotion: PromotionRule | None,
    ) -> str:
        """Move ``alias`` (and maybe ``champion``) to ``version``; returns the promotion note.

        Called under the lock: the champion read here is the one replaced (compare-and-set).
        """
        current = self.aliases(model_root.name)
        wanted = dict(current)
        wanted[alias] = version
        note = ""
        if make_champion and current.get(CHAMPION_ALIAS) != version:
            holder = self.champion(model_root.name)
            decision = (
                promotion(holder)
                if promotion is not None
                else PromotionDecision(True, "promoted without a champion check")
            )
            note = decision.reason
            if decision.promote:
                wanted[CHAMPION_ALIAS] = version
            else:
                _LOG.warning("version %s registered without %r: %s", version, CHAMPION_ALIAS, note)
        if wanted != current:
            tmp = model_root / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.json"
            _write_json(tmp, wanted)
            os.replace(tmp, model_root / REGISTRY_ALIASES_FILE)  # a file, not a directory
        return note

    @staticmethod
    @contextlib.contextmanager
    def _locked(model_root: Path) -> Iterator[None]:
        with open(model_root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _remove_stale(model_root: Path) -> None:
        """Delete what processes that died mid-registration left (call under the lock)."""
        for entry in model_root.glob(_TMP_PREFIX + "*"):
            if not _writer_alive(entry.name[len(_TMP_PREFIX) :].split("-", 1)[0]):
                _LOG.warning("removing %s left by a crashed registration", entry)
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for vdir in _version_dirs(model_root):
            if _is_complete(vdir):
                continue
            writer = vdir / _WRITER_FILE
            pid = writer.read_text(encoding="utf-8").strip() if writer.is_file() else ""
            # A directory without a writer file was created by a process that died before
            # writing it: directories and writer files are only created under this lock.
            if not _writer_alive(pid):
                _LOG.warning("removing incomplete version %s left by a dead process", vdir)
                shutil.rmtree(vdir, ignore_errors=True)


def _version_dirs(model_root: Path) -> list[Path]:
    if not model_root.is_dir():
        return []
    return [p for p in model_root.iterdir() if p.name.isdigit() and p.is_dir()]


def _is_complete(vdir: Path) -> bool:
    """Whether a version directory is published (its marker exists).

    Versions published before the marker existed (whole-directory renames) have neither the
    marker nor a writer file, and are complete.
    """
    if (vdir / COMPLETE_MARKER).is_file():
        return True
    return not (vdir / _WRITER_FILE).exists() and (vdir / REGISTRY_RUN_ID_FILE).is_file()


def _writer_alive(pid_text: str) -> bool:
    return pid_text.isdigit() and pid_alive(int(pid_text))


def _new_version_dir(model_root: Path) -> Path:
    """Create the next version directory and its writer file (call under the lock)."""
    taken = [int(p.name) for p in _version_dirs(model_root)]
    vdir = model_root / str(max(taken, default=0) + 1)
    vdir.mkdir()
    (vdir / _WRITER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    return vdir


def _write_version(
    vdir: Path, model_dir: str, metrics: dict[str, Any], labels: dict[str, str], run_id: str
) -> None:
    """Write a version's files in place, the completion marker last."""
    shutil.copytree(model_dir, vdir / REGISTRY_MODEL_DIR, symlinks=False)
    _write_json(vdir / METRICS_FILE, metrics)
    _write_json(vdir / REGISTRY_LABELS_FILE, labels)
    _write_text(vdir / REGISTRY_RUN_ID_FILE, run_id)
    _write_text(vdir / COMPLETE_MARKER, run_id)
