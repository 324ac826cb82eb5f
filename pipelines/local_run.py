"""Run the training pipeline on this machine with kfp.local (what ``run_local.py`` calls).

The same pipeline definition as on Vertex AI (:mod:`pipelines.training_pipeline`), with the
run's DuckDB work database (:mod:`pipelines.local_input`, which checks every option and the
input in one pass first) and a local registry directory. Each task runs in this interpreter
(``SubprocessRunner(use_venv=False)``); the summary comes from :mod:`pipelines.local_summary`.

What a run prints (README, "Run it locally"): the columns' roles and the classes, one pair of
lines per step (with the task's warnings and the train step's epoch lines), then a summary::

    output: /abs/build/local_run   registry: /abs/build/registry
    columns: label: label (INT64)
    columns: numeric: x1 (FLOAT64)           (one line per column: label, key, roles, ignored)
    classes: 0='0'  1='1'  2='2'  (inferred from the train split, sorted)
    warning: ...                             (text columns holding numbers, classes without rows)
    removed unfinished run <name> (...)      (leftovers of stopped runs, see local_resume)
    resuming run <name> (interrupted; ...)   (a rerun of a run that did not finish)
    [1/6] prepare-data ...
          prepare-data: success in 2.2 s
    [2/6] train ...
          warning (train): ...               (each Python warning a task emits, once)
          epoch 1/20: loss ... val_loss ... rows/s ...   (when the train step prints it)
          train: reused (it finished before the interruption)   (resumed runs)
    ...
          register skipped: the gate did not pass, nothing registered   (when it did not)
    data: demo data (100000 rows); splits train=..., validation=..., test=...
    skipped: N row(s) with a NULL label ...  (label policy skip, when any)
    classes: 0='0'  1='1'  2='2'
    test: macro F1 0.9445  weighted F1 ...  accuracy ...
         0: precision ... recall ... f1 ... support ...
    gate: PASSED - <reason>
    registered: <name> version <n> [<aliases>] at <path>     (or "registered: nothing")
    report: <path of report.html>
    summary: <output dir>/summary.json  (<seconds> s)

and writes ``OUTPUT_DIR/summary.json`` (:func:`build_summary` lists its keys) and the full
kfp.local log ``OUTPUT_DIR/pipeline.log``.

Ctrl-C / SIGTERM / SIGHUP stop the running step's processes before ``run_local`` exits
(status ``128 + signal``), and a rerun of the same command resumes the run
(:mod:`pipelines.local_resume`).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pipelines.local_input import (
    DEFAULT_SPLIT_RATIOS,
    LocalRunOptions,
    LocalSource,
    OutputLock,
    check_output_dir,
    input_lines,
    option_problems,
    options_from_text,
    prepare_input,
)
from pipelines.local_resume import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RunInterrupted,
    TaskSupervisor,
    fixed_run_name,
    new_run_name,
    plan_run,
    remove_leftovers,
    run_fingerprint,
    set_status,
    start_record,
)
from pipelines.local_summary import build_summary, format_summary
from vertex_imbalanced import options_check as check
from vertex_imbalanced.errors import PipelineInputError, PipelineRunError

SUMMARY_FILE = "summary.json"
LOG_FILE = "pipeline.log"
PIPELINE_ROOT_DIR = "pipeline_root"
STEPS = ("prepare-data", "train", "evaluate", "lookup-champion", "gate", "register")
"""The pipeline's task names, in the order the step numbers ``[i/6]`` use."""
__all__ = [
    "STEPS",
    "SUMMARY_FILE",
    "LocalRunOptions",
    "KfpLocalOutput",
    "RunInterrupted",
    "build_summary",
    "format_summary",
    "main",
    "main_from_text",
    "run_local",
    "run_pipeline",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)):\s?(.*)$")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")
_REUSED = re.compile(r"Task '([^']+)' reused: ")
_WARNING_LINE = re.compile(r"^\s*\S+:\d+: (\w*Warning): (.*)$")
_EPOCH_LINE = re.compile(r"^\s*(?:\[[^\]]*\]:?\s*)?(epoch \d+/\d+: .*)$")
"""The train step's one line per epoch (``epoch 3/20: loss ... val_loss ... rows/s ...``)."""
_DISK_FULL = re.compile(r"No space left on device|Errno 28|ENOSPC|Disk quota exceeded")


