"""Write the model directory of the train step (layout: :mod:`vertex_imbalanced.artifacts`).

::

    <model_dir>/saved_model/          serving_default: raw features -> probabilities, class_id,
                                      class_name (the decision rule applied)
    <model_dir>/model.keras           the probability model for Keras users
    <model_dir>/model_metadata.json   spec, classes, decision rule, serving input names,
                                      hyperparameters, budget, training facts

**What each form returns.** ``serving_default`` takes one rank-1 tensor per feature under its
*serving name* (``model_metadata.json["serving_inputs"]``, see
:mod:`vertex_imbalanced.training.serving_names`; the column name itself unless BigQuery allows
a name a signature cannot take) and returns ``probabilities`` (float32 ``[n, C]``, calibrated to
the true class prior, never changed by the rule), ``class_id`` (int64 ``[n]``, the decision
``argmax(probabilities @ A)`` of the rule stored under ``decision_rule``, computed in float64,
ties to the lowest id) and ``class_name`` (string ``[n]``, ``classes[class_id]``).
``model.keras`` takes the feature dict keyed by the **column** names and returns the same
probabilities only; its decision is
``DecisionRule.from_dict(metadata["decision_rule"]).apply(probabilities)``
(:mod:`vertex_imbalanced.evaluation.decision_rule`), which equals the served ``class_id``.

**Publishing without a directory rename.** gcsfuse (``/gcs`` on Vertex AI) refuses to rename a
non-empty directory unless the mount allows it, so the model is not staged elsewhere and renamed:
:func:`model_dir_in_place` has the files written in place under ``<model_dir>`` and, last, the
completion marker ``<model_dir>/_COMPLETE``
(:data:`vertex_imbalanced.artifacts.MODEL_COMPLETE_FILE`, written to a temporary file and
renamed: a file rename, which gcsfuse supports). Every reader checks the marker
(:func:`vertex_imbalanced.artifacts.check_model_complete`): a directory without it is the
leftover of a killed run. A rerun removes such leftovers (our own files only, and the
``<model_dir>.partial`` staging directory of older versions) and writes afresh; a failure
removes what it wrote. Only the chief worker keeps what it wrote; the other workers take part
in collective saves but write into a scratch directory that is always removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from vertex_imbalanced.artifacts import (
    KERAS_FILE,
    MODEL_COMPLETE_FILE,
    MODEL_METADATA_FILE,
    SAVED_MODEL_DIR,
    is_model_complete,
)
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.checkpoint import write_atomic
from vertex_imbalanced.training.model import CLASS_ID, CLASS_NAME, PROBABILITIES
from vertex_imbalanced.training.serving_names import serving_names
from vertex_imbalanced.training.strategy import WorkerInfo

__all__ = [
    "check_output_dir",
    "export_model",
    "export_saved_model",
    "model_dir_in_place",
    "staging_path",
]

LOGS_DIR = "logs"
_FEATURE_STATISTICS_FILE = "feature_statistics.json"  # monitoring.statistics' name
MODEL_DIR_ENTRIES = frozenset(
    {
        SAVED_MODEL_DIR,
        KERAS_FILE,
        MODEL_METADATA_FILE,
        LOGS_DIR,
        _FEATURE_STATISTICS_FILE,
        MODEL_COMPLETE_FILE,
    }
)
"""What the train step writes into a model directory (a leftover holding only these is ours)."""


def staging_path(model_dir: str | Path) -> Path:
    """``<model_dir>.partial``: where older versions staged the model (removed as a leftover)."""
    model_dir = Path(model_dir)
    return model_dir.with_name(f"{model_dir.name}.partial")


def _ours(name: str) -> bool:
    return name in MODEL_DIR_ENTRIES or name.endswith(".tmp")


def check_output_dir(model_dir: str | Path) -> None:
    """Refuse an output directory that is not ours to write (before any work).

    Accepted: a missing or empty directory, or the leftover of a killed run (no completion
    marker, only files the train step writes), which :func:`model_dir_in_place` clears.

    Raises:
        PipelineInputError: the directory holds a complete model, or files the train step
            does not write.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        if model_dir.exists():
            raise PipelineInputError(f"output directory {model_dir} is a file")
        return
    if is_model_complete(model_dir):
        raise PipelineInputError(
            f"output directory {model_dir} already holds a complete model ({MODEL_COMPLETE_FILE})"
        )
    foreign = sorted(p.name for p in model_dir.iterdir() if not _ours(p.name))
    if foreign:
        raise PipelineInputError(
            f"output directory {model_dir} already exists and is not empty: it holds "
            f"{foreign[:5]}, which the train step does not write"
        )


