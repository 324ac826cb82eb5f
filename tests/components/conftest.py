"""Fixtures shared by the component tests (run under kfp.local in this interpreter)."""

import pytest
from kfp import local

from vertex_imbalanced.artifacts import MODEL_COMPLETE_FILE


@pytest.fixture
def local_kfp(tmp_path):
    """kfp.local with the SubprocessRunner in the current env; returns the pipeline root."""
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture
def model_dir(tmp_path):
    """A model directory the registries accept (they check for saved_model.pb and copy it)."""
    root = tmp_path / "model"
    (root / "saved_model").mkdir(parents=True)
    (root / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / MODEL_COMPLETE_FILE).write_text("{}")  # the train step's completion marker
    return root
