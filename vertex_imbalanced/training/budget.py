"""The training budget: batch size, epochs and patience fitted to the number of training rows.

A fixed batch and epoch count fits one table size only: 512 rows a batch and 20 epochs give a
150-row table 20 optimizer steps in all, and a 100M-row table 4M. The budget counts **optimizer
steps** instead:

* **batch size** ``= clip(2 ** round(log2(rows / ROWS_PER_BATCH)), MIN_BATCH, MAX_BATCH)``
  (power of two): about :data:`ROWS_PER_BATCH` batches an epoch on mid-sized tables, never
  fewer rows than 32 a step (noisy gradients) nor more than 4,096 (few updates, memory);
* **planned epochs** ``= ceil(TARGET_STEPS / steps_per_epoch)``, clipped to
  ``[MIN_EPOCHS, MAX_EPOCHS]`` and to at most :data:`MAX_ROWS_READ` rows read (but never below
  :data:`MIN_EPOCHS`: early stopping needs a few validation points). 150 rows: 5 steps an
  epoch, 200 epochs; 100M rows: 24,415 steps an epoch, 3 epochs;
* **patience** (early stopping on validation loss) ``= clip(ceil(planned / 8), 4, 20)`` epochs;
* **learning rate**: reduce-on-plateau: the rate is halved after ``lr_patience = patience // 2``
  epochs without a better validation loss, down to ``learning_rate / 32``. Chosen over warmup +
  cosine because it does not need the total number of steps in advance (so a run that is still
  improving can extend past its plan), it acts on the same signal and unit as early stopping,
  and its state (rate, wait counter) is a few numbers kept with the early-stopping state in the
  backup directory, so a resumed run follows the same rates as an uninterrupted one. Adam's bias
  correction makes a warmup unnecessary for these small networks;
* **extension**: a run whose last planned epoch is its best so far goes on, one epoch at a time
  while the validation loss keeps improving, up to :data:`EXTENSION_FACTOR` times the plan (and
  the rows cap); when the best epoch is the last allowed one the run warns (more epochs may help).

Values the user gives (``Hyperparameters.batch_size``, ``epochs``, ``early_stopping_patience``)
win; with explicit epochs the run never extends past them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

MIN_BATCH = 32
MAX_BATCH = 4096
ROWS_PER_BATCH = 256
"""Rows divided by this gives the (unclipped) batch size: ~256 steps an epoch mid-range."""
TARGET_STEPS = 4000
"""Optimizer steps the plan aims at (early stopping usually ends the run sooner)."""
MIN_EPOCHS = 3
MAX_EPOCHS = 200
"""Most planned epochs (the extension may double them)."""
MAX_ROWS_READ = 1_000_000_000
"""Most training rows read by the planned epochs (MIN_EPOCHS wins over it)."""
EXTENSION_FACTOR = 2
"""A still-improving run may go on up to this many times its planned epochs."""
MIN_PATIENCE = 4
MAX_PATIENCE = 20
LR_FACTOR = 0.5
"""Reduce-on-plateau multiplies the learning rate by this."""
MIN_LR_FRACTION = 1 / 32
"""The learning rate never goes below this fraction of the initial one."""


@dataclasses.dataclass(frozen=True)
class TrainingBudget:
    """How long and with which batches a run trains.

    Attributes:
        train_rows: training rows one worker reads per epoch.
        batch_size: rows per optimizer step (per worker).
        steps_per_epoch: ``ceil(train_rows / batch_size)``.
        planned_epochs: epochs of the plan (the user's ``epochs`` when given).
        epoch_cap: most epochs the run may reach with the extension (``planned_epochs`` when
            the user gave ``epochs``).
        patience: epochs without a better validation loss before stopping.
        lr_patience: epochs without a better validation loss before the rate is reduced.
        lr_factor: the reduction factor.
        min_lr_fraction: floor of the rate as a fraction of the initial rate.
        target_steps: the optimizer steps the plan aimed at.
        batch_size_source: ``auto`` (from the rows) or ``user``.
        epochs_source: ``auto`` or ``user``.
        patience_source: ``auto`` or ``user``.
    """

    train_rows: int
    batch_size: int
    steps_per_epoch: int
    planned_epochs: int
    epoch_cap: int
    patience: int
    lr_patience: int
    lr_factor: float = LR_FACTOR
    min_lr_fraction: float = MIN_LR_FRACTION
    target_steps: int = TARGET_STEPS
    batch_size_source: str = "auto"
    epochs_source: str = "auto"
    patience_source: str = "auto"

    @property
    def planned_steps(self) -> int:
        """Optimizer steps of the planned epochs."""
        return self.planned_epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-safe dict (the ``training_budget`` block of ``model_metadata.json``)."""
        return {
            **dataclasses.asdict(self),
            "planned_steps": self.planned_steps,
            "lr_schedule": "reduce_on_plateau",
        }


def auto_batch_size(rows: int) -> int:
    """``clip(2 ** round(log2(rows / ROWS_PER_BATCH)), MIN_BATCH, MAX_BATCH)``."""
    if rows <= 0:
        return MIN_BATCH
    power = 2 ** round(math.log2(max(rows / ROWS_PER_BATCH, 1.0)))
    return int(min(max(power, MIN_BATCH), MAX_BATCH))


def training_budget(
    train_rows: int,
    *,
    batch_size: int | None = None,
    epochs: int | None = None,
    patience: int | None = None,
) -> TrainingBudget:
    """The budget for ``train_rows`` training rows (per worker); given values win.

    Args:
        train_rows: rows one worker reads per epoch (> 0).
        batch_size: the user's batch size, or None for :func:`auto_batch_size`.
        epochs: the user's epoch count (then no extension), or None for the planned epochs.
        patience: the user's early-stopping patience, or None for the automatic one.

    Returns:
        The budget (see the module docstring for the rules).

    Raises:
        ValueError: ``train_rows`` < 1 or a given value < 1.
    """
    if train_rows < 1:
        raise ValueError(f"train_rows must be >= 1, got {train_rows}")
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("patience", patience)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    batch = batch_size or auto_batch_size(train_rows)
    steps = -(-train_rows // batch)
    if epochs is None:
        planned = min(max(-(-TARGET_STEPS // steps), MIN_EPOCHS), MAX_EPOCHS)
        planned = max(min(planned, MAX_ROWS_READ // train_rows), MIN_EPOCHS)
        cap = max(min(EXTENSION_FACTOR * planned, MAX_ROWS_READ // train_rows), planned)
    else:
        planned = cap = epochs
    wait = patience or min(max(-(-planned // 8), MIN_PATIENCE), MAX_PATIENCE)
    return TrainingBudget(
        train_rows=train_rows,
        batch_size=batch,
        steps_per_epoch=steps,
        planned_epochs=planned,
        epoch_cap=cap,
        patience=wait,
        lr_patience=max(1, wait // 2),
        batch_size_source="auto" if batch_size is None else "user",
        epochs_source="auto" if epochs is None else "user",
        patience_source="auto" if patience is None else "user",
    )
