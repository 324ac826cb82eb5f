"""bench/training.py: first and later epochs apart, ours vs in-memory, one table, --json."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vertex_imbalanced.training.trainer import TRAIN_CACHE_BYTES

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench/training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_overheads_are_the_later_and_the_first_epochs_against_the_in_memory_limit(capsys):
    bench = _bench()
    rates = {"first": [80.0, 90.0], "later": [95.0, 97.0, 96.0, 94.0], "memory": [100.0, 98.0]}
    args = argparse.Namespace(
        rows=1000, batch_size=512, repeat=2, max_overhead=0.05, max_first_overhead=0.15
    )
    cpu = {"first": [40.0, 44.0], "later": [48.0, 50.0], "memory": [50.0, 50.0]}
    result = bench.summary(rates, args, cpu)
    assert result["cpu_overhead"] == pytest.approx(1 - 49 / 50)
    assert result["first_epoch_cpu_overhead"] == pytest.approx(1 - 42 / 50)
    assert result["overhead"] == pytest.approx(1 - 97 / 100)
    assert result["first_epoch_overhead"] == pytest.approx(1 - 90 / 100)
    assert result["median_overhead"] == pytest.approx(1 - 95.5 / 99)
    assert result["median_first_epoch_overhead"] == pytest.approx(1 - 85 / 99)
    assert bench.print_table(result, args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("first epoch") and lines[2].endswith("< 15% OK")
    assert lines[3].startswith("later epochs") and lines[3].endswith("< 5% OK")
    args.max_first_overhead = 0.05  # 10 % over a 5 % limit fails
    assert not bench.print_table(result, args)
    assert "< 5% FAIL" in capsys.readouterr().out.splitlines()[2]


@pytest.mark.slow
def test_a_small_run_writes_both_overheads(tmp_path, capsys):
    out = tmp_path / "training.json"
    argv = ["--rows", "3000", "--repeat", "1", "--later", "1", "--hidden", "8", "--json", str(out)]
    assert _bench().main([*argv, "--max-overhead", "1", "--max-first-overhead", "1"]) == 0
    result = json.loads(out.read_text())
    assert {len(v) for v in result["epochs"].values()} == {1}
    for key in ("overhead", "first_epoch_overhead", "median_overhead", "cpu_overhead"):
        assert isinstance(result[key], float) and result[key] < 1
    assert result["overhead"] == pytest.approx(
        1 - result["examples_per_s_pipeline"] / result["examples_per_s_in_memory"]
    )
    assert result["rows"] == 3000 and result["cache_bytes"] == TRAIN_CACHE_BYTES == 128 << 20
    assert "later epochs" in capsys.readouterr().out
