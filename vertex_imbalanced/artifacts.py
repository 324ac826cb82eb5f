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

Local registry (:class:`vertex_imbalanced.registry.local.LocalRegistry`; a version's ``uri`` is
its version directory)::

    <root>/<model_name>/aliases.json                {"champion": "2", "challenger": "3"}
    <root>/<model_name>/<version>/model/            copy of the model directory (above)
    <root>/<model_name>/<version>/metrics.json      the metrics registered with the version
    <root>/<model_name>/<version>/labels.json       {key: value}
    <root>/<model_name>/<version>/run_id            the registering run's id (text)
    <root>/<model_name>/<version>/COMPLETE          written last (REGISTRY_COMPLETE_FILE)
"""

from __future__ import annotations

from pathlib import Path

SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_PROTO = "saved_model.pb"
"""The file TensorFlow writes in every SavedModel directory (TensorFlow's name, not ours)."""
KERAS_FILE = "model.keras"
MODEL_METADATA_FILE = "model_metadata.json"

METRICS_FILE = "metrics.json"
VERTEX_EVALUATION_FILE = "vertex_evaluation.json"
REPORT_FILE = "report.html"

REGISTRY_ALIASES_FILE = "aliases.json"
REGISTRY_MODEL_DIR = "model"
REGISTRY_LABELS_FILE = "labels.json"
REGISTRY_RUN_ID_FILE = "run_id"


def metrics_path(evaluation: str | Path) -> Path:
    """``metrics.json`` of an evaluation directory, or the path itself when it is a file."""
    path = Path(evaluation)
    return path / METRICS_FILE if path.is_dir() else path


def vertex_evaluation_path(evaluation: str | Path) -> Path:
    """``vertex_evaluation.json`` beside the :func:`metrics_path` of an evaluation artifact."""
    return metrics_path(evaluation).parent / VERTEX_EVALUATION_FILE


def model_metadata_path(model_dir: str | Path) -> Path:
    """``model_metadata.json`` of a model directory."""
    return Path(model_dir) / MODEL_METADATA_FILE


MODEL_COMPLETE_FILE = "_COMPLETE"
"""Completion marker of a model directory, written last by the train step (a file rename, never
a directory rename: gcsfuse refuses those). A model directory without it is a killed run's."""


def is_model_complete(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` (local, ``/gcs`` or ``gs://``) holds the completion marker."""
    path = f"{str(model_dir).rstrip('/')}/{MODEL_COMPLETE_FILE}"
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return Path(path).is_file()


def check_model_complete(model_dir: str | Path) -> None:
    """Refuse a model directory the train step did not finish (no :data:`MODEL_COMPLETE_FILE`).

    Raises:
        PipelineInputError: the marker is missing (names the directory).
    """
    if not is_model_complete(model_dir):
        from vertex_imbalanced.errors import PipelineInputError

        raise PipelineInputError(
            f"model directory {str(model_dir)!r} is incomplete: it has no {MODEL_COMPLETE_FILE} "
            "marker (the train step that wrote it did not finish; rerun the train step)"
        )


REGISTRY_COMPLETE_FILE = "COMPLETE"
"""Completion marker of a local registry version directory (``<root>/<model>/<version>/``),
written after every other file of the version; readers list only versions holding it
(:class:`vertex_imbalanced.registry.local.LocalRegistry`: publishing renames no directory)."""
