"""Where a run comes from: the git commit of the checkout, recorded as a model label."""

from __future__ import annotations

import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def current_git_commit() -> str:
    """Short commit of the checkout this runs from ('' outside git, '-dirty' if modified)."""
    here = _ROOT
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    if sha.returncode != 0:
        return ""
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