def _remove_ours(model_dir: Path) -> None:
    """Remove the train step's files from ``model_dir``, then ``model_dir`` once empty.

    Entries are removed one by one (no directory rename); other files are left alone.
    """
    if not model_dir.is_dir():
        return
    for entry in model_dir.iterdir():
        if not _ours(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        model_dir.rmdir()  # only when empty


@contextlib.contextmanager
def model_dir_in_place(model_dir: str | Path, worker: WorkerInfo) -> Iterator[Path]:
    """Yield the directory to write the model into; on success mark it complete.

    Args:
        model_dir: the model directory, checked by :func:`check_output_dir` before any work.
        worker: this process's place among the training workers; only the chief writes
            ``model_dir`` (the others a scratch directory, always removed).

    Yields:
        ``model_dir`` itself on the chief (a killed run's leftovers, and the
        ``<model_dir>.partial`` directory of older versions, removed first), a scratch
        directory on other workers. When the body returns, the chief writes the completion
        marker last (a file written under a temporary name and renamed).

    Raises:
        Whatever the body raises, after removing what was written.
    """
    model_dir = Path(model_dir)
    if worker.is_chief:
        shutil.rmtree(staging_path(model_dir), ignore_errors=True)  # older versions' staging
        _remove_ours(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        directory = model_dir
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"worker{worker.index}-"))
    try:
        yield directory
        if worker.is_chief:
            files = sorted(
                str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
            )
            marker = json.dumps({"files": files}, indent=1).encode()
            write_atomic(str(directory / MODEL_COMPLETE_FILE), marker)
    except BaseException:
        if worker.is_chief:
            _remove_ours(directory)
        raise
    finally:
        if not worker.is_chief:
            shutil.rmtree(directory, ignore_errors=True)


def export_model(
    model: keras.Model,
    spec: FeatureSpec,
    metadata: Mapping[str, Any],
    directory: str | Path,
) -> None:
    """Write ``model.keras``, ``saved_model/`` and ``model_metadata.json`` into ``directory``.

    The signature applies ``metadata["decision_rule"]`` (argmax when absent) and names its
    outputs with ``metadata["classes"]``.

    Args:
        model: the classifier taking the raw feature dict (float32 numeric, string categorical
            ``[n]`` tensors, keyed by column name) and returning probabilities ``[n, C]``.
        spec: the serving feature roles (no weight column): the SavedModel's input signature.
        metadata: the JSON-safe content of ``model_metadata.json`` (``classes`` required).
        directory: an existing directory; a ``saved_model/`` left by a killed run is replaced.
    """
    directory = Path(directory)
    model.save(directory / KERAS_FILE)
    shutil.rmtree(directory / SAVED_MODEL_DIR, ignore_errors=True)  # left by a killed run
    matrix = (metadata.get("decision_rule") or {}).get("matrix")
    export_saved_model(
        model, spec, str(directory / SAVED_MODEL_DIR), metadata["classes"], decision_matrix=matrix
    )
    text = json.dumps(dict(metadata), indent=2, sort_keys=True)
    (directory / MODEL_METADATA_FILE).write_text(text)


def export_saved_model(
    model: keras.Model,
    spec: FeatureSpec,
    path: str,
    classes: Sequence[str] | None = None,
    *,
    decision_matrix: Sequence[Sequence[float]] | None = None,
) -> None:
    """Write a SavedModel whose ``serving_default`` takes the raw features by serving name.

    Outputs: ``probabilities`` (float32 ``[n, C]``), ``class_id`` (int64 ``[n]``,
    ``argmax(probabilities @ decision_matrix)`` in float64, ties to the lowest id; plain argmax
    without a matrix) and ``class_name`` (string ``[n]``).

    Args:
        model: the trained classifier (raw feature dict keyed by column name in, probabilities
            out).
        spec: feature roles; one rank-1 input per feature (float32 numeric, string categorical)
            named by :func:`vertex_imbalanced.training.serving_names.serving_names`.
        path: directory to write (must not exist yet).
        classes: class names in id order (``C`` of them); None: ``"0"``, ``"1"``, ...
        decision_matrix: the decision rule's ``A`` (``C x C``), None for argmax.

    Raises:
        ValueError: the matrix is not ``C x C``.
    """
    import numpy as np
    import tensorflow as tf

    if classes is None:
        classes = [str(i) for i in range(int(model.outputs[0].shape[-1]))]
    names = serving_names(spec.features)
    signature = {
        names[c]: tf.TensorSpec([None], tf.float32, name=names[c]) for c in spec.numeric
    } | {names[c]: tf.TensorSpec([None], tf.string, name=names[c]) for c in spec.categorical}
    class_names = tf.constant([str(c) for c in classes], tf.string)
    matrix = None
    if decision_matrix is not None:
        matrix = np.asarray(decision_matrix, np.float64)
        if matrix.shape != (len(classes), len(classes)):
            raise ValueError(f"decision matrix of shape {matrix.shape} for {len(classes)} classes")
        if np.array_equal(matrix, np.eye(len(classes))):
            matrix = None  # argmax: exactly tf.argmax of the probabilities

    def serve(inputs):
        features = {column: inputs[served] for column, served in names.items()}
        probabilities = tf.cast(model(features, training=False), tf.float32)
        scores = probabilities
        if matrix is not None:
            scores = tf.matmul(tf.cast(probabilities, tf.float64), tf.constant(matrix))
        class_id = tf.argmax(scores, axis=-1, output_type=tf.int64)
        return {
            PROBABILITIES: probabilities,
            CLASS_ID: class_id,
            CLASS_NAME: tf.gather(class_names, class_id),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[signature])
    archive.write_out(path, verbose=False)
