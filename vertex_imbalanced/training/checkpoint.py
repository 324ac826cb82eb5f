"""Training checkpoints that are complete or absent: two slots and a manifest written last.

Keras' ``BackupAndRestore`` keeps one ``latest.weights.h5`` that it rewrites in place every
epoch: a preemption (SIGTERM) while it is being written leaves it truncated and every retry
then fails to open it; and the early-stopping state was a second file written at another
moment, so a kill between the two left a pair from different epochs. :class:`TrainingCheckpoint`
replaces both with **double checkpointing**::

    <backup_dir>/manifest.json                {"format": 1, "slot": 0|1, "epochs_done": n,
                                               "stopped": bool, "files": {name: {bytes, sha256}}}
    <backup_dir>/slot-<s>/keras.weights.h5    model and optimizer variables (Keras' own format)
    <backup_dir>/slot-<s>/training_state.npz  early-stopping state (JSON), its best weights and
                                              the random-seed states (dropout)

Each save writes the slot the manifest does **not** name (the two slots alternate), syncs its
files, and then replaces ``manifest.json`` atomically (temporary file, ``fsync``,
``os.replace`` of a file, which gcsfuse supports; on ``gs://`` an object write is atomic by
itself). A restore reads the manifest and only the slot it names, and checks every file's size
and SHA-256 against it; a slot the manifest does not name (being written when the process died)
is ignored. A kill at any moment therefore leaves the previous consistent pair or the new one.
A checkpoint that fails its checks (storage damage) is logged and training starts afresh, which
gives the same result since training is deterministic.

Epoch semantics are those of ``BackupAndRestore(save_freq="epoch")``: a resumed ``fit`` starts
at the epoch after the last saved one; a run that had stopped (early stopping, planned epochs)
resumes with no epoch left to run, so only the end of training (best weights) runs again.

**Several workers** (``MultiWorkerMirroredStrategy``): every worker saves (reading the
variables may need all of them), but only the chief writes into ``backup_dir``; the others
write into their own temporary directory (``write_dir``, removed by :meth:`discard`), as
Keras/TensorFlow's ``distributed_file_utils.write_filepath`` does. Every worker restores from
``backup_dir``, so all resume from the chief's checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from typing import Any

import keras
import numpy as np

from vertex_imbalanced.scratch import remove_dead_scratch, scratch_directory
from vertex_imbalanced.training.early_stopping import ResumableEarlyStopping

__all__ = ["MANIFEST_FILE", "TrainingCheckpoint", "read_manifest"]

_LOG = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"
KERAS_STATE_FILE = "keras.weights.h5"
TRAINING_STATE_FILE = "training_state.npz"
_FORMAT = 1
SCRATCH_PREFIX = "checkpoint-"
"""Local scratch directories in which Keras serialises the weights (h5py needs a file); a
process killed while saving leaves its own, which the next checkpoint of any run removes
(:func:`vertex_imbalanced.scratch.remove_dead_scratch`)."""


def _is_remote(path: str) -> bool:
    return "://" in path


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def _exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _read(path: str) -> bytes:
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _makedirs(path: str) -> None:
    if _is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` and make it durable (``fsync``) before returning."""
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "wb") as f:  # an object appears whole on close
            f.write(data)
        return
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file ``path`` by ``data`` all at once: readers see the old or the new content.

    Local and FUSE paths: a temporary file beside it, ``fsync``, ``os.replace`` (a file
    rename), ``fsync`` of the directory. ``gs://``: one object write (atomic in GCS).
    """
    if _is_remote(path):
        _write_file(path, data)
        return
    tmp = f"{path}.tmp"
    _write_file(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _remove_tree(path: str) -> None:
    if _is_remote(path):
        import tensorflow as tf

        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def read_manifest(backup_dir: str) -> dict[str, Any] | None:
    """The manifest of ``backup_dir``, or None when there is none (or it is unreadable)."""
    path = _join(backup_dir, MANIFEST_FILE)
    if not _exists(path):
        return None
    try:
        manifest = json.loads(_read(path))
        int(manifest["slot"]), int(manifest["epochs_done"]), dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _LOG.warning("ignoring the unreadable checkpoint manifest %s: %s", path, exc)
        return None
    return manifest


class TrainingCheckpoint(keras.callbacks.Callback):
    """Save the training state after every epoch; restore the last complete one at the start.

    Place it **after** the :class:`ResumableEarlyStopping` it saves in the callback list: its
    ``on_train_begin`` restores into the freshly reset early stopping, and its ``on_epoch_end``
    saves the early-stopping decision of that epoch.
    """

    def __init__(
        self,
        backup_dir: str,
        early_stopping: ResumableEarlyStopping,
        *,
        write_dir: str | None = None,
    ):
        """Create the callback.

        Args:
            backup_dir: the checkpoint directory every worker restores from (local, a
                ``/gcs`` FUSE path or ``gs://``).
            early_stopping: the early-stopping callback whose state is saved with the weights.
            write_dir: where this worker writes (default ``backup_dir``: the chief). Other
                workers of a multi-worker run pass a private temporary directory.
        """
        super().__init__()
        if not backup_dir:
            raise ValueError("TrainingCheckpoint needs a backup_dir")
        self.backup_dir = str(backup_dir).rstrip("/")
        self.write_dir = str(write_dir or backup_dir).rstrip("/")
        self.early_stopping = early_stopping
        self._slot = 1  # the slot the manifest names; the first save writes slot 0
        self.restored_epochs = 0
        remove_dead_scratch(SCRATCH_PREFIX)  # left by processes killed while saving

    # -- restore ----------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        """Restore the state the manifest names (weights, optimizer, seeds, early stopping)."""
        manifest = read_manifest(self.backup_dir)
        self.restored_epochs = 0
        if manifest is None:
            return
        slot = int(manifest["slot"])
        try:
            files = {
                name: self._verified(slot, name, meta) for name, meta in manifest["files"].items()
            }
            self._restore(files[KERAS_STATE_FILE], files[TRAINING_STATE_FILE])
        except (OSError, ValueError, KeyError) as exc:
            _LOG.warning(
                "checkpoint %s slot %d is not usable (%s): training starts afresh",
                self.backup_dir,
                slot,
                exc,
            )
            self.early_stopping._reset()
            return
        self._slot = slot
        epochs = int(manifest["epochs_done"])
        self.restored_epochs = epochs
        # A run that had stopped has no epoch left: fit goes straight to on_train_end.
        stopped = bool(manifest.get("stopped"))
        self.model._initial_epoch = int(self.params.get("epochs", epochs)) if stopped else epochs
        _LOG.info("resumed from %s slot %d after epoch %d", self.backup_dir, slot, epochs)

    def _verified(self, slot: int, name: str, meta: dict[str, Any]) -> bytes:
        path = _join(self.backup_dir, f"slot-{slot}/{name}")
        data = _read(path)
        if len(data) != int(meta["bytes"]) or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{path} does not match the manifest ({len(data)} bytes)")
        return data

    def _restore(self, keras_state: bytes, training_state: bytes) -> None:
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        directory = scratch_directory(SCRATCH_PREFIX)
        try:
            path = os.path.join(directory, KERAS_STATE_FILE)
            with open(path, "wb") as f:
                f.write(keras_state)
            model.load_weights(path)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        arrays = np.load(io.BytesIO(training_state))
        state = json.loads(arrays["state"].tobytes().decode())
        best = [arrays[f"best_{i}"] for i in range(int(state["best_weights_count"]))]
        for i, variable in enumerate(self._rng_variables()):
            variable.assign(arrays[f"rng_{i}"])
        self.early_stopping.set_state(state["early_stopping"], best if best else None)

    # -- save -------------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        """Write the other slot, then the manifest naming it."""
        slot = 1 - self._slot
        keras_state = self._keras_state()
        training_state = self._training_state()
        slot_dir = _join(self.write_dir, f"slot-{slot}")
        _makedirs(slot_dir)
        files = {KERAS_STATE_FILE: keras_state, TRAINING_STATE_FILE: training_state}
        for name, data in files.items():
            _write_file(_join(slot_dir, name), data)
        manifest = {
            "format": _FORMAT,
            "slot": slot,
            "epochs_done": epoch + 1,
            "stopped": bool(self.model.stop_training),
            "files": {
                name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }
        write_atomic(_join(self.write_dir, MANIFEST_FILE), json.dumps(manifest).encode())
        self._slot = slot

    def _keras_state(self) -> bytes:
        directory = scratch_directory(SCRATCH_PREFIX)
        try:
            path = os.path.join(directory, KERAS_STATE_FILE)
            self.model.save_weights(path)
            with open(path, "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _training_state(self) -> bytes:
        state, best = self.early_stopping.get_state()
        best = best or []
        header = json.dumps({"early_stopping": state, "best_weights_count": len(best)})
        arrays = {"state": np.frombuffer(header.encode(), np.uint8)}
        arrays |= {f"best_{i}": np.asarray(w) for i, w in enumerate(best)}
        arrays |= {
            f"rng_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self._rng_variables())
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def _rng_variables(self) -> list:
        """Random-seed states (dropout): model variables that are not weights."""
        weights = {id(v) for v in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    # -- end --------------------------------------------------------------------------------

    def discard(self) -> None:
        """Remove what this worker wrote (the chief: the checkpoint) once the result is safe."""
        _remove_tree(self.write_dir)
