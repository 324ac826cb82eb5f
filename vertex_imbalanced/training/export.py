"""Write the model directory of the train step (layout: :mod:`vertex_imbalanced.artifacts`).

::

    <model_dir>/saved_model/          serving_default: raw features -> probabilities, class_id
    <model_dir>/model.keras           the same model for Keras users
    <model_dir>/model_metadata.json   spec, classes, hyperparameters, training facts

:func:`staged_model_dir` makes the directory appear whole or not at all: everything is written
into ``<model_dir>.partial`` and renamed at the end; a failure removes the staging directory.
Only the chief worker keeps what it wrote; the other workers take part in collective saves but
write into a scratch directory that is always removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras

from vertex_imbalanced.artifacts import KERAS_FILE, MODEL_METADATA_FILE, SAVED_MODEL_DIR
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.training.model import CLASS_ID, PROBABILITIES
from vertex_imbalanced.training.strategy import WorkerInfo

__all__ = ["export_model", "export_saved_model", "staged_model_dir", "staging_path"]


def staging_path(model_dir: str | Path) -> Path:
    """The staging directory of ``model_dir``: ``<model_dir>.partial`` beside it."""
    model_dir = Path(model_dir)
    return model_dir.with_name(f"{model_dir.name}.partial")


@contextlib.contextmanager
def staged_model_dir(model_dir: str | Path, worker: WorkerInfo) -> Iterator[Path]:
    """Yield a directory to write the model into; on success it becomes ``model_dir``.

    Args:
        model_dir: the directory to create; it must not exist or be empty (the caller checks
            this before any work, so a bad path fails first).
        worker: this process's place among the training workers; only the chief's directory
            is renamed to ``model_dir``.

    Yields:
        The chief's staging directory ``<model_dir>.partial`` (a leftover of a killed run is
        reused), or a scratch directory on other workers.

    Raises:
        Whatever the body raises, after removing the staging directory.
    """
    model_dir = Path(model_dir)
    if worker.is_chief:
        staging = staging_path(model_dir)
        staging.mkdir(parents=True, exist_ok=True)
    else:
        staging = Path(tempfile.mkdtemp(prefix=f"worker{worker.index}-"))
    try:
        yield staging
        if worker.is_chief:
            if model_dir.exists():
                model_dir.rmdir()  # empty (checked by the caller)
            os.replace(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if not worker.is_chief:
            shutil.rmtree(staging, ignore_errors=True)


def export_model(
    model: keras.Model, spec: FeatureSpec, metadata: Mapping[str, Any], directory: str | Path
) -> None:
    """Write ``model.keras``, ``saved_model/`` and ``model_metadata.json`` into ``directory``.

    Args:
        model: the classifier taking the raw feature dict (float32 numeric, string categorical
            ``[n]`` tensors) and returning probabilities ``[n, C]``.
        spec: the serving feature roles (no weight column): the SavedModel's input signature.
        metadata: the JSON-safe content of ``model_metadata.json``.
        directory: an existing directory; a ``saved_model/`` left by a killed run is replaced.
    """
    directory = Path(directory)
    model.save(directory / KERAS_FILE)
    shutil.rmtree(directory / SAVED_MODEL_DIR, ignore_errors=True)  # left by a killed run
    export_saved_model(model, spec, str(directory / SAVED_MODEL_DIR))
    text = json.dumps(dict(metadata), indent=2, sort_keys=True)
    (directory / MODEL_METADATA_FILE).write_text(text)


def export_saved_model(model: keras.Model, spec: FeatureSpec, path: str) -> None:
    """Write a SavedModel whose ``serving_default`` takes the raw feature dict.

    Outputs: ``probabilities`` (float32 ``[n, C]``) and ``class_id`` (int64 ``[n]``).

    Args:
        model: the trained classifier (raw feature dict in, probabilities out).
        spec: feature roles; one rank-1 input per feature (float32 numeric, string categorical).
        path: directory to write (must not exist yet).
    """
    import tensorflow as tf

    from vertex_imbalanced.reading.datasets import feature_signature

    def serve(features):
        probabilities = tf.cast(model(features, training=False), tf.float32)
        return {PROBABILITIES: probabilities, CLASS_ID: tf.argmax(probabilities, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default", fn=serve, input_signature=[feature_signature(spec)]
    )
    archive.write_out(path, verbose=False)
