"""The trainer publishes its model directory without renaming a directory (gcsfuse refuses).

The file system is wrapped so that renaming or moving a directory fails as on a gcsfuse mount
without ``rename-dir-limit`` (OSError EXDEV); file renames work. The model is written in place
and marked complete last; readers check the marker; a killed run's leftovers are cleared.
"""

import errno
import json
import os
import shutil

import pytest

from vertex_imbalanced.artifacts import (
    MODEL_COMPLETE_FILE,
    check_model_complete,
    is_model_complete,
)
from vertex_imbalanced.config import WEIGHT_COLUMN, Hyperparameters
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.evaluation.evaluate import load_model
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.trainer import train_model
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table

CLASSES = ("0", "1", "2")
HP = Hyperparameters(hidden_units=(4,), epochs=1, batch_size=128, early_stopping_patience=2)


@pytest.fixture
def no_directory_renames(monkeypatch):
    """Directory renames and moves fail like on gcsfuse; file renames work."""
    refused = []

    def guard(real):
        def call(src, dst, *args, **kwargs):
            if os.path.isdir(src):
                refused.append((str(src), str(dst)))
                raise OSError(errno.EXDEV, "gcsfuse: renaming a non-empty directory", str(src))
            return real(src, dst, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "rename", guard(os.rename))
    monkeypatch.setattr(os, "replace", guard(os.replace))
    monkeypatch.setattr(shutil, "move", guard(shutil.move))
    return refused


def train(out, backup=None):
    import numpy as np
    import pyarrow as pa

    table = demo_table(600, seed=1)
    table = table.append_column(WEIGHT_COLUMN, pa.array(np.ones(600), pa.float64()))
    return train_model(
        ArrowTableSource(table, name="train"),
        ArrowTableSource(demo_table(300, seed=2), name="validation"),
        DEMO_SPEC.with_weight(WEIGHT_COLUMN),
        CLASSES,
        HP,
        out,
        backup_dir=backup,
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_model_is_published_in_place_with_the_marker_last_and_leftovers_cleared(
    tmp_path, no_directory_renames
):
    out = tmp_path / "model"
    # leftovers of killed runs: an older version's staging dir, an incomplete model dir
    (tmp_path / "model.partial" / "saved_model").mkdir(parents=True)
    (tmp_path / "model.partial" / "model.keras").write_bytes(b"half")
    out.mkdir()
    (out / "model.keras").write_bytes(b"half")
    (out / "saved_model").mkdir()
    (out / "model_metadata.json.tmp").write_text("{")
    with pytest.raises(PipelineInputError, match=r"model.*is incomplete.*_COMPLETE"):
        check_model_complete(out)

    result = train(out, backup=str(tmp_path / "backup"))

    assert no_directory_renames == []  # nothing tried to rename a directory
    assert result.model_dir == out and is_model_complete(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # leftovers gone
    marker = json.loads((out / MODEL_COMPLETE_FILE).read_text())
    assert "model_metadata.json" in marker["files"] and "model.keras" in marker["files"]
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))
    assert load_model(out).classes == CLASSES  # a reader accepts it

    # a complete model is never overwritten; a directory with foreign files is refused
    with pytest.raises(PipelineInputError, match=r"already holds a complete model"):
        train(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PipelineInputError, match=r"notes\.txt.*train step does not write"):
        train(other)
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_run_that_fails_after_writing_leaves_no_model_files(tmp_path, monkeypatch):
    from pathlib import Path

    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):  # the disk fills up at the metadata file
        if self.name == "model_metadata.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError, match="No space left"):
        train(tmp_path / "model")
    assert not (tmp_path / "model").exists()