def local_model_name(options: LocalRunOptions, label: str) -> str:
    """The registry name of a local run: ``--model-name``, or derived from the user's table.

    The pipeline would derive the name from the table it reads, which locally is always the
    run's staged copy; the user's own table (the DuckDB table, the CSV/Parquet file's stem, or
    ``demo``) keeps reruns on the same data under one champion and different data apart.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri
    from vertex_imbalanced.registry.champion import default_model_name
    from vertex_imbalanced.warehouse.local_import import split_source

    if options.model_name:
        return options.model_name
    if options.source is None:
        return default_model_name(duckdb_uri("/demo.duckdb", "demo"), label)
    kind, path = split_source(options.source)
    if kind == "duckdb":
        return default_model_name(options.source, label)
    stem = re.sub(r"\W", "_", path.stem, flags=re.ASCII).strip("_") or "table"
    if stem[0].isdigit():
        stem = f"t_{stem}"
    return default_model_name(duckdb_uri("/local.duckdb", stem), label)


def pipeline_arguments(
    options: LocalRunOptions, source: LocalSource, registry: Path
) -> dict[str, Any]:
    """The pipeline's parameter values for a local run."""
    from vertex_imbalanced.registry.provenance import current_git_commit

    train, validation, test = options.split_ratios or DEFAULT_SPLIT_RATIOS
    return {
        "source_uri": source.uri,
        "feature_config": source.spec.to_json(),
        "train_ratio": train,
        "validation_ratio": validation,
        "test_ratio": test,
        "imbalance_mode": options.imbalance_mode,
        "imbalance_max_ratio": options.max_ratio,
        "hyperparameters": json.dumps(options.hyperparameters()),
        "min_metric": options.min_metric,
        "tolerance": options.tolerance,
        "model_display_name": local_model_name(options, source.spec.label),
        "registry_uri": f"local://{registry}",
        "git_commit": current_git_commit(),
    }


# ----------------------------------------------------------------------------- progress lines
def started_line(task: str) -> str:
    """``[2/6] train ...`` (``?`` for a task outside :data:`STEPS`)."""
    step = STEPS.index(task) + 1 if task in STEPS else "?"
    return f"[{step}/{len(STEPS)}] {task} ..."


def finished_line(task: str, status: str, seconds: float) -> str:
    """``      train: success in 17.3 s``."""
    return f"      {task}: {status.lower()} in {seconds:.1f} s"


def reused_line(task: str) -> str:
    """The line for a step a resumed run takes from the interrupted run."""
    return f"      {task}: reused (it finished before the interruption)"


def skipped_line(task: str) -> str:
    """The line for a conditional task kfp.local skipped (only ``register`` is conditional)."""
    return f"      {task} skipped: the gate did not pass, nothing registered"


class KfpLocalOutput(io.TextIOBase):
    """Where kfp.local's stdout goes: the log file, one line per step event, and a tail.

    kfp.local logs ``Executing task 'x'`` and ``Task 'x' finished with status S``; everything
    else a task prints is kept (last 400 lines per task) so a failure can be named by its last
    exception line. kfp 2.17 logs a skipped conditional task below its log level (nothing is
    printed), so :meth:`finish` reports the tasks that never started.

    Also echoed: every Python warning a task emits (``warning: ...``, once per text) and the
    train step's one line per epoch (``epoch 3/20: loss ...``). When the log file cannot be
    written (e.g. the disk is full) logging stops, :attr:`log_error` keeps the error and the
    run goes on: the console lines and the failing task's own error still come through.
    """

    def __init__(self, log: TextIO, echo: TextIO, verbose: bool = False) -> None:
        """Write everything to ``log``; step lines (or, verbose, everything) to ``echo``."""
        self._log, self._echo, self._verbose = log, echo, verbose
        self.log_error: OSError | None = None
        self._warned: set[str] = set()
        self._partial = ""
        self._task = ""
        self._started: dict[str, float] = {}
        self.tail: dict[str, collections.deque[str]] = {}
        self.seconds: dict[str, float] = {}
        """Seconds each finished task took, rounded to 0.1."""

    def writable(self) -> bool:
        """Always True."""
        return True

    def write(self, text: str) -> int:
        """Log ``text`` and react to each complete line in it."""
        self._write_log(text)
        if self._verbose:
            self._echo.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _write_log(self, text: str) -> None:
        if self.log_error is not None:
            return
        try:
            self._log.write(text)
        except OSError as err:
            self.log_error = err

    @property
    def task(self) -> str:
        """The task that started last ('' before the first)."""
        return self._task

    def flush(self) -> None:
        """Flush the log and the echo stream."""
        if self.log_error is None:
            try:
                self._log.flush()
            except OSError as err:
                self.log_error = err
        self._echo.flush()

    def _say(self, text: str) -> None:
        if not self._verbose:
            self._echo.write(text + "\n")
            self._echo.flush()

    def _line(self, line: str) -> None:
        if m := _STARTED.search(line):
            self._task = m[1]
            self._started[m[1]] = time.monotonic()
            self.tail[m[1]] = collections.deque(maxlen=400)
            self._say(started_line(m[1]))
        elif m := _REUSED.search(line):
            self._started[m[1]] = time.monotonic()
            self.seconds[m[1]] = 0.0
            self._say(started_line(m[1]))
            self._say(reused_line(m[1]))
        elif m := _FINISHED.search(line):
            seconds = time.monotonic() - self._started.get(m[1], time.monotonic())
            self.seconds[m[1]] = round(seconds, 1)
            self._say(finished_line(m[1], m[2], seconds))
        elif self._task:
            self.tail[self._task].append(line)
            if m := _WARNING_LINE.match(line):
                if m[2] not in self._warned:
                    self._warned.add(m[2])
                    self._say(f"      warning ({self._task}): {m[2]}")
            elif m := _EPOCH_LINE.match(line):
                self._say(f"      {m[1]}")

    def finish(self, tasks: tuple[str, ...]) -> list[str]:
        """Print the skipped line of each of ``tasks`` that never started; return those tasks."""
        skipped = [task for task in tasks if task not in self._started]
        for task in skipped:
            self._echo.write(skipped_line(task) + "\n")
        self._echo.flush()
        return skipped

    def reason(self, task: str) -> str:
        """The last exception line ``task`` printed, or a hint to read the log."""
        for line in reversed(self.tail.get(task, ())):
            if m := _ERROR_LINE.match(line):
                return f"{m[1]}: {m[3]}"
        return "see the log for details"


