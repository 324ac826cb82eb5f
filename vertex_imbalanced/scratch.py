"""Local scratch directories that name their process, so a later process removes a dead one's.

A process killed by a signal (a preempted Vertex task, a killed ``run_local.py``, a SIGTERM
while a checkpoint is written) runs no ``finally`` and leaves its temporary directories in
TMPDIR. Directories made by :func:`scratch_directory` are named ``<prefix><pid>-<random>``;
:func:`remove_dead_scratch` deletes those whose process no longer exists (a live or reused
pid keeps its directories: nothing another process may be using is removed).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scratch_directory(prefix: str) -> str:
    """A new directory ``<TMPDIR>/<prefix><pid>-<random>``; the caller removes it when done."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def remove_dead_scratch(prefix: str) -> list[Path]:
    """Remove the ``prefix`` scratch directories of processes that are gone; return them.

    Raises:
        ValueError: an empty prefix or one with a path separator.
    """
    if not prefix or os.sep in prefix:
        raise ValueError(f"scratch prefix must be a plain name, got {prefix!r}")
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[^/]+$")
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        match = pattern.match(path.name)
        if match and path.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
