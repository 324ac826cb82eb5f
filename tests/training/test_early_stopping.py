"""ResumableEarlyStopping stops, restores the best weights, and resumes mid-patience.

A one-weight linear model ``y = w x`` trained by full-batch SGD from ``w = 0`` towards the
training target ``w = 1`` gives a known trajectory ``w_k = 1 - 0.9 ** k`` (k = epochs done). The
validation target is ``w = 0.5``, so ``val_loss = (w - 0.5) ** 2`` improves until epoch index 6
(``w = 0.522``) and gets worse afterwards: with patience 3 the run must end after epoch index 9,
long before ``MAX_EPOCHS``, and put back the weight of epoch index 6.
"""

import keras
import numpy as np
import pytest

from vertex_imbalanced.training.early_stopping import ResumableEarlyStopping

MAX_EPOCHS = 30
PATIENCE = 3
BEST_EPOCH = 6  # 0-based epoch index of the smallest val_loss
LAST_EPOCH = BEST_EPOCH + PATIENCE  # the epoch after which training must stop
X = np.ones((8, 1), np.float32)


class Interrupted(Exception):
    """Raised between epochs to end a run the way a killed process would (state on disk only)."""


class Recorder(keras.callbacks.Callback):
    """Keeps the weight after every epoch; optionally interrupts after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.weights: dict[int, float] = {}
        self.stop_after = stop_after

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = float(self.model.get_weights()[0].item())
        if self.stop_after is not None and epoch + 1 == self.stop_after:
            raise Interrupted(f"interrupted after epoch {epoch}")


def run(backup: str | None, stopping: ResumableEarlyStopping, recorder: Recorder) -> float:
    """A fresh process's view: new model, new callbacks; only ``backup`` carries state."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.zeros((1, 1), np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    callbacks = [keras.callbacks.BackupAndRestore(backup)] if backup else []
    model.fit(
        X,
        X,
        batch_size=len(X),
        epochs=MAX_EPOCHS,
        validation_data=(X, 0.5 * X),
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, stopping, recorder],
    )
    return float(model.get_weights()[0].item())


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best_weights():
    stopping, recorder = ResumableEarlyStopping(PATIENCE), Recorder()
    final = run(None, stopping, recorder)
    expected = {k: 1 - 0.9 ** (k + 1) for k in range(LAST_EPOCH + 1)}
    assert recorder.weights == pytest.approx(expected, rel=1e-5)  # the trajectory above
    val_loss = stopping.history["val_loss"]
    assert int(np.argmin(val_loss)) == BEST_EPOCH
    assert (np.diff(val_loss[: BEST_EPOCH + 1]) < 0).all()  # improves up to the best epoch
    assert (np.diff(val_loss[BEST_EPOCH:]) > 0).all()  # then only gets worse
    assert stopping.epochs_done == LAST_EPOCH + 1 < MAX_EPOCHS
    assert stopping.best_epoch == BEST_EPOCH
    assert final == recorder.weights[BEST_EPOCH] != recorder.weights[LAST_EPOCH]


def test_a_run_interrupted_mid_patience_resumes_and_stops_like_an_uninterrupted_one(tmp_path):
    reference = ResumableEarlyStopping(PATIENCE, state_dir=str(tmp_path / "ref"))
    reference_final = run(str(tmp_path / "ref"), reference, Recorder())

    backup = str(tmp_path / "backup")
    interrupted_after = LAST_EPOCH  # epochs done; BEST_EPOCH + 1 .. LAST_EPOCH - 1 did not improve
    first = ResumableEarlyStopping(PATIENCE, state_dir=backup)
    with pytest.raises(Interrupted, match=f"after epoch {interrupted_after - 1}"):
        run(backup, first, Recorder(stop_after=interrupted_after))
    assert first.wait == PATIENCE - 1 > 0  # killed while the patience counter runs

    resumed, recorder = ResumableEarlyStopping(PATIENCE, state_dir=backup), Recorder()
    final = run(backup, resumed, recorder)
    assert list(recorder.weights) == [LAST_EPOCH]  # only the remaining epoch was trained
    assert resumed.epochs_done == reference.epochs_done == LAST_EPOCH + 1
    assert resumed.best_epoch == reference.best_epoch == BEST_EPOCH
    assert resumed.history == reference.history
    assert final == reference_final


def test_without_its_state_a_resumed_run_would_stop_elsewhere(tmp_path):
    """The control: BackupAndRestore alone resumes the weights but forgets the patience."""
    backup = str(tmp_path / "backup")
    with pytest.raises(Interrupted):
        run(backup, ResumableEarlyStopping(PATIENCE, state_dir=backup), Recorder(LAST_EPOCH))
    forgetful, recorder = ResumableEarlyStopping(PATIENCE), Recorder()
    final = run(backup, forgetful, recorder)
    assert forgetful.epochs_done > LAST_EPOCH + 1
    assert final == recorder.weights[LAST_EPOCH] != pytest.approx(1 - 0.9 ** (BEST_EPOCH + 1))