# ----------------------------------------------------------------------------- running
@contextlib.contextmanager
def named_output_conditions() -> Iterator[None]:
    """Within the block, let kfp.local evaluate ``dsl.If`` on a named output.

    kfp 2.17's local orchestrator resolves condition channels only for single outputs
    (``task-Output``); ``pipelinechannel--gate-passed`` (``gate.outputs["passed"]``) is looked
    up as a pipeline input and the condition silently evaluates to False. Inside the block the
    lookup falls back to task name + output key (split at the last ``-``: output keys are
    Python identifiers); the original lookup is restored on exit. Vertex is unaffected.
    """
    from kfp.local.orchestrator import enhanced_dag_orchestrator as orchestrator

    evaluator = orchestrator.ConditionEvaluator
    original = evaluator.__dict__["_resolve_pipeline_channel"]
    lookup = original.__func__

    def resolve(channel_ref: str, io_store: Any) -> Any:
        ref = channel_ref.replace("pipelinechannel--", "")
        task, sep, key = ref.rpartition("-")
        if sep and "--" not in ref and not ref.endswith("-Output"):
            with contextlib.suppress(Exception):
                return io_store.get_task_output(task, key)
        return lookup(channel_ref, io_store)

    evaluator._resolve_pipeline_channel = staticmethod(resolve)
    try:
        yield
    finally:
        evaluator._resolve_pipeline_channel = original


def _quiet_local_warnings() -> None:
    # kfp.local warns that display names, retries and resources only apply on Vertex ...
    warnings.filterwarnings("ignore", message=r".*no effect in the current local runner.*")
    # ... and that the components' base image (the project image) is not used here.
    warnings.filterwarnings("ignore", message=r".*custom or non-Python base image.*")


def disk_full(text: str) -> bool:
    """True when an error text says the disk (or quota) is full."""
    return bool(_DISK_FULL.search(text))


def failure_message(task: str, reason: str, log_path: Path, log_error: OSError | None) -> str:
    """The one line for a failed run: the task, its error, the disk if full, the log."""
    if disk_full(reason) or (log_error is not None and disk_full(str(log_error))):
        where = log_path.parent
        cause = reason if disk_full(reason) else f"{reason}; the log could not be written"
        return (
            f"pipeline stopped: task {task!r} failed: the disk is full ({cause}); free space "
            f"on the disk of {where} and rerun"
        )
    log = f"full log: {log_path}" if log_error is None else f"log incomplete: {log_error}"
    return f"pipeline stopped: task {task!r} failed: {reason} ({log})"


def _failure(err: BaseException, sink: KfpLocalOutput, log_path: Path) -> PipelineRunError:
    failed = _FAILED_TASK.findall(_ANSI.sub("", str(err)))
    task = failed[0] if failed else (sink.task or "?")
    reason = sink.reason(task)
    if isinstance(err, OSError) or reason == "see the log for details" and not failed:
        reason = f"{type(err).__name__}: {err}"
    return PipelineRunError(failure_message(task, reason, log_path, sink.log_error))


