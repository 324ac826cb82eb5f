"""One progress line per training epoch on stdout (run_local echoes them to the console).

Format (``pipelines/local_run.py`` matches ``epoch <n>/<N>: ...``)::

    epoch 3/400: loss 0.4123 val_loss 0.3987 rows/s 123456

``n/N``: the epoch (1-based) of at most ``N`` (the budget's epoch cap; early stopping usually
ends the run sooner). Only the chief worker prints.
"""

from __future__ import annotations

import math
import time

import keras


class EpochLines(keras.callbacks.Callback):
    """Print ``epoch n/N: loss ... val_loss ... rows/s ...`` after every epoch (flushed)."""

    def __init__(self, epochs: int, rows_per_epoch: int, enabled: bool = True):
        """Create the callback.

        Args:
            epochs: the most epochs the run may reach.
            rows_per_epoch: training rows read per epoch (for rows/s).
            enabled: print (the chief) or stay silent (other workers).
        """
        super().__init__()
        self.epochs = epochs
        self.rows_per_epoch = rows_per_epoch
        self.enabled = enabled
        self._start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        """Start the epoch's clock."""
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        """Print the epoch's line."""
        if not self.enabled:
            return
        logs = logs or {}
        seconds = max(time.monotonic() - self._start, 1e-9)
        print(
            f"epoch {epoch + 1}/{self.epochs}: loss {_value(logs, 'loss')} "
            f"val_loss {_value(logs, 'val_loss')} rows/s {self.rows_per_epoch / seconds:.0f}",
            flush=True,
        )


def _value(logs, key: str) -> str:
    value = logs.get(key)
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.4f}"
