"""bench/e2e.py: each kfp.local task's exact peak RSS, recorded at exit by bench/rss_probe."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_e2e", ROOT / "bench/e2e.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run_probed(tmp_path, code, *argv):
    log = tmp_path / "rss.jsonl"
    env = dict(os.environ, E2E_RSS_LOG=str(log), PYTHONPATH=str(ROOT / "bench" / "rss_probe"))
    subprocess.run([sys.executable, "-c", code, *argv], env=env, check=True, timeout=60)
    return log


def test_the_probe_records_each_process_peak_and_the_step_it_ran(tmp_path):
    bench = _bench()
    # a task that touches 120 MB then frees it: the peak, not the RSS at exit, is recorded
    log = _run_probed(
        tmp_path, "x = b'1' * 120_000_000; del x", "--function_to_execute", "prepare_data"
    )
    _run_probed(tmp_path, "pass", "--function_to_execute", "gate")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["argv"][-1] for r in records] == ["prepare_data", "gate"]
    peaks = bench.peak_rss_by_step(log)
    assert set(peaks) == {"prepare-data", "gate"}
    assert peaks["prepare-data"] > 120 and peaks["gate"] < peaks["prepare-data"] - 100


def test_one_row_per_step_in_pipeline_order_then_run_local():
    bench = _bench()
    assert bench.step_of(["/x/run_local.py", "--rows", "5"]) == bench.RUN_LOCAL
    assert bench.step_of(["-m", "pip"]) is None
    rows = bench.step_rows(
        {"train": 12.0, "prepare-data": 3.0, "register": 1.0},
        {"prepare-data": 250.4, "train": 900.0, bench.RUN_LOCAL: 400.0},
    )
    assert rows == [
        {"step": "prepare-data", "seconds": 3.0, "peak_rss_mb": 250},
        {"step": "train", "seconds": 12.0, "peak_rss_mb": 900},
        {"step": "register", "seconds": 1.0, "peak_rss_mb": None},
        {"step": bench.RUN_LOCAL, "seconds": None, "peak_rss_mb": 400},
    ]
    table = bench.format_rows(rows)
    assert "prepare-data" in table and "250" in table and table.count("\n") == 4