def run_pipeline(
    arguments: dict[str, Any],
    output_dir: Path,
    verbose: bool = False,
    echo: TextIO | None = None,
    *,
    run_name: str | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> tuple[Path, dict[str, float]]:
    """Run the pipeline with kfp.local in this interpreter, its tasks under supervision.

    Each task runs in a process group of its own (:class:`pipelines.local_resume.TaskSupervisor`):
    SIGINT, SIGTERM or SIGHUP stop the running task's whole group before
    :class:`RunInterrupted` is raised, so nothing of the run writes after this returns. Steps
    that finished in an earlier attempt of the same ``run_name`` with the same inputs are
    reused (only the steps whose policy allows caching: train, evaluate); a step that runs
    again starts from an empty directory except the train step's backup.

    Args:
        arguments: the pipeline's parameter values (:func:`pipeline_arguments`).
        output_dir: existing directory; gets ``pipeline.log`` and ``pipeline_root/<run>/``.
        verbose: echo every line kfp.local prints.
        echo: where step lines go (default: ``sys.stdout`` at call time).
        run_name: the run to start or continue (None: a new name, kfp.local's form); it is
            also the run id the register step gives the registry.
        on_start: called with the run directory (created) before the first task starts.

    Returns:
        The run directory and the seconds each task took (``{task: seconds}``; 0.0 for a
        reused step).

    Raises:
        PipelineRunError: naming the failed task and its last exception line.
        RunInterrupted: a stop signal came; the running task has been stopped.
    """
    from kfp import local

    from pipelines.training_pipeline import PIPELINE_NAME, build_pipeline

    root = output_dir / PIPELINE_ROOT_DIR
    run_name = run_name or new_run_name(PIPELINE_NAME)
    run_dir = root / run_name
    continued = run_dir.is_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(None, retries=False)
    log_path = output_dir / LOG_FILE
    if on_start is not None:
        on_start(run_dir)
    supervisor = TaskSupervisor(run_dir)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("a" if continued else "w"))
        if continued:
            log.write(f"\n===== run {run_name} continued =====\n")
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(named_output_conditions())
        stack.enter_context(fixed_run_name(run_name))
        _quiet_local_warnings()
        sink = KfpLocalOutput(log, echo or sys.stdout, verbose)
        try:
            with supervisor.installed(), contextlib.redirect_stdout(sink):
                pipeline(**arguments)
        except RunInterrupted:
            sink.flush()
            raise
        except (RuntimeError, OSError) as err:
            if supervisor.interrupted is not None:
                raise RunInterrupted(supervisor.interrupted) from err
            raise _failure(err, sink, log_path) from err
        sink.finish(STEPS)
    return run_dir, sink.seconds


# ----------------------------------------------------------------------------- one call
def _remove_if_new_and_empty(path: Path, existed: bool) -> None:
    if not existed:
        with contextlib.suppress(OSError):
            path.rmdir()


