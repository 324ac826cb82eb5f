"""The training budget fits a 150-row table and a 100M-row table; the user's values win."""

import math

import pytest

from vertex_imbalanced.training import budget as b
from vertex_imbalanced.training.budget import auto_batch_size, training_budget


def test_a_150_row_table_gets_small_batches_and_hundreds_of_steps():
    plan = training_budget(150)
    assert plan.batch_size == 32 and plan.steps_per_epoch == 5
    assert plan.planned_epochs == b.MAX_EPOCHS  # 4000 steps wanted, 200 epochs allowed
    assert plan.planned_steps == 1000  # was 20 (batch 512 x 20 epochs: one step an epoch)
    assert plan.epoch_cap == 2 * b.MAX_EPOCHS  # a still-improving run may go on
    assert plan.patience == 20 and plan.lr_patience == 10
    assert (plan.batch_size_source, plan.epochs_source, plan.patience_source) == ("auto",) * 3


def test_a_100m_row_table_gets_large_batches_and_few_passes():
    plan = training_budget(100_000_000)
    assert plan.batch_size == b.MAX_BATCH
    assert plan.steps_per_epoch == math.ceil(100_000_000 / 4096) == 24_415
    assert plan.planned_epochs == b.MIN_EPOCHS  # one pass would do; early stopping needs some
    assert plan.epoch_cap == 6  # extension: 2x, within 1e9 rows read
    assert plan.epoch_cap * plan.train_rows <= b.MAX_ROWS_READ
    assert plan.patience == b.MIN_PATIENCE


def test_rows_cap_never_goes_below_min_epochs():
    plan = training_budget(2_000_000_000)
    assert plan.planned_epochs == plan.epoch_cap == b.MIN_EPOCHS


@pytest.mark.parametrize("rows", [1, 31, 150, 4_331, 9_857, 80_000, 10**6, 10**7, 10**9])
def test_batch_is_a_power_of_two_in_range_and_grows_with_the_rows(rows):
    batch = auto_batch_size(rows)
    assert b.MIN_BATCH <= batch <= b.MAX_BATCH and batch & (batch - 1) == 0
    assert auto_batch_size(rows * 4) >= batch
    plan = training_budget(rows)
    assert b.MIN_EPOCHS <= plan.planned_epochs <= plan.epoch_cap <= 2 * plan.planned_epochs
    assert b.MIN_PATIENCE <= plan.patience <= b.MAX_PATIENCE


def test_user_values_win_and_user_epochs_are_never_extended():
    plan = training_budget(150, batch_size=512, epochs=20, patience=3)
    assert (plan.batch_size, plan.steps_per_epoch) == (512, 1)
    assert plan.planned_epochs == plan.epoch_cap == 20
    assert (plan.patience, plan.lr_patience) == (3, 1)
    assert (plan.batch_size_source, plan.epochs_source, plan.patience_source) == ("user",) * 3
    assert training_budget(150, epochs=7).batch_size == 32  # the rest stays automatic


def test_budget_record_is_flat_json():
    record = training_budget(4_331).to_dict()
    assert record["lr_schedule"] == "reduce_on_plateau"
    assert record["planned_steps"] == record["planned_epochs"] * record["steps_per_epoch"]
    assert all(not isinstance(v, dict | list) for v in record.values())


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"epochs": 0}, {"patience": -1}])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        training_budget(100, **bad)
    with pytest.raises(ValueError, match="train_rows"):
        training_budget(0)
