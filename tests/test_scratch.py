"""Scratch directories of killed processes are removed by the next process (issue 13 item 15).

A process killed while it saves a checkpoint or re-scores a champion runs no ``finally``; its
directory names its pid, and the next checkpoint or lookup removes it once that pid is gone.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import pytest

from vertex_imbalanced.registry.champion import RESCORE_PREFIX
from vertex_imbalanced.scratch import pid_alive, remove_dead_scratch, scratch_directory
from vertex_imbalanced.training.checkpoint import SCRATCH_PREFIX, TrainingCheckpoint
from vertex_imbalanced.training.early_stopping import ResumableEarlyStopping

KILLED_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from vertex_imbalanced.scratch import scratch_directory
print(scratch_directory({prefix!r}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: as a preempted or killed step
"""


@pytest.fixture
def tmpdir_here(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def killed_process_scratch(prefix: str) -> str:
    """Run a process that makes a scratch directory and is SIGKILLed; return the directory."""
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD.format(root=root, prefix=prefix)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    return done.stdout.strip()


def test_only_the_directories_of_dead_processes_are_removed(tmpdir_here):
    dead = killed_process_scratch(SCRATCH_PREFIX)
    mine = scratch_directory(SCRATCH_PREFIX)
    other_prefix = killed_process_scratch(RESCORE_PREFIX)
    unrelated = tmpdir_here / f"{SCRATCH_PREFIX}worker1-abc"  # not <prefix><pid>-
    unrelated.mkdir()
    pid = int(dead.rsplit("/", 1)[1][len(SCRATCH_PREFIX) :].split("-")[0])
    assert not pid_alive(pid)
    assert [str(p) for p in remove_dead_scratch(SCRATCH_PREFIX)] == [dead]
    assert not os.path.exists(dead)
    assert all(os.path.isdir(p) for p in (mine, other_prefix, unrelated))
    with pytest.raises(ValueError, match="plain name"):
        remove_dead_scratch("../checkpoint-")


def test_a_new_checkpoint_clears_what_a_killed_save_left(tmpdir_here, tmp_path):
    left = killed_process_scratch(SCRATCH_PREFIX)
    assert os.path.isdir(left)
    early_stopping = ResumableEarlyStopping(monitor="val_loss", patience=2)
    checkpoint = TrainingCheckpoint(str(tmp_path / "backup"), early_stopping)
    assert not os.path.exists(left)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint.set_model(model)
    assert checkpoint._keras_state()  # saves through a scratch directory of its own ...
    assert not list(tmpdir_here.glob(f"{SCRATCH_PREFIX}*"))  # ... and removes it
