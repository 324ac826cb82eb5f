"""Early stopping on ``val_loss`` whose state survives a restart from ``BackupAndRestore``.

Keras' ``BackupAndRestore`` restores the weights, the optimizer and the epoch counter, but not
``EarlyStopping``'s best loss, patience counter and best weights: a resumed run would stop at a
different epoch and restore different weights than an uninterrupted one. This callback keeps
that state (and the metric history, and the dropout seed states, which the backup lacks too)
in the backup directory, one file per completed epoch, and
reloads the state of the epoch ``BackupAndRestore`` resumed from. Paths go through
``tf.io.gfile``, so the backup directory may be local or ``gs://``.

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

import io
import json
import logging
import math
import re

import keras
import numpy as np

_LOG = logging.getLogger(__name__)
_STATE = re.compile(r"^early_stopping-(\d+)\.json$")


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights.

    Place it after ``BackupAndRestore`` in the callback list (its ``on_train_begin`` must run
    first). Its ``history`` holds the per-epoch logs of the whole run, across restarts.
    """

    def __init__(
        self,
        patience: int,
        state_dir: str | None = None,
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
            state_dir: where to keep the state (the backup directory); None = not resumable.
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
        self.state_dir = state_dir
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
        """Start fresh, or reload the state of the epoch the backup resumed from."""
        self._reset()
        resumed = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if resumed and self.state_dir:
            self._load(resumed)

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
        if self.state_dir:
            self._save()

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

    # -- persistence ---------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return f"{self.state_dir.rstrip('/')}/{name}"

    def _save(self) -> None:
        import tensorflow as tf

        tf.io.gfile.makedirs(self.state_dir)
        weights_name = f"best_weights-{self.best_epoch}.npz"
        if self.best_epoch == self.epochs_done - 1 and self.best_weights is not None:
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            _write_atomic(self._path(weights_name), buffer.getvalue())
        state = {
            "epochs_done": self.epochs_done,
            "best": self.best if math.isfinite(self.best) else None,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "lr_wait": self.lr_wait,
            "learning_rate": self.learning_rate,
            "stop_reason": self.stop_reason,
            "weights": weights_name if self.best_weights is not None else None,
            "history": self.history,
        }
        rng = io.BytesIO()
        np.savez(rng, *[v.numpy() for v in self._rng_variables()])
        _write_atomic(self._path(f"rng-{self.epochs_done}.npz"), rng.getvalue())
        _write_atomic(
            self._path(f"early_stopping-{self.epochs_done}.json"), json.dumps(state).encode()
        )
        self._cleanup(keep_from=self.epochs_done - 1)

    def _rng_variables(self) -> list:
        """Random-seed states (dropout); ``BackupAndRestore`` saves weights, not these."""
        weights = {id(v) for v in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def _cleanup(self, keep_from: int) -> None:
        import tensorflow as tf

        referenced = set()
        for name in tf.io.gfile.listdir(self.state_dir):
            match = _STATE.match(name)
            if not match:
                continue
            if int(match.group(1)) < keep_from:
                tf.io.gfile.remove(self._path(name))
                rng = self._path(f"rng-{match.group(1)}.npz")
                if tf.io.gfile.exists(rng):
                    tf.io.gfile.remove(rng)
            else:
                with tf.io.gfile.GFile(self._path(name), "r") as f:
                    referenced.add(json.load(f).get("weights"))
        for name in tf.io.gfile.listdir(self.state_dir):
            if name.startswith("best_weights-") and name not in referenced:
                tf.io.gfile.remove(self._path(name))

    def _load(self, epochs_done: int) -> None:
        import tensorflow as tf

        path = self._path(f"early_stopping-{epochs_done}.json")
        if not tf.io.gfile.exists(path):
            _LOG.warning("no early-stopping state for epoch %d in %s", epochs_done, self.state_dir)
            return
        with tf.io.gfile.GFile(path, "r") as f:
            state = json.load(f)
        self.epochs_done = state["epochs_done"]
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.lr_wait = int(state.get("lr_wait", 0))
        self.learning_rate = state.get("learning_rate")
        self.stop_reason = state.get("stop_reason")
        if self.learning_rate is not None:
            self.model.optimizer.learning_rate = float(self.learning_rate)
        self.history = {k: list(v) for k, v in state["history"].items()}
        if state["weights"]:
            with tf.io.gfile.GFile(self._path(state["weights"]), "rb") as f:
                arrays = np.load(io.BytesIO(f.read()))
                self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        with tf.io.gfile.GFile(self._path(f"rng-{epochs_done}.npz"), "rb") as f:
            arrays = np.load(io.BytesIO(f.read()))
            for i, variable in enumerate(self._rng_variables()):
                variable.assign(arrays[f"arr_{i}"])
        _LOG.info("resumed early stopping after epoch %d (best %d)", epochs_done, self.best_epoch)


def _write_atomic(path: str, data: bytes) -> None:
    import tensorflow as tf

    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)
