"""Local runs that stop with their tasks, resume after a kill and leave nothing stale.

kfp.local (2.17) starts each task with ``subprocess.Popen`` in ``run_local``'s own process
group and names every run ``<pipeline>-<timestamp>``: a SIGTERM to ``run_local`` left the task
running on its own (it finished and wrote into the dead run's directory), and a rerun started
from scratch under a new run id, so a run killed after registering registered a second version.

**Stopping** (:class:`TaskSupervisor`). Each task runs in a session (process group) of its own,
with :data:`TASK_ENV` naming its run directory. SIGINT, SIGTERM and SIGHUP stop every running
task's whole group (SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`), no task starts after,
and :class:`RunInterrupted` is raised in the main thread once the tasks are gone: when
``run_local`` exits, nothing of the run writes any more. A second signal skips the grace
period. A ``run_local`` killed with SIGKILL cannot stop its tasks; the next run in the same
output directory finds them by :data:`TASK_ENV` (``/proc``, Linux) and stops them first.

**Resuming** (:func:`plan_run`). Each run directory holds a record (:data:`RUN_RECORD`: run
name, fingerprint of the inputs, status). A rerun whose inputs have the same fingerprint
(:func:`run_fingerprint`: the pipeline's arguments, the user's source file's size and
modification time, the code's commit) as an unfinished run (interrupted, failed, or killed
outright) continues that run: the same run name, so the same run id in the registry (which
registers a run id once), the steps that finished reused (train and evaluate, the steps whose
policy allows caching, keyed as kfp.local's cache keys them; kept in the run directory, so they
never serve another run), the train step resuming from its backup. kfp.local's own cache is not
used: it treats a Metrics output (no file) as missing and never hits for our steps.
A finished run is never resumed: rerunning a finished command trains and gates a new run.

**Leftovers** (cleaned under the output directory's lock, so no other run is writing):
unfinished runs that are not resumed are deleted whole; finished runs lose their
``*.partial`` / ``*.backup`` directories and their cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

TASK_ENV = "VERTEX_IMBALANCED_LOCAL_RUN"
"""Set in every task's environment to its run directory (finds tasks of a killed run)."""
RUN_RECORD = "run.json"
"""The run's record in its run directory: ``run``, ``fingerprint``, ``status``, ``pid``."""
CACHE_DIR = ".steps"
"""Finished steps' outputs, inside the run directory: they only ever serve that run's resume."""
STOP_GRACE_S = 10.0
"""Seconds a task gets between SIGTERM and SIGKILL."""
LEFTOVER_SUFFIXES = (".partial", ".backup")
"""Task output siblings a killed train step leaves (staging and ``BackupAndRestore``)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

RUNNING, INTERRUPTED, FAILED, FINISHED = "running", "interrupted", "failed", "finished"


class RunInterrupted(KeyboardInterrupt):
    """``run_local`` got a stop signal; its tasks have been stopped.

    Attributes:
        signum: the signal's number (the exit status is ``128 + signum``).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process from ``/proc``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def has_proc() -> bool:
    """Whether ``/proc`` lists processes (Linux)."""
    return os.path.isdir(f"/proc/{os.getpid()}")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    if not has_proc():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            members.append(pid)
    return members


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        stat = _stat(p)
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(pgid: int, grace: float = STOP_GRACE_S) -> list[int]:
    """Stop a whole process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns:
        The group's live processes when called (empty: nothing to stop).
    """
    members = group_members(pgid)
    if members:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_gone(pgid, grace):
            _signal_group(pgid, signal.SIGKILL)
            _wait_gone(pgid, 5.0)
    return members


def tasks_under(root: Path) -> dict[int, list[int]]:
    """Live task processes of runs under ``root`` (by :data:`TASK_ENV`): ``{pgid: [pid]}``."""
    root = Path(root).resolve()
    found: dict[int, list[int]] = {}
    marker = (TASK_ENV + "=").encode()
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        value = next((e[len(marker) :] for e in entries if e.startswith(marker)), None)
        stat = _stat(pid)
        if value is None or stat is None or stat[0] in ("Z", "X"):
            continue
        if Path(os.fsdecode(value)).is_relative_to(root):
            found.setdefault(stat[2], []).append(pid)
    return found


def stop_tasks_under(root: Path, grace: float = STOP_GRACE_S) -> int:
    """Stop the task processes a killed ``run_local`` left under ``root``; how many there were."""
    groups = tasks_under(root)
    for pgid in groups:
        stop_group(pgid, grace)
    return sum(len(pids) for pids in groups.values())


