"""Stopping, resuming and cleaning local runs (pipelines.local_resume), with real processes.

The signal tests run a two-step kfp.local pipeline (tests/pipelines/local_toy_pipeline.py) in
a subprocess under the same TaskSupervisor run_local uses, signal it, and look at the process
table (/proc) and the files afterwards. The run_local end-to-end kill/resume test is in
test_local_run_kill.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_checks import alive, snapshot

from pipelines.local_resume import (
    CACHE_DIR,
    FINISHED,
    INTERRUPTED,
    RUN_RECORD,
    TASK_ENV,
    RunRecord,
    clear_task_dir,
    descendants,
    has_proc,
    load_outputs,
    plan_run,
    read_record,
    run_fingerprint,
    save_outputs,
    stop_tasks_under,
    write_record,
)

pytestmark = pytest.mark.skipif(not has_proc(), reason="needs /proc (Linux)")

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "pipelines" / "local_toy_pipeline.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def start_toy(out, seconds):
    return subprocess.Popen(
        [sys.executable, "-u", str(TOY), str(out), str(seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def signal_when(process, text, signum, wait_for_child=False):
    """Send ``signum`` once ``text`` is printed; returns (task processes then, output)."""
    lines = []
    for line in process.stdout:
        lines.append(ANSI.sub("", line))
        if text in lines[-1]:
            break
    else:
        pytest.fail(f"{text!r} never printed:\n{''.join(lines)}")
    deadline = time.monotonic() + 30
    tasks = descendants(process.pid)
    while wait_for_child and not tasks and time.monotonic() < deadline:
        time.sleep(0.02)
        tasks = descendants(process.pid)
    process.send_signal(signum)
    rest = process.stdout.read()
    process.wait(timeout=60)
    return tasks, "".join(lines) + rest


def marker(out):
    path = Path(out) / "marker.txt"
    return path.read_text().split() if path.is_file() else []


def assert_stopped_without_writes(out, tasks):
    assert [pid for pid in tasks if alive(pid)] == []
    assert stop_tasks_under(out) == 0  # no process of the run is left anywhere
    files = snapshot(out)
    time.sleep(2.0)
    assert snapshot(out) == files
    assert "second" not in marker(out)


def test_sigterm_stops_the_running_task_and_a_rerun_resumes(tmp_path):
    toy = start_toy(tmp_path, 30)
    tasks, output = signal_when(toy, "second started", signal.SIGTERM, wait_for_child=True)
    assert toy.returncode == 128 + signal.SIGTERM, output
    assert tasks, "the running step had no process to stop"
    assert_stopped_without_writes(tmp_path, tasks)
    assert marker(tmp_path) == ["first"]

    again = subprocess.run(
        [sys.executable, str(TOY), str(tmp_path), "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == "reused: first"
    assert "Task 'first' reused: it finished before the interruption" in again.stdout
    assert marker(tmp_path) == ["first", "second"]  # the finished step did not run twice


def test_sigint_while_a_task_is_being_launched_leaves_no_task(tmp_path):
    """The signal may come while Popen waits for the exec: the new task is stopped too."""
    toy = start_toy(tmp_path, 30)
    tasks, output = signal_when(toy, "Executing task 'second'", signal.SIGINT)
    assert toy.returncode == 128 + signal.SIGINT, output
    assert_stopped_without_writes(tmp_path, tasks)


def test_tasks_left_by_a_killed_parent_are_found_and_stopped(tmp_path):
    """What a SIGKILL of run_local leaves (its tasks run on) is stopped by the next run."""
    run_dir = tmp_path / "pipeline_root" / "run-1"
    run_dir.mkdir(parents=True)
    env = {**os.environ, TASK_ENV: str(run_dir)}
    code = "import os, time; os.fork(); time.sleep(60)"  # a task and a child of it
    orphan = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while len(descendants(orphan.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        child = descendants(orphan.pid)[0]
        assert stop_tasks_under(tmp_path / "pipeline_root") == 2
        orphan.wait(timeout=10)
        assert not alive(orphan.pid) and not alive(child)
        assert alive(other.pid)  # not a task of this output directory
        assert stop_tasks_under(tmp_path / "pipeline_root") == 0
    finally:
        other.kill()
        other.wait()
        orphan.kill()
        orphan.wait()


# ----------------------------------------------------------------------------- plans
def make_run(root, name, fingerprint, status, started="2026-01-01T00:00:00+00:00"):
    run_dir = root / name
    (run_dir / "train" / "model").mkdir(parents=True)
    if status is not None:
        write_record(run_dir, RunRecord(name, fingerprint, status, 1, started))
    return run_dir


def test_plan_resumes_the_unfinished_run_with_the_same_inputs_and_cleans_the_rest(tmp_path):
    root = tmp_path / "pipeline_root"
    done = make_run(root, "p-1", "aaaa", FINISHED)
    (done / "train" / "model.backup").mkdir()
    (done / "train" / "model.partial").mkdir()
    (done / CACHE_DIR).mkdir()
    other_inputs = make_run(root, "p-2", "bbbb", INTERRUPTED)
    older_same = make_run(root, "p-3", "aaaa", "running", "2026-01-01T00:00:00+00:00")
    newest_same = make_run(root, "p-4", "aaaa", INTERRUPTED, "2026-01-02T00:00:00+00:00")
    (newest_same / "train" / "model.backup").mkdir()
    legacy_killed = make_run(root, "p-5", "", None)  # no record, the gate never ran
    legacy_done = make_run(root, "p-6", "", None)
    (legacy_done / "gate").mkdir()
    (legacy_done / "gate" / "executor_output.json").write_text("{}")
    (legacy_done / "train" / "model.partial").mkdir()

    plan = plan_run(root, "p", "aaaa")

    assert plan.run_name == "p-4" and plan.run_dir == newest_same
    assert plan.resumed == read_record(newest_same)
    assert (newest_same / "train" / "model.backup").is_dir()  # kept: training resumes from it
    assert not other_inputs.exists() and not older_same.exists() and not legacy_killed.exists()
    assert (done / "train" / "model").is_dir() and (legacy_done / "train" / "model").is_dir()
    assert sorted(p.name for p in (done / "train").iterdir()) == ["model"]
    assert (
        not (done / CACHE_DIR).exists() and not (legacy_done / "train" / "model.partial").exists()
    )
    assert plan.lines[-1].startswith("resuming run p-4 (interrupted; started 2026-01-02")
    assert "removed unfinished run p-2 (its inputs differ from this run's)" in plan.lines


def test_plan_starts_a_new_run_after_a_finished_one_or_with_fresh(tmp_path):
    root = tmp_path / "pipeline_root"
    make_run(root, "p-1", "aaaa", FINISHED)
    (root / ".kfp_cache").mkdir()  # not a run: left alone
    plan = plan_run(root, "p", "aaaa")
    assert plan.resumed is None and plan.run_name.startswith("p-20")
    assert (root / "p-1").is_dir() and (root / ".kfp_cache").is_dir()
    stopped = make_run(root, "p-2", "aaaa", INTERRUPTED)
    plan = plan_run(root, "p", "aaaa", fresh=True)
    assert plan.resumed is None and not stopped.exists()
    assert plan.lines == ("removed unfinished run p-2 (--fresh)",)
    assert plan_run(tmp_path / "nothing", "p", "aaaa").resumed is None


def test_record_is_replaced_by_a_file_rename(tmp_path):
    write_record(tmp_path, RunRecord("r", "f", "running", 1, "t"))
    write_record(tmp_path, RunRecord("r", "f", FINISHED, 2, "t"))
    assert json.loads((tmp_path / RUN_RECORD).read_text())["status"] == FINISHED
    assert [p.name for p in tmp_path.iterdir()] == [RUN_RECORD]
    (tmp_path / RUN_RECORD).write_text("{not json")
    assert read_record(tmp_path) is None


def test_fingerprint_follows_every_input():
    arguments = {"source_uri": "duckdb:///x.db?table=t", "hyperparameters": '{"epochs": 2}'}
    source = {"file": "/data/x.csv", "size": 10, "mtime_ns": 1}
    base = run_fingerprint(arguments, source)
    assert base == run_fingerprint(dict(reversed(arguments.items())), source)
    assert base != run_fingerprint({**arguments, "hyperparameters": '{"epochs": 3}'}, source)
    assert base != run_fingerprint(arguments, {**source, "mtime_ns": 2})


# ----------------------------------------------------------------------------- step outputs
def test_kept_outputs_come_back_only_for_the_same_key_and_existing_files(tmp_path):
    from kfp import dsl

    model = dsl.Model(name="model", uri=str(tmp_path / "model"), metadata={"classes": ["a"]})
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={"f1": 0.5})
    (tmp_path / "model").mkdir()
    path = tmp_path / CACHE_DIR / "train.json"
    save_outputs(path, "k1", {"model": model, "metrics": metrics, "Output": 3})
    outputs = load_outputs(path, "k1")
    assert isinstance(outputs["model"], dsl.Model) and outputs["model"].uri == model.uri
    assert outputs["model"].metadata == {"classes": ["a"]}
    assert outputs["metrics"].metadata == {"f1": 0.5}  # a Metrics artifact has no file
    assert outputs["Output"] == 3
    assert load_outputs(path, "k2") is None
    (tmp_path / "model").rmdir()
    assert load_outputs(path, "k1") is None
    assert load_outputs(tmp_path / "absent.json", "k1") is None


def test_a_step_that_runs_again_starts_empty_but_keeps_its_backup(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_text("x")
    (tmp_path / "model.partial").mkdir()
    (tmp_path / "model.backup").mkdir()
    (tmp_path / "executor_output.json").write_text("{}")
    clear_task_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.backup"]
    clear_task_dir(tmp_path / "absent")
