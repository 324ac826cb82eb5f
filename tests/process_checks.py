"""Helpers of the tests that stop real processes: is a process alive, what did it write."""

from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process (reads ``/proc``)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def snapshot(*roots) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``roots`` with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in Path(root).rglob("*")
        if p.exists()
    }