# ----------------------------------------------------------------------------- supervision
class TaskSupervisor:
    """Runs kfp.local's task processes so that a stop signal stops them (see the module doc).

    Args:
        run_dir: the run's directory (put in each task's :data:`TASK_ENV`).
        grace: seconds between SIGTERM and SIGKILL when stopping a task.
    """

    def __init__(self, run_dir: Path, grace: float = STOP_GRACE_S) -> None:
        self.run_dir = Path(run_dir)
        self.grace = grace
        self.interrupted: int | None = None
        """The stop signal received, if any."""
        self.reused: list[str] = []
        """Steps taken from an earlier attempt of the run instead of running them."""
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._spawning = False
        self._keys: Any = None  # kfp.local's LocalCache: its key of a task's inputs

    def run_subprocess(self, full_command: list[str], env_vars: Mapping[str, str] | None = None):
        """kfp.local's ``run_local_subprocess``, each task in its own process group.

        Returns:
            The task's exit status.

        Raises:
            RunInterrupted: a stop signal came before the task could start or while it ran.
        """
        env = {**os.environ, **(env_vars or {}), TASK_ENV: str(self.run_dir)}
        main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if self.interrupted is not None:
                raise RunInterrupted(self.interrupted)
            # A signal handled inside Popen (it waits for the exec) must not raise there: the
            # child would run on, unknown to stop_all. The handler sees _spawning and returns.
            self._spawning = main
            try:
                process = subprocess.Popen(
                    full_command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                    env=env,
                    start_new_session=True,
                )
                self._running[process.pid] = process
            finally:
                self._spawning = False
        try:
            if self.interrupted is not None:  # signalled while the task was being started
                raise RunInterrupted(self.interrupted)
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                print(line, end="")
            print("\n")
            return process.wait()
        finally:
            with self._lock:
                self._running.pop(process.pid, None)
            # the group outlives its shell when the task was stopped, or left children behind
            stop_group(process.pid, self.grace)
            process.stdout.close()
            process.wait()

    def stop_all(self, signum: int = signal.SIGTERM) -> None:
        """Stop every running task's group (SIGKILL at once when ``signum`` is SIGKILL)."""
        with self._lock:
            groups = list(self._running)
        for pgid in groups:
            if signum == signal.SIGKILL:
                _signal_group(pgid, signal.SIGKILL)
            else:
                stop_group(pgid, self.grace)

    def _on_signal(self, signum: int, frame: Any) -> None:
        with self._lock:
            again = self.interrupted is not None
            self.interrupted = signum
        if again:
            self.stop_all(signal.SIGKILL)
            return
        self.stop_all()
        if not self._spawning:
            raise RunInterrupted(signum)

    # ------------------------------------------------------------------ steps
    def _task_dir(self, kwargs: Mapping[str, Any]) -> Path:
        return Path(kwargs["pipeline_root"], kwargs["pipeline_resource_name"], kwargs["task_name"])

    def _reuse_key(self, kwargs: Mapping[str, Any]) -> str | None:
        """Key of a cacheable container task's inputs (as kfp.local's cache computes it)."""
        from kfp.local import cache as cache_module
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

        task_spec = kwargs["task_spec"]
        component_name = task_spec.component_ref.name
        executor_spec = kwargs["executors"][kwargs["components"][component_name].executor_label]
        if not task_spec.caching_options.enable_cache or executor_spec.WhichOneof("spec") != (
            "container"
        ):
            return None
        container = executor_spec.container
        arguments = OrchestratorUtils.make_task_arguments(
            task_inputs_spec=task_spec.inputs, io_store=kwargs["io_store"]
        )
        if self._keys is None:
            self._keys = cache_module.LocalCache(str(self.run_dir / CACHE_DIR))
        return self._keys.compute_key(
            component_name=component_name,
            image=container.image,
            full_command=list(container.command) + list(container.args),
            arguments=arguments,
            env_vars={env.name: env.value for env in container.env},
        )

    def _reuse_path(self, task: str) -> Path:
        return self.run_dir / CACHE_DIR / f"{task}.json"

    def _execute_task(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def execute(**kwargs: Any) -> Any:
            task = kwargs["task_name"]
            key = self._reuse_key(kwargs)
            if key is not None:
                outputs = load_outputs(self._reuse_path(task), key)
                if outputs is not None:
                    self.reused.append(task)
                    print(f"Task '{task}' reused: it finished before the interruption")
                    return outputs, _success()
            clear_task_dir(self._task_dir(kwargs))
            outputs, status = original(**kwargs)
            if key is not None and status == _success():
                save_outputs(self._reuse_path(task), key, outputs)
            return outputs, status

        return execute

    @contextlib.contextmanager
    def installed(self) -> Iterator[TaskSupervisor]:
        """Within the block kfp.local runs its tasks through this supervisor.

        Signal handlers are installed when called from the main thread; on leaving the block
        (normally or not) every task still running is stopped and kfp.local is restored.
        """
        from kfp.local import subprocess_task_handler as handler
        from kfp.local.orchestrator import task_executor

        original_run = handler.run_local_subprocess
        original_execute = task_executor.execute_single_task
        handler.run_local_subprocess = self.run_subprocess
        task_executor.execute_single_task = self._execute_task(original_execute)
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            yield self
        finally:
            try:
                self.stop_all()
            finally:
                for signum, old in previous.items():
                    signal.signal(signum, old)
                handler.run_local_subprocess = original_run
                task_executor.execute_single_task = original_execute


@contextlib.contextmanager
def fixed_run_name(run_name: str) -> Iterator[None]:
    """Within the block kfp.local names the pipeline run ``run_name``, not a new timestamp.

    The name is the run's directory and ``dsl.PIPELINE_JOB_NAME_PLACEHOLDER`` (the registry's
    run id).
    """
    from kfp.local import executor_input_utils

    original = executor_input_utils.get_local_pipeline_resource_name
    executor_input_utils.get_local_pipeline_resource_name = lambda pipeline_name: run_name
    try:
        yield
    finally:
        executor_input_utils.get_local_pipeline_resource_name = original


def new_run_name(pipeline_name: str) -> str:
    """A new run's name, in kfp.local's form ``<pipeline>-<YYYY-mm-dd-HH-MM-SS-micro>``."""
    return f"{pipeline_name}-{datetime.datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')}"


def _success() -> Any:
    from kfp.local import status

    return status.Status.SUCCESS


_METRICS_SCHEMAS = ("system.Metrics", "system.ClassificationMetrics")
"""Artifacts kept in metadata only (no file at their URI)."""


def _artifact_json(artifact: Any) -> dict[str, Any]:
    return {
        "schema_title": type(artifact).schema_title,
        "name": artifact.name,
        "uri": artifact.uri,
        "metadata": artifact.metadata,
    }


def _artifact(data: Mapping[str, Any]) -> Any:
    from kfp.dsl import executor

    uri, schema = data["uri"], data["schema_title"]
    if not schema.startswith(_METRICS_SCHEMAS) and not os.path.exists(uri):
        raise FileNotFoundError(uri)
    return executor.create_artifact_instance(
        {
            "name": data["name"],
            "uri": uri,
            "metadata": data["metadata"],
            "type": {"schemaTitle": schema},
        }
    )


def save_outputs(path: Path, key: str, outputs: Mapping[str, Any]) -> None:
    """Keep a finished step's outputs for a resumed run (file written, then renamed)."""
    from kfp import dsl

    values: dict[str, Any] = {}
    for name, value in outputs.items():
        if isinstance(value, dsl.Artifact):
            values[name] = {"artifact": _artifact_json(value)}
        elif isinstance(value, list) and value and isinstance(value[0], dsl.Artifact):
            values[name] = {"artifacts": [_artifact_json(a) for a in value]}
        else:
            values[name] = {"value": value}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps({"key": key, "outputs": values}, default=str), encoding="utf-8")
    os.replace(tmp, path)


