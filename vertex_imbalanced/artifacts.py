"""The artifact layouts steps hand to each other: one home for every file name.

Every step, registry, entry point and test imports these names; none spells a file name itself.

Model directory (written by the train step, read by evaluate, register and batch prediction)::

    <model_dir>/saved_model/            SavedModel, signature ``serving_default`` (raw rows in)
    <model_dir>/model.keras             the same model for Keras users
    <model_dir>/model_metadata.json     spec, classes, vocabularies, training facts

Evaluation directory (written by the evaluate step, read by gate, register and the summary)::

    <evaluation_dir>/metrics.json             our metrics (docs/ARCHITECTURE.md lists the keys)
    <evaluation_dir>/vertex_evaluation.json   the same in Vertex's ModelEvaluation schema
    <evaluation_dir>/report.html              self-contained HTML report

Prepared data (written by the prepare step): one JSON file,
:class:`vertex_imbalanced.warehouse.prepare.PreparedData` (its ``read`` and ``to_json``).
"""

from __future__ import annotations

from pathlib import Path

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
MODEL_METADATA_FILE = "model_metadata.json"

METRICS_FILE = "metrics.json"
VERTEX_EVALUATION_FILE = "vertex_evaluation.json"
REPORT_FILE = "report.html"


def metrics_path(evaluation: str | Path) -> Path:
    """``metrics.json`` of an evaluation directory, or the path itself when it is a file."""
    path = Path(evaluation)
    return path / METRICS_FILE if path.is_dir() else path


def model_metadata_path(model_dir: str | Path) -> Path:
    """``model_metadata.json`` of a model directory."""
    return Path(model_dir) / MODEL_METADATA_FILE
