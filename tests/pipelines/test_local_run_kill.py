"""run_local.py killed and rerun (issue 13 item 15), as real processes on a tiny demo table.

One module fixture runs the same command three times in one output directory:

1. SIGTERM right after the first epoch: the train step's processes stop with run_local and
   nothing of the run writes afterwards.
2. The rerun resumes that run (same run name) and is stopped right after the register step
   registered the model (run_local held with SIGSTOP while the step runs, then SIGTERM).
3. The rerun resumes again: train and evaluate are reused, the register step finds the run id
   already registered, and the registry holds exactly one version.

Every attempt's fingerprint includes the code's commit; GIT_DIR points nowhere so that other
writers of this checkout committing between the attempts do not make it a new run.
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

from pipelines.local_resume import FINISHED, RUN_RECORD, descendants, has_proc, stop_tasks_under
from pipelines.local_run import PIPELINE_ROOT_DIR, STEPS, SUMMARY_FILE

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_proc(), reason="needs /proc")]

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6


def complete_versions(registry):
    return sorted(p.parent.name for p in Path(registry).glob("*/*/COMPLETE"))


class Attempt:
    """One ``run_local.py`` process and what it printed."""

    def __init__(self, base):
        # small, but learnable enough to pass the gate's logistic-baseline check
        argv = ["--rows", "2000", "--epochs", str(EPOCHS), "--learning-rate", "3e-3"]
        argv += ["--min-metric", "0"]
        argv += ["--output-dir", str(base / "out"), "--registry", str(base / "registry")]
        self.process = subprocess.Popen(
            [sys.executable, "-u", "run_local.py", *argv],
            cwd=REPO,
            env={**os.environ, "GIT_DIR": str(base / "no-git")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self.tasks = []

    def wait_for(self, text):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return
        pytest.fail(f"{text!r} never printed:\n" + "\n".join(self.lines))

    def wait_for_task_process(self):
        deadline = time.monotonic() + 120
        while not descendants(self.process.pid):
            assert time.monotonic() < deadline, "no task process started"
            time.sleep(0.02)

    def stop(self, signum=signal.SIGTERM):
        self.tasks = descendants(self.process.pid)
        self.process.send_signal(signum)
        return self.finish()

    def finish(self):
        self.lines += self.process.stdout.read().splitlines()
        return self.process.wait(timeout=600)


@pytest.fixture(scope="module")
def attempts(tmp_path_factory):
    base = tmp_path_factory.mktemp("killed")
    registry = base / "registry"
    first = Attempt(base)
    first.wait_for("epoch 1/")
    rc_first = first.stop()
    after_first = snapshot(base)
    time.sleep(3.0)
    writes_after_first = {
        path: state for path, state in snapshot(base).items() if after_first.get(path) != state
    }
    orphans = [pid for pid in first.tasks if alive(pid)]

    second = Attempt(base)
    second.wait_for("[6/6] register ...")
    second.wait_for_task_process()
    second.process.send_signal(signal.SIGSTOP)  # the register step runs on, run_local waits
    deadline = time.monotonic() + 300
    while not complete_versions(registry) and time.monotonic() < deadline:
        time.sleep(0.1)
    registered_while_stopped = complete_versions(registry)
    second.process.send_signal(signal.SIGTERM)
    second.process.send_signal(signal.SIGCONT)
    rc_second = second.finish()

    third = Attempt(base)
    rc_third = third.finish()
    summary_path = base / "out" / SUMMARY_FILE
    return {
        "base": base,
        "first": (rc_first, first),
        "orphans": orphans,
        "writes_after_first": writes_after_first,
        "second": (rc_second, second),
        "registered_while_stopped": registered_while_stopped,
        "third": (rc_third, third),
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
    }


def run_line(lines):
    resumed = [line for line in lines if line.startswith("resuming run ")]
    return resumed[0].split()[2] if resumed else None


def test_sigterm_stops_the_train_step_and_nothing_writes_after(attempts):
    rc, first = attempts["first"]
    assert rc == 128 + signal.SIGTERM, "\n".join(first.lines)
    assert first.tasks, "the train step had no process when run_local was stopped"
    assert attempts["orphans"] == []
    assert attempts["writes_after_first"] == {}
    assert stop_tasks_under(attempts["base"]) == 0
    assert any("interrupted by SIGTERM" in line and "rerun" in line for line in first.lines)


def test_a_rerun_resumes_the_killed_run_and_registers_it_once(attempts):
    rc, second = attempts["second"]
    assert rc == 128 + signal.SIGTERM, "\n".join(second.lines)
    assert attempts["registered_while_stopped"] == ["1"]
    rc, third = attempts["third"]
    assert rc == 0, "\n".join(third.lines)
    run_dirs = sorted((attempts["base"] / "out" / PIPELINE_ROOT_DIR).iterdir())
    assert len(run_dirs) == 1  # every attempt was the same run
    run = run_dirs[0].name
    assert run_line(second.lines) == run_line(third.lines) == run
    # the steps that finished in the second attempt are not run again
    for task in ("train", "evaluate"):
        assert f"      {task}: reused (it finished before the interruption)" in third.lines
    summary = attempts["summary"]
    assert summary["run"] == run and summary["resumed"] is True
    assert set(summary["step_seconds"]) == set(STEPS)
    assert summary["registered"]["version"] == "1"
    registry = attempts["base"] / "registry"
    assert complete_versions(registry) == ["1"]
    (name,) = [p.name for p in registry.iterdir() if p.is_dir()]
    assert (registry / name / "1" / "run_id").read_text() == run


def test_the_resumed_training_continues_after_the_stopped_epoch(attempts):
    _, second = attempts["second"]
    epochs = [int(m[1]) for line in second.lines if (m := re.search(r"epoch (\d+)/", line))]
    assert epochs and epochs[0] > 1, "\n".join(second.lines)


def test_the_finished_run_keeps_no_leftovers(attempts):
    out = attempts["base"] / "out" / PIPELINE_ROOT_DIR
    (run_dir,) = out.iterdir()
    assert json.loads((run_dir / RUN_RECORD).read_text())["status"] == FINISHED
    leftovers = [str(p) for p in run_dir.rglob("*") if p.name.endswith((".partial", ".backup"))]
    assert leftovers == []
    assert not (run_dir / ".steps").exists()
