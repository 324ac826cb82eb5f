"""Early stopping on ``val_loss`` whose state survives a restart from a checkpoint.

Keras' ``EarlyStopping`` keeps its best loss, patience counter and best weights in memory only:
a resumed run would stop at a different epoch and restore different weights than an
uninterrupted one. This callback exposes that state (and the metric history) through
:meth:`ResumableEarlyStopping.get_state` / :meth:`~ResumableEarlyStopping.set_state`;
:class:`vertex_imbalanced.training.checkpoint.TrainingCheckpoint` saves it in the same
checkpoint as the weights after every epoch and restores it with them, so the pair is always
consistent.

It also carries the two other epoch-level decisions of the training budget
(:mod:`vertex_imbalanced.training.budget`), so their state is resumed the same way:

* **reduce-on-plateau**: with ``lr_patience``, the optimizer's learning rate is multiplied by
  ``lr_factor`` after ``lr_patience`` epochs without a better ``val_loss`` (not below
  ``min_lr``);
* **planned epochs and extension**: with ``planned_epochs`` below the ``epochs`` given to
  ``fit`` (the cap), a run that reaches its planned epochs goes on only while the last epoch
  was the best so far, and stops at the first epoch that is not.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import numpy as np

_LOG = logging.getLogger(__name__)


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights.

    Place it before the :class:`~vertex_imbalanced.training.checkpoint.TrainingCheckpoint`
    that saves it. Its ``history`` holds the per-epoch logs of the whole run, across restarts.
    """

    def __init__(
        self,
        patience: int,
        monitor: str = "val_loss",
        *,
        lr_patience: int | None = None,
        lr_factor: float = 0.5,
        min_lr: float = 0.0,
        planned_epochs: int | None = None,
    ):
        """Create the callback.

        Args:
            patience: epochs without improvement before stopping.
            monitor: the logged metric to minimise.
            lr_patience: epochs without improvement before the learning rate is multiplied by
                ``lr_factor`` (None: the rate is never changed).
            lr_factor: the reduction factor (0 < factor < 1).
            min_lr: the rate is never reduced below this.
            planned_epochs: past this many epochs, stop at the first epoch that is not the
                best so far (None: only ``patience`` and ``fit``'s ``epochs`` stop the run).
        """
        super().__init__()
        if not 0 < lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {lr_factor}")
        self.patience = patience
        self.monitor = monitor
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor
        self.min_lr = min_lr
        self.planned_epochs = planned_epochs
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf
        self.best_epoch = -1
        self.wait = 0
        self.lr_wait = 0
        self.learning_rate: float | None = None  # the rate set by the last reduction
        self.stop_reason: str | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.history: dict[str, list[float]] = {}
        self.epochs_done = 0

    def on_train_begin(self, logs=None):
        """Start fresh (a checkpoint restored after this puts its state back)."""
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        """Record the logs, update best/wait, save the state."""
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs_done = epoch + 1
        current = logs.get(self.monitor)
        if current is not None and float(current) < self.best:
            self.best, self.best_epoch, self.wait, self.lr_wait = float(current), epoch, 0, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            self.lr_wait += 1
        if self.lr_patience is not None and self.lr_wait >= self.lr_patience:
            self.lr_wait = 0
            self._reduce_learning_rate()
        planned = self.planned_epochs
        if self.wait >= self.patience:
            self.model.stop_training, self.stop_reason = True, "early_stopping"
        elif planned is not None and self.epochs_done >= planned and self.wait:
            # past the plan the run goes on only while every epoch is the best so far
            self.model.stop_training = True
            self.stop_reason = "planned_epochs" if self.epochs_done == planned else "extension"

    def _reduce_learning_rate(self) -> None:
        optimizer = self.model.optimizer
        old = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        new = max(old * self.lr_factor, self.min_lr)
        if new < old:
            optimizer.learning_rate = new
            self.learning_rate = new
            _LOG.info("epoch %d: learning rate %.3g -> %.3g", self.epochs_done, old, new)

    def on_train_end(self, logs=None):
        """Put the best epoch's weights back."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    # -- state for checkpoints -----------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, Any], list[np.ndarray] | None]:
        """The JSON-safe state after the last epoch and the best weights (None: none yet)."""
        state = {
            "epochs_done": self.epochs_done,
            "best": self.best if math.isfinite(self.best) else None,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "lr_wait": self.lr_wait,
            "learning_rate": self.learning_rate,
            "stop_reason": self.stop_reason,
            "history": self.history,
        }
        return state, self.best_weights

    def set_state(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        """Put back a state from :meth:`get_state` (the model's optimizer must be set)."""
        self.epochs_done = int(state["epochs_done"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.lr_wait = int(state["lr_wait"])
        self.learning_rate = state["learning_rate"]
        self.stop_reason = state["stop_reason"]
        if self.learning_rate is not None:
            self.model.optimizer.learning_rate = float(self.learning_rate)
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self.best_weights = None if best_weights is None else list(best_weights)
        _LOG.info(
            "early stopping resumed after epoch %d (best %d)", self.epochs_done, self.best_epoch
        )
