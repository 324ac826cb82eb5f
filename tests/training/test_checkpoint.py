"""A preemption (SIGTERM) at any write of a checkpoint never breaks the resumed run.

The file-system and HDF5 write calls the checkpoint makes are wrapped so that, at the k-th of
them, the process sends itself SIGTERM (a file write is cut in half first, as a kill during a
write leaves it). The test's SIGTERM handler turns the signal into an exception that ends the
run there, state on disk only; a fresh model and fresh callbacks (a new process's view) then
resume from the same directory. For every write point of a two-epoch run, the resumed run must
end with exactly the weights, history and early-stopping decision of an uninterrupted run.
Nothing of the product is mocked: the wrappers call the real functions.
"""

import json
import os
import signal

import keras
import numpy as np
import pytest
from keras.src.saving import saving_lib

from vertex_imbalanced.training import checkpoint as checkpoint_module
from vertex_imbalanced.training.checkpoint import MANIFEST_FILE, TrainingCheckpoint
from vertex_imbalanced.training.early_stopping import ResumableEarlyStopping

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 3)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
EPOCHS = 2


class Preempted(BaseException):
    """What the test's SIGTERM handler raises: the run ends at that point."""


class WritePoints:
    """Counts the checkpoint's writes; at write number ``kill_at`` sends SIGTERM."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at = kill_at
        self.count = 0
        self.names: list[str] = []

    def point(self, name: str) -> bool:
        """Record a write point; True when this is the one to kill at."""
        self.count += 1
        self.names.append(name)
        return self.count == self.kill_at

    def kill(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")  # the handler raises first


def install(monkeypatch, points: WritePoints, root) -> None:
    """Wrap the writes the checkpoint makes (open for writing, fsync, replace, HDF5 close)."""
    real_open, real_fsync, real_replace = open, os.fsync, os.replace
    real_h5_close = saving_lib.H5IOStore.close

    class HalfWrites:
        def __init__(self, f, name):
            self._f, self._name = f, name

        def write(self, data):
            if points.point(f"write {self._name}"):
                self._f.write(data[: len(data) // 2])
                self._f.flush()
                points.kill()
            return self._f.write(data)

        def __getattr__(self, attr):
            return getattr(self._f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def wrapped_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).startswith(str(root)):  # the checkpoint's files
            return HalfWrites(f, os.path.basename(str(path)))
        return f

    def fsync(fd):
        if points.point("fsync"):
            points.kill()
        return real_fsync(fd)

    def replace(src, dst):
        if points.point(f"replace {os.path.basename(str(dst))}"):
            points.kill()
        real_replace(src, dst)
        if points.point(f"after replace {os.path.basename(str(dst))}"):
            points.kill()

    def h5_close(self):
        if self.mode == "w" and points.point("hdf5 close"):
            points.kill()
        return real_h5_close(self)

    monkeypatch.setattr(checkpoint_module, "open", wrapped_open, raising=False)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(saving_lib.H5IOStore, "close", h5_close)


@pytest.fixture
def sigterm_raises():
    def handler(signum, frame):
        raise Preempted(f"SIGTERM ({signum})")

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def fit(backup: str) -> dict:
    """One run as a fresh process would do it: new model, new callbacks, same backup dir."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    stopping = ResumableEarlyStopping(3, lr_patience=1, lr_factor=0.5)
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=EPOCHS,
        validation_data=(X[:16], Y[:16]),
        shuffle=False,
        verbose=0,
        callbacks=[stopping, TrainingCheckpoint(backup, stopping)],
    )
    return {
        "weights": [w.tolist() for w in model.get_weights()],
        "history": stopping.history,
        "best_epoch": stopping.best_epoch,
        "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
    }


@pytest.mark.slow  # 40 short fits: every write point of two epochs, killed then resumed
def test_sigterm_at_every_checkpoint_write_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, sigterm_raises
):
    counting = WritePoints()
    install(monkeypatch, counting, tmp_path)
    reference = fit(str(tmp_path / "reference"))
    per_epoch = [
        "hdf5 close",  # Keras' weights file (a local temporary file)
        "write keras.weights.h5",  # the slot the manifest does not name
        "fsync",
        "write training_state.npz",
        "fsync",
        "write manifest.json.tmp",
        "fsync",
        "replace manifest.json",
        "after replace manifest.json",
        "fsync",  # the directory
    ]
    assert counting.names == per_epoch * EPOCHS

    for kill_at in range(1, counting.count + 1):
        backup = str(tmp_path / f"kill{kill_at}")
        points = WritePoints(kill_at)
        install(monkeypatch, points, tmp_path)
        with pytest.raises(Preempted):
            fit(backup)
        install(monkeypatch, WritePoints(), tmp_path)
        resumed = fit(backup)
        where = f"killed at write {kill_at} ({points.names[-1]})"
        assert resumed == reference, where
        manifest = json.loads((tmp_path / f"kill{kill_at}" / MANIFEST_FILE).read_text())
        assert manifest["epochs_done"] == EPOCHS, where  # the resumed run saved to the end


def test_a_damaged_named_slot_is_not_used_and_training_starts_afresh(tmp_path):
    backup = tmp_path / "backup"
    reference = fit(str(tmp_path / "reference"))
    fit(str(backup))  # completes: both slots written, manifest names the last
    manifest = json.loads((backup / MANIFEST_FILE).read_text())
    weights = backup / f"slot-{manifest['slot']}" / "keras.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])  # storage damage
    (backup / MANIFEST_FILE).write_text(json.dumps({**manifest, "epochs_done": 1}))
    assert fit(str(backup)) == reference  # ignored with a warning; same result from scratch