def load_outputs(path: Path, key: str) -> dict[str, Any] | None:
    """The outputs :func:`save_outputs` kept for ``key``.

    Returns:
        The outputs, or None when there are none, they were kept for another key, or a file
        artifact's file is gone.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data["key"] != key:
            return None
        outputs = {}
        for name, value in data["outputs"].items():
            if "artifact" in value:
                outputs[name] = _artifact(value["artifact"])
            elif "artifacts" in value:
                outputs[name] = [_artifact(a) for a in value["artifacts"]]
            else:
                outputs[name] = value["value"]
        return outputs
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_task_dir(task_dir: Path) -> None:
    """Before a step runs (again), delete what an earlier attempt left in its directory.

    Kept: ``*.backup`` (the train step's ``BackupAndRestore`` state: training resumes from it).
    """
    if not Path(task_dir).is_dir():
        return
    for entry in Path(task_dir).iterdir():
        if entry.name.endswith(".backup"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ----------------------------------------------------------------------------- run records
@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run directory's :data:`RUN_RECORD` says.

    Attributes:
        run: the run's name (its directory's name and its id in the registry).
        fingerprint: :func:`run_fingerprint` of its inputs.
        status: ``running``, ``interrupted``, ``failed`` or ``finished``.
        pid: the ``run_local`` process that wrote it last.
        started: when the run first started (UTC, ISO 8601).
    """

    run: str
    fingerprint: str
    status: str
    pid: int
    started: str


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record, or None (no record, or one that does not parse)."""
    try:
        data = json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
        return RunRecord(**{f.name: data[f.name] for f in dataclasses.fields(RunRecord)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Write the record (a new file renamed over the old one: a file rename, never a directory)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_RECORD}.{os.getpid()}-{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(record), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / RUN_RECORD)


def set_status(run_dir: Path, status: str) -> None:
    """Change the status in the run's record (nothing when it has none)."""
    record = read_record(run_dir)
    if record is not None:
        write_record(run_dir, dataclasses.replace(record, status=status, pid=os.getpid()))


def run_fingerprint(arguments: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    """Fingerprint of a run's inputs: equal for a rerun of the same command on the same data.

    Args:
        arguments: the pipeline's parameter values (JSON-serialisable).
        source: what identifies the user's data (e.g. path, size and modification time).

    Returns:
        16 hex digits.
    """
    text = json.dumps({"arguments": arguments, "source": source}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished_without_record(run_dir: Path) -> bool:
    # Runs from before the records: the gate runs in every finished run.
    return (run_dir / "gate" / "executor_output.json").is_file()


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete a stopped run's ``<task>/*.partial``, ``<task>/*.backup`` and cache directories."""
    removed = []
    candidates = [Path(run_dir) / CACHE_DIR]
    candidates += [p for p in Path(run_dir).glob("*/*") if p.name.endswith(LEFTOVER_SUFFIXES)]
    for path in candidates:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What :func:`plan_run` decided.

    Attributes:
        run_name: the run to start or continue.
        run_dir: its directory.
        resumed: the record of the run continued (None: a new run).
        lines: what was done, one line each (stopped tasks, removed leftovers).
    """

    run_name: str
    run_dir: Path
    resumed: RunRecord | None
    lines: tuple[str, ...]


def plan_run(root: Path, pipeline_name: str, fingerprint: str, *, fresh: bool = False) -> RunPlan:
    """Choose the run to start or continue under ``root``, and clean what killed runs left.

    Call under the output directory's lock (no other ``run_local`` writes under ``root``).
    Stops task processes left by a killed ``run_local``; continues the newest unfinished run
    with ``fingerprint`` unless ``fresh``; deletes every other unfinished run; removes the
    ``*.partial`` / ``*.backup`` leftovers and caches of finished runs.

    Args:
        root: the output directory's kfp.local pipeline root.
        pipeline_name: the pipeline's name (a new run's name starts with it).
        fingerprint: :func:`run_fingerprint` of this run's inputs.
        fresh: never continue an unfinished run.

    Returns:
        The plan; nothing is written for the new run yet (see :func:`start_record`).
    """
    root = Path(root)
    lines = []
    stopped = stop_tasks_under(root)
    if stopped:
        lines.append(f"stopped {stopped} task process(es) left running by a killed run")
    unfinished: list[tuple[Path, RunRecord | None]] = []
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for run_dir in [p for p in entries if p.is_dir() and not p.name.startswith(".")]:
        record = read_record(run_dir)
        finished = record.status == FINISHED if record else _finished_without_record(run_dir)
        if finished:
            remove_leftovers(run_dir)
        else:
            unfinished.append((run_dir, record))
    resume = None
    if not fresh:
        matching = [(d, r) for d, r in unfinished if r is not None and r.fingerprint == fingerprint]
        if matching:
            resume = max(matching, key=lambda item: item[1].started)
    for run_dir, record in unfinished:
        if resume is not None and run_dir == resume[0]:
            continue
        why = (
            "--fresh"
            if fresh and record and record.fingerprint == fingerprint
            else ("its inputs differ from this run's" if record else "it has no record")
        )
        shutil.rmtree(run_dir, ignore_errors=True)
        lines.append(f"removed unfinished run {run_dir.name} ({why})")
    if resume is not None:
        run_dir, record = resume
        lines.append(
            f"resuming run {record.run} ({record.status}; started {record.started}): finished "
            "steps are reused, the rest runs again (--fresh starts a new run)"
        )
        return RunPlan(record.run, run_dir, record, tuple(lines))
    name = new_run_name(pipeline_name)
    return RunPlan(name, root / name, None, tuple(lines))


def start_record(plan: RunPlan, fingerprint: str) -> None:
    """Write the planned run's record with status ``running`` (before any task starts)."""
    started = (
        plan.resumed.started
        if plan.resumed is not None
        else datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    write_record(plan.run_dir, RunRecord(plan.run_name, fingerprint, RUNNING, os.getpid(), started))
