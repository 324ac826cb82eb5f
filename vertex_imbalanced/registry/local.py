"""A model registry in a directory: the embedded default for local pipeline runs.

Layout (file names from :mod:`vertex_imbalanced.artifacts`)::

    <root>/<model_name>/
        aliases.json          # {"champion": "2", "challenger": "3"}, replaced atomically
        .lock                 # fcntl lock taken while a version is published
        1/ model/ metrics.json labels.json run_id
        2/ ...

A version is written into a hidden ``.tmp-<pid>-<hex>`` directory and renamed into place last,
so a crash never leaves a half-written version visible; the rename happens under an exclusive
``fcntl`` lock, which also makes version numbers and the run-id check safe when several
processes register at once. Load the champion with one line::

    LocalRegistry("build/registry").champion("my-model")
"""

from __future__ import annotations

import contextlib
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
    REGISTRY_LABELS_FILE,
    REGISTRY_MODEL_DIR,
    REGISTRY_RUN_ID_FILE,
)
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.base import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    RegisteredVersion,
    find_saved_model,
)

_LOG = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS_RE = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_TMP_PREFIX = ".tmp-"


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        model_root = self.root / validate_model_name(model_name)
        if not model_root.is_dir():
            return []
        ids = [p.name for p in model_root.iterdir() if p.name.isdigit() and p.is_dir()]
        return sorted(ids, key=int)

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
    ) -> RegisteredVersion:
        """Copy ``model_dir`` into the registry as the next version of ``model_name``.

        The new version gets ``alias``; with ``make_champion`` it also takes ``champion`` from
        the previous holder. Registering a ``run_id`` again returns its existing version; if
        that version is still the newest, the alias moves a crash may have skipped are redone.

        Args:
            model_name: the model (a directory name).
            model_dir: the model artifact directory (must hold a SavedModel).
            metrics: the evaluation metrics dict, stored as ``metrics.json``.
            labels: string labels stored as ``labels.json``.
            run_id: the pipeline run registering the model (idempotency key).
            make_champion: whether the version becomes the champion.
            alias: the run's alias.

        Returns:
            The registered version.

        Raises:
            PipelineInputError: bad name, alias, run id, or a model dir without a SavedModel.
        """
        validate_model_name(model_name)
        validate_alias(alias)
        if not isinstance(run_id, str) or not run_id.strip():
            raise PipelineInputError("run_id must be a non-empty string")
        find_saved_model(model_dir)
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        json.dumps(metrics)  # fail before copying anything if metrics are not JSON

        model_root = self.root / model_name
        model_root.mkdir(parents=True, exist_ok=True)
        tmp = model_root / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            shutil.copytree(model_dir, tmp / REGISTRY_MODEL_DIR, symlinks=False)
            _write_json(tmp / METRICS_FILE, metrics)
            _write_json(tmp / REGISTRY_LABELS_FILE, labels)
            (tmp / REGISTRY_RUN_ID_FILE).write_text(run_id, encoding="utf-8")
            with self._locked(model_root):
                self._remove_stale_tmp(model_root, keep=tmp)
                ids = self._version_ids(model_name)
                existing = next((v for v in ids if self._run_id(model_name, v) == run_id), None)
                if existing is not None:
                    _LOG.info("run %s is already version %s of %s", run_id, existing, model_name)
                    version = existing
                    if version != ids[-1]:
                        return self._load(model_name, version)
                else:
                    version = str(int(ids[-1]) + 1 if ids else 1)
                    os.rename(tmp, model_root / version)
                self._move_aliases(model_root, version, alias, make_champion)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        registered = self._load(model_name, version)
        _LOG.info("registered %s version %s %s", model_name, version, registered.aliases)
        return registered

    def _run_id(self, model_name: str, version: str) -> str:
        path = self.root / model_name / version / REGISTRY_RUN_ID_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def _move_aliases(
        self, model_root: Path, version: str, alias: str, make_champion: bool
    ) -> None:
        current = self.aliases(model_root.name)
        wanted = dict(current)
        wanted[alias] = version
        if make_champion:
            wanted[CHAMPION_ALIAS] = version
        if wanted != current:
            tmp = model_root / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.json"
            _write_json(tmp, wanted)
            os.replace(tmp, model_root / REGISTRY_ALIASES_FILE)

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
    def _remove_stale_tmp(model_root: Path, keep: Path) -> None:
        """Delete temp entries left by processes that died mid-registration."""
        for entry in model_root.glob(_TMP_PREFIX + "*"):
            if entry == keep:
                continue
            pid_text = entry.name[len(_TMP_PREFIX) :].split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                _LOG.warning("removing %s left by a crashed registration", entry)
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