def source_identity(options: LocalRunOptions) -> dict[str, Any]:
    """What identifies the user's data in the run's fingerprint.

    The demo's rows and seed; for a file or DuckDB database its resolved path, size and
    modification time (a rewritten file is new data), and the ``--source`` text itself.
    """
    from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri
    from vertex_imbalanced.warehouse.local_import import split_source

    if options.source is None:
        return {"demo_rows": options.rows, "demo_seed": options.seed}
    kind, path = split_source(options.source)
    file = Path(parse_duckdb_uri(options.source).path if kind == "duckdb" else path).resolve()
    stat = file.stat()
    return {
        "source": options.source,
        "file": str(file),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def run_local(
    options: LocalRunOptions,
    problems: list[str] | tuple[str, ...] = (),
    *,
    fresh: bool = False,
) -> dict[str, Any]:
    """Check everything, then prepare the source, run (or resume) the pipeline, write the summary.

    Every problem of the options and the input is found in one pass before any step runs
    (:func:`option_problems`, :func:`prepare_input`); then nothing is left behind (no work
    database, no new output or registry directory).

    A run that was stopped (signal, failed step, killed outright) is resumed by a rerun with
    the same inputs (:mod:`pipelines.local_resume`): same run name and registry run id,
    finished steps reused; ``fresh`` starts a new run instead. Leftovers of stopped runs in
    the output directory are removed (:func:`pipelines.local_resume.plan_run`).

    Args:
        options: the run's options.
        problems: problems already found while parsing the command line.
        fresh: never resume an unfinished run (it is deleted).

    Returns:
        The summary (:func:`build_summary` plus ``step_seconds``, ``seconds``, ``run`` and
        ``resumed``), also written to ``OUTPUT_DIR/summary.json``.

    Raises:
        InputProblemsError: every problem of the options and the input (nothing ran).
        OutputBusyError: another run uses the output directory.
        PipelineRunError: a task failed, or the gate passed and nothing was registered.
        RunInterrupted: a stop signal came; the running task was stopped (rerun to resume).
    """
    from pipelines.training_pipeline import PIPELINE_NAME

    started = time.monotonic()
    found = check.Problems()
    found.extend(problems)
    found.extend(option_problems(options))
    lock = OutputLock(options.output_dir)
    accepted = False
    try:
        registry_existed = Path(options.registry).exists()
        registry = found.attempt("--registry", lambda: check_output_dir(options.registry))
        source = prepare_input(options, lock.path, found)
        if found or source is None:
            if registry is not None:
                _remove_if_new_and_empty(registry, registry_existed)
            found.raise_if_any()
        accepted = True
        print(f"output: {lock.path}   registry: {registry}")
        for line in input_lines(source, source.declared_classes):
            print(line)
        arguments = pipeline_arguments(options, source, registry)
        fingerprint = run_fingerprint(arguments, source_identity(options))
        plan = plan_run(lock.path / PIPELINE_ROOT_DIR, PIPELINE_NAME, fingerprint, fresh=fresh)
        for line in plan.lines:
            print(line)
        try:
            run_dir, seconds = run_pipeline(
                arguments,
                lock.path,
                verbose=options.verbose,
                run_name=plan.run_name,
                on_start=lambda _: start_record(plan, fingerprint),
            )
        except RunInterrupted:
            set_status(plan.run_dir, INTERRUPTED)
            raise
        except BaseException:
            set_status(plan.run_dir, FAILED)
            raise
        set_status(run_dir, FINISHED)
        remove_leftovers(run_dir)
        summary = build_summary(run_dir, source.description)
        summary["step_seconds"] = seconds
        summary["seconds"] = round(time.monotonic() - started, 1)
        summary["run"] = plan.run_name
        summary["resumed"] = plan.resumed is not None
        path = lock.path / SUMMARY_FILE
        try:
            path.write_text(json.dumps(summary, indent=2, sort_keys=True))
        except OSError as err:
            raise PipelineRunError(
                f"the run finished but {path} could not be written: {err}"
                + (" (the disk is full)" if err.errno == errno.ENOSPC else "")
            ) from err
        return summary
    finally:
        lock.release(remove_if_created=not accepted)


def error_text(err: Exception) -> str:
    """The lines ``main`` prints for an error: one line, or one per problem."""
    problems = getattr(err, "problems", None)
    if problems and len(problems) == 1:
        return f"error: {problems[0]}"
    if problems:
        return f"error: {len(problems)} problems found before anything ran:\n  " + "\n  ".join(
            problems
        )
    return f"error: {err}"


def main(
    options: LocalRunOptions, problems: list[str] | tuple[str, ...] = (), *, fresh: bool = False
) -> int:
    """Run :func:`run_local`, print the summary or the error lines; return the exit status.

    Returns:
        0 on success, 2 for bad input (nothing ran), 1 when the pipeline failed,
        ``128 + signal`` when a signal stopped it (130 for Ctrl-C, 143 for SIGTERM).
    """
    try:
        summary = run_local(options, problems, fresh=fresh)
    except RunInterrupted as err:
        print(
            f"error: {err}: the running task was stopped; rerun the same command to resume "
            "(--fresh starts over)",
            file=sys.stderr,
        )
        return 128 + err.signum
    except PipelineInputError as err:
        print(error_text(err), file=sys.stderr)
        return 2
    except PipelineRunError as err:
        print(error_text(err), file=sys.stderr)
        return 1
    except OSError as err:  # run_local's own files (log, work database) on a full disk
        disk = " (the disk is full)" if err.errno == errno.ENOSPC else ""
        print(f"error: run_local could not write its files: {err}{disk}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"summary: {Path(options.output_dir).resolve() / SUMMARY_FILE}  ({summary['seconds']} s)")
    return 0


def main_from_text(values: Mapping[str, Any]) -> int:
    """``run_local.py``'s call: convert the text options (collecting problems) and run.

    ``values`` may hold ``fresh`` (bool) besides the :class:`LocalRunOptions` fields.
    """
    values = dict(values)
    fresh = bool(values.pop("fresh", False))
    options, problems = options_from_text(values)
    return main(options, problems, fresh=fresh)
