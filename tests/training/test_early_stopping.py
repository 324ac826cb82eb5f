"""ResumableEarlyStopping stops, restores the best weights, and resumes mid-patience.

Resumption goes through the trainer's checkpoint (:class:`TrainingCheckpoint`), which saves the
early-stopping state in the same slot as the weights.

A one-weight linear model ``y = w x`` trained by full-batch SGD from ``w = 0`` towards the
training target ``w = 1`` gives a known trajectory ``w_k = 1 - 0.9 ** k`` (k = epochs done). The
validation target is ``w = 0.5``, so ``val_loss = (w - 0.5) ** 2`` improves until epoch index 6
(``w = 0.522``) and gets worse afterwards: with patience 3 the run must end after epoch index 9,
long before ``MAX_EPOCHS``, and put back the weight of epoch index 6.
"""

import keras
import numpy as np
import pytest

from vertex_imbalanced.training.checkpoint import TrainingCheckpoint
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


def run(
    backup: str | None,
    stopping: ResumableEarlyStopping,
    recorder: Recorder,
    epochs: int = MAX_EPOCHS,
    keras_backup: str | None = None,
) -> float:
    """A fresh process's view: new model, new callbacks; only ``backup`` carries state."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.zeros((1, 1), np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    callbacks = [stopping]
    if keras_backup:  # the control: Keras' own backup (weights and epoch only)
        callbacks.insert(0, keras.callbacks.BackupAndRestore(keras_backup))
    if backup:
        callbacks.append(TrainingCheckpoint(backup, stopping))
    model.fit(
        X,
        X,
        batch_size=len(X),
        epochs=epochs,
        validation_data=(X, 0.5 * X),
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, recorder],
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
    reference = ResumableEarlyStopping(PATIENCE)
    reference_final = run(str(tmp_path / "ref"), reference, Recorder())

    backup = str(tmp_path / "backup")
    interrupted_after = LAST_EPOCH  # epochs done; BEST_EPOCH + 1 .. LAST_EPOCH - 1 did not improve
    first = ResumableEarlyStopping(PATIENCE)
    with pytest.raises(Interrupted, match=f"after epoch {interrupted_after - 1}"):
        run(backup, first, Recorder(stop_after=interrupted_after))
    assert first.wait == PATIENCE - 1 > 0  # killed while the patience counter runs

    resumed, recorder = ResumableEarlyStopping(PATIENCE), Recorder()
    final = run(backup, resumed, recorder)
    assert list(recorder.weights) == [LAST_EPOCH]  # only the remaining epoch was trained
    assert resumed.epochs_done == reference.epochs_done == LAST_EPOCH + 1
    assert resumed.best_epoch == reference.best_epoch == BEST_EPOCH
    assert resumed.history == reference.history
    assert final == reference_final


def test_without_its_state_a_resumed_run_would_stop_elsewhere(tmp_path):
    """The control: Keras' BackupAndRestore alone resumes the weights but forgets the patience."""
    backup = str(tmp_path / "backup")
    with pytest.raises(Interrupted):
        run(None, ResumableEarlyStopping(PATIENCE), Recorder(LAST_EPOCH), keras_backup=backup)
    forgetful, recorder = ResumableEarlyStopping(PATIENCE), Recorder()
    final = run(None, forgetful, recorder, keras_backup=backup)
    assert forgetful.epochs_done > LAST_EPOCH + 1
    assert final == recorder.weights[LAST_EPOCH] != pytest.approx(1 - 0.9 ** (BEST_EPOCH + 1))


LR = 0.05  # SGD rate of run(): each epoch multiplies 1 - w by 1 - 2 * LR = 0.9


def plateau() -> ResumableEarlyStopping:
    return ResumableEarlyStopping(PATIENCE, lr_patience=1, lr_factor=0.5, min_lr=0.01)


def test_learning_rate_is_halved_after_each_epoch_without_improvement_down_to_the_floor():
    stopping, recorder = plateau(), Recorder()
    run(None, stopping, recorder)
    w = recorder.weights
    assert w[BEST_EPOCH] == pytest.approx(1 - 0.9 ** (BEST_EPOCH + 1), rel=1e-5)
    # epoch BEST_EPOCH + 1 did not improve -> rate 0.025 (factor 0.95), then 0.0125, then 0.01
    for k, rate in ((BEST_EPOCH + 2, 0.025), (BEST_EPOCH + 3, 0.0125)):
        assert 1 - w[k] == pytest.approx((1 - w[k - 1]) * (1 - 2 * rate), rel=1e-5)
    assert stopping.learning_rate == pytest.approx(0.01)  # min_lr
    assert stopping.epochs_done == LAST_EPOCH + 1 and stopping.stop_reason == "early_stopping"


def test_a_run_interrupted_after_a_rate_reduction_resumes_with_the_reduced_rate(tmp_path):
    reference = plateau()
    reference_final = run(str(tmp_path / "ref"), reference, Recorder())
    backup = str(tmp_path / "backup")
    with pytest.raises(Interrupted):
        run(backup, plateau(), Recorder(stop_after=BEST_EPOCH + 3))
    resumed, recorder = plateau(), Recorder()
    final = run(backup, resumed, recorder)
    assert list(recorder.weights) == list(range(BEST_EPOCH + 3, LAST_EPOCH + 1))
    assert resumed.history == reference.history
    assert resumed.learning_rate == reference.learning_rate
    assert final == reference_final


def test_a_run_killed_after_its_stopping_epoch_was_saved_trains_no_further_epoch(tmp_path):
    reference = ResumableEarlyStopping(PATIENCE)
    reference_final = run(None, reference, Recorder())
    backup = str(tmp_path / "backup")
    with pytest.raises(Interrupted):  # the stopping epoch's checkpoint is written, then killed
        run(backup, ResumableEarlyStopping(PATIENCE), Recorder(stop_after=LAST_EPOCH + 1))
    resumed, recorder = ResumableEarlyStopping(PATIENCE), Recorder()
    final = run(backup, resumed, recorder)
    assert recorder.weights == {}  # no epoch left: only the best weights are put back
    assert resumed.epochs_done == LAST_EPOCH + 1 and resumed.stop_reason == "early_stopping"
    assert resumed.history == reference.history
    assert final == reference_final


def test_past_its_planned_epochs_a_run_goes_on_only_while_it_improves():
    extended = ResumableEarlyStopping(PATIENCE, planned_epochs=3)
    run(None, extended, Recorder())
    # epochs 0..BEST_EPOCH all improve: the run passes its plan and stops at the first miss
    assert extended.epochs_done == BEST_EPOCH + 2 and extended.stop_reason == "extension"
    assert extended.best_epoch == BEST_EPOCH
    planned = ResumableEarlyStopping(PATIENCE, planned_epochs=BEST_EPOCH + 2)
    run(None, planned, Recorder())
    assert planned.epochs_done == BEST_EPOCH + 2 and planned.stop_reason == "planned_epochs"
    capped = ResumableEarlyStopping(PATIENCE, planned_epochs=3)
    run(None, capped, Recorder(), epochs=5)  # the cap (fit's epochs) ends a still-improving run
    assert capped.epochs_done == 5 and capped.best_epoch == 4 and capped.stop_reason is None
