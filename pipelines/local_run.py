"""Run the training pipeline on this machine with kfp.local (what ``run_local.py`` calls).

The same pipeline definition as on Vertex AI (:mod:`pipelines.training_pipeline`), with a
DuckDB source (:mod:`vertex_imbalanced.warehouse.local_import`) and a local registry
directory. Each task runs in this interpreter (``SubprocessRunner(use_venv=False)``).

What a run prints (README, "Run it locally"), one pair of lines per step, then a summary::

    output: /abs/build/local_run   registry: /abs/build/registry
    [1/6] prepare-data ...
          prepare-data: success in 2.2 s
    ...
          register skipped: the gate did not pass, nothing registered   (when it did not)
    data: demo data (100000 rows); splits train=..., validation=..., test=...
    test: macro F1 0.9445  weighted F1 ...  accuracy ...
         0: precision ... recall ... f1 ... support ...
    gate: PASSED - <reason>
    registered: <name> version <n> [<aliases>] at <path>     (or "registered: nothing")
    report: <path of report.html>
    summary: <output dir>/summary.json  (<seconds> s)

and writes ``OUTPUT_DIR/summary.json`` (:func:`build_summary` lists its keys) and the full
kfp.local log ``OUTPUT_DIR/pipeline.log``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from vertex_imbalanced.artifacts import REPORT_FILE, metrics_path
from vertex_imbalanced.errors import PipelineInputError, PipelineRunError
from vertex_imbalanced.warehouse.local_import import LocalSource, demo_source, resolve_source
from vertex_imbalanced.warehouse.prepare import PreparedData

DEFAULT_OUTPUT_DIR = "build/local_run"
DEFAULT_REGISTRY = "build/registry"
DEFAULT_ROWS = 100_000
SUMMARY_FILE = "summary.json"
LOG_FILE = "pipeline.log"
PIPELINE_ROOT_DIR = "pipeline_root"
STEPS = ("prepare-data", "train", "evaluate", "lookup-champion", "gate", "register")
"""The pipeline's task names, in the order the step numbers ``[i/6]`` use."""
METRIC_KEYS = (
    "macro_f1",
    "weighted_f1",
    "accuracy",
    "per_class",
    "confusion_matrix",
    "calibration",
    "classes",
)
"""The keys of ``metrics.json`` copied into the summary."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)):\s?(.*)$")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class LocalRunOptions:
    """Everything a local run needs (``run_local.py``'s options, parsed).

    Attributes:
        source: CSV/Parquet path or DuckDB URI; None for the generated demo table.
        label, key: label and unique row key columns (label required with ``source``).
        features: feature columns (None: all other columns, roles inferred by prepare).
        rows, seed: size and seed of the demo table.
        output_dir: where the run writes (summary, log, kfp.local's pipeline root).
        registry: local registry directory (shared across runs: champions persist).
        model_name: registered model name (None: the pipeline's default).
        imbalance_mode, max_ratio: how the train split is rebalanced.
        min_metric, tolerance: the gate's settings.
        epochs, batch_size, learning_rate, hidden_units: hyperparameters (None: defaults).
        verbose: echo every line kfp.local prints instead of one line per step event.
    """

    source: str | None = None
    label: str | None = None
    key: str | None = None
    features: tuple[str, ...] | None = None
    rows: int = DEFAULT_ROWS
    seed: int = 7
    output_dir: str = DEFAULT_OUTPUT_DIR
    registry: str = DEFAULT_REGISTRY
    model_name: str | None = None
    imbalance_mode: str = "downsample_upweight"
    max_ratio: float = 10.0
    min_metric: float = 0.5
    tolerance: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    hidden_units: tuple[int, ...] | None = None
    verbose: bool = False

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters set on the command line (the rest keep their defaults).

        Raises:
            PipelineInputError: an invalid value (checked here, not three steps in).
        """
        from vertex_imbalanced.config import Hyperparameters

        values = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "hidden_units": list(self.hidden_units) if self.hidden_units else None,
        }
        hyper = {name: value for name, value in values.items() if value is not None}
        Hyperparameters.from_dict(hyper)
        return hyper


def check_output_dir(path: str | Path) -> Path:
    """Create a directory and prove it is writable.

    Returns:
        The absolute path.

    Raises:
        PipelineInputError: it cannot be created or written (names it and the OS error).
    """
    out = Path(path).resolve()
    probe = out / ".write-probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PipelineInputError(f"output directory {str(out)!r} is not writable: {err}") from err
    return out


def local_source(options: LocalRunOptions, work_dir: Path) -> LocalSource:
    """The demo table, or the user's ``--source`` imported / checked, with its feature spec."""
    if options.source is None:
        return demo_source(
            work_dir,
            options.rows,
            options.seed,
            label=options.label,
            key=options.key,
            features=options.features,
        )
    return resolve_source(
        options.source, work_dir, label=options.label, key=options.key, features=options.features
    )


def pipeline_arguments(
    options: LocalRunOptions, source: LocalSource, registry: Path
) -> dict[str, Any]:
    """The pipeline's parameter values for a local run.

    Raises:
        PipelineInputError: an invalid hyperparameter.
    """
    from pipelines.training_pipeline import DEFAULT_MODEL_NAME
    from vertex_imbalanced.registry.provenance import current_git_commit

    return {
        "source_uri": source.uri,
        "feature_config": source.spec.to_json(),
        "imbalance_mode": options.imbalance_mode,
        "imbalance_max_ratio": options.max_ratio,
        "hyperparameters": json.dumps(options.hyperparameters()),
        "min_metric": options.min_metric,
        "tolerance": options.tolerance,
        "model_display_name": options.model_name or DEFAULT_MODEL_NAME,
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


def skipped_line(task: str) -> str:
    """The line for a conditional task kfp.local skipped (only ``register`` is conditional)."""
    return f"      {task} skipped: the gate did not pass, nothing registered"


class KfpLocalOutput(io.TextIOBase):
    """Where kfp.local's stdout goes: the log file, one line per step event, and a tail.

    kfp.local logs ``Executing task 'x'`` and ``Task 'x' finished with status S``; everything
    else a task prints is kept (last 400 lines per task) so a failure can be named by its last
    exception line. kfp 2.17 logs a skipped conditional task below its log level (nothing is
    printed), so :meth:`finish` reports the tasks that never started.
    """

    def __init__(self, log: TextIO, echo: TextIO, verbose: bool = False) -> None:
        """Write everything to ``log``; step lines (or, verbose, everything) to ``echo``."""
        self._log, self._echo, self._verbose = log, echo, verbose
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
        self._log.write(text)
        if self._verbose:
            self._echo.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        """Flush the log and the echo stream."""
        self._log.flush()
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
        elif m := _FINISHED.search(line):
            seconds = time.monotonic() - self._started.get(m[1], time.monotonic())
            self.seconds[m[1]] = round(seconds, 1)
            self._say(finished_line(m[1], m[2], seconds))
        elif self._task:
            self.tail[self._task].append(line)

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


def _failure(err: RuntimeError, sink: KfpLocalOutput, log_path: Path) -> PipelineRunError:
    failed = _FAILED_TASK.findall(_ANSI.sub("", str(err)))
    task = failed[0] if failed else "?"
    return PipelineRunError(
        f"pipeline stopped: task {task!r} failed: {sink.reason(task)} (full log: {log_path})"
    )


def run_pipeline(
    arguments: dict[str, Any],
    output_dir: Path,
    verbose: bool = False,
    echo: TextIO | None = None,
) -> tuple[Path, dict[str, float]]:
    """Run the pipeline with kfp.local in this interpreter.

    Args:
        arguments: the pipeline's parameter values (:func:`pipeline_arguments`).
        output_dir: existing directory; gets ``pipeline.log`` and ``pipeline_root/<run>/``.
        verbose: echo every line kfp.local prints.
        echo: where step lines go (default: ``sys.stdout`` at call time).

    Returns:
        The run directory and the seconds each task took (``{task: seconds}``).

    Raises:
        PipelineRunError: naming the failed task and its last exception line.
    """
    from kfp import local

    from pipelines.training_pipeline import build_pipeline

    root = output_dir / PIPELINE_ROOT_DIR
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(None, retries=False)
    log_path = output_dir / LOG_FILE
    with log_path.open("w") as log, warnings.catch_warnings(), named_output_conditions():
        _quiet_local_warnings()
        sink = KfpLocalOutput(log, echo or sys.stdout, verbose)
        try:
            with contextlib.redirect_stdout(sink):
                pipeline(**arguments)
        except RuntimeError as err:
            raise _failure(err, sink, log_path) from err
        sink.finish(STEPS)
    runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise PipelineRunError(f"kfp.local wrote no run directory under {root}")
    return runs[-1], sink.seconds


# ----------------------------------------------------------------------------- summary
class RunOutputs:
    """The task outputs kfp.local wrote under one run directory (``<run>/<task>/...``)."""

    def __init__(self, run_dir: Path) -> None:
        """Read from ``run_dir`` (a directory under the pipeline root)."""
        self.run_dir = Path(run_dir)

    def task_output(self, task: str) -> dict[str, Any] | None:
        """The task's executor output (``artifacts``, ``parameterValues``); None if it did not run."""
        from kfp.local.executor_input_utils import _EXECUTOR_OUTPUT_FILE

        path = self.run_dir / task / _EXECUTOR_OUTPUT_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def parameters(self, task: str) -> dict[str, Any]:
        """The task's output parameters (empty if it did not run)."""
        return (self.task_output(task) or {}).get("parameterValues", {})

    def artifact_path(self, task: str, name: str) -> Path:
        """Local path of the task's output artifact ``name``."""
        output = self.task_output(task) or {}
        artifacts = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
        return Path(artifacts[0]["uri"]) if artifacts else self.run_dir / task / name


def data_summary(prepared: PreparedData) -> dict[str, Any]:
    """Split and class counts, keep rates, kept and weighted counts, mode."""
    imbalance = prepared.imbalance
    return {
        "split_counts": prepared.split_counts,
        "class_counts": imbalance.get("original_counts"),
        "keep_rates": imbalance.get("keep_rates"),
        "kept_counts": imbalance.get("kept_counts"),
        "weighted_counts": imbalance.get("weighted_counts"),
        "imbalance_mode": imbalance.get("mode"),
    }


def registered_summary(register_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Name, version, path and aliases of the registered version (None: nothing registered)."""
    if register_parameters is None:
        return None
    version = json.loads(register_parameters["registered_json"])
    return {
        "name": version["name"],
        "version": version["version"],
        "path": version["uri"],
        "aliases": version["aliases"],
    }


def check_registration(run_dir: Path, gate_passed: bool, registered: Any) -> None:
    """The guard against kfp.local skipping ``register`` although the gate passed.

    Raises:
        PipelineRunError: the gate passed and nothing was registered.
    """
    if gate_passed and registered is None:
        raise PipelineRunError(
            f"the gate passed but the register task did not run ({run_dir}); "
            "kfp.local skipped the dsl.If branch"
        )


def paths_summary(outputs: RunOutputs) -> dict[str, str]:
    """Paths of the HTML report, the model, ``metrics.json`` and the run directory."""
    evaluation = outputs.artifact_path("evaluate", "evaluation")
    report = evaluation / REPORT_FILE
    if not report.is_file():
        report = outputs.artifact_path("evaluate", "report")
    return {
        "report": str(report),
        "model": str(outputs.artifact_path("train", "model")),
        "metrics": str(metrics_path(evaluation)),
        "run_dir": str(outputs.run_dir),
    }


def build_summary(run_dir: Path, source: str) -> dict[str, Any]:
    """The ``summary.json`` content, read from the run's task outputs.

    Keys: ``run``, ``source``, ``data`` (:func:`data_summary`), ``metrics`` (the
    :data:`METRIC_KEYS` of ``metrics.json``), ``gate`` (``passed``, ``reason``), ``registered``
    (:func:`registered_summary`), ``paths`` (:func:`paths_summary`).

    Raises:
        PipelineRunError: the gate passed but nothing was registered.
        PipelineInputError: the prepare step's output cannot be read.
    """
    outputs = RunOutputs(run_dir)
    prepared = PreparedData.read(outputs.artifact_path("prepare-data", "prepared"))
    evaluation = outputs.artifact_path("evaluate", "evaluation")
    metrics = json.loads(metrics_path(evaluation).read_text())
    gate = outputs.parameters("gate")
    register = outputs.task_output("register")
    registered = registered_summary(None if register is None else register["parameterValues"])
    check_registration(outputs.run_dir, bool(gate.get("passed")), registered)
    return {
        "run": outputs.run_dir.name,
        "source": source,
        "data": data_summary(prepared),
        "metrics": {key: metrics.get(key) for key in METRIC_KEYS},
        "gate": {"passed": bool(gate.get("passed")), "reason": gate.get("reason", "")},
        "registered": registered,
        "paths": paths_summary(outputs),
    }


def _per_class_lines(per_class: dict[str, dict[str, float]]) -> list[str]:
    return [
        f"  {name:>12}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
        f"f1 {row['f1']:.3f} support {int(row['support'])}"
        for name, row in per_class.items()
    ]


def _registered_line(registered: dict[str, Any] | None) -> str:
    if not registered:
        return "registered: nothing"
    return (
        f"registered: {registered['name']} version {registered['version']} "
        f"{registered['aliases']} at {registered['path']}"
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's human-readable lines (data, test metrics, per class, gate, registry)."""
    splits = summary["data"]["split_counts"] or {}
    m = summary["metrics"]
    gate = summary["gate"]
    return "\n".join(
        [
            f"data: {summary['source']}; splits "
            + ", ".join(f"{name}={sum(counts.values())}" for name, counts in splits.items()),
            f"test: macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
            f"accuracy {m['accuracy']:.4f}",
            *_per_class_lines(m["per_class"] or {}),
            f"gate: {'PASSED' if gate['passed'] else 'REJECTED'} - {gate['reason']}",
            _registered_line(summary["registered"]),
            f"report: {summary['paths']['report']}",
        ]
    )


# ----------------------------------------------------------------------------- one call
def run_local(options: LocalRunOptions) -> dict[str, Any]:
    """Prepare the source, run the pipeline, write and return the summary.

    Returns:
        The summary (:func:`build_summary` plus ``step_seconds`` and ``seconds``), also
        written to ``OUTPUT_DIR/summary.json``.

    Raises:
        PipelineInputError: bad options or source, found before the pipeline starts.
        PipelineRunError: a task failed, or the gate passed and nothing was registered.
    """
    started = time.monotonic()
    options.hyperparameters()  # fail here, not three steps in
    output_dir = check_output_dir(options.output_dir)
    registry = check_output_dir(options.registry)
    print(f"output: {output_dir}   registry: {registry}")
    source = local_source(options, output_dir)
    arguments = pipeline_arguments(options, source, registry)
    run_dir, seconds = run_pipeline(arguments, output_dir, verbose=options.verbose)
    summary = build_summary(run_dir, source.description)
    summary["step_seconds"] = seconds
    summary["seconds"] = round(time.monotonic() - started, 1)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def main(options: LocalRunOptions) -> int:
    """Run :func:`run_local`, print the summary or one error line; return the exit status.

    Returns:
        0 on success, 2 for bad input (nothing ran), 1 when the pipeline failed.
    """
    try:
        summary = run_local(options)
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PipelineRunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"summary: {Path(options.output_dir).resolve() / SUMMARY_FILE}  ({summary['seconds']} s)")
    return 0


def split_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None or blank -> None (for list options)."""
    items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
    return items or None


def int_list(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``.

    Raises:
        ValueError: an item is not an integer (argparse reports it as a bad option value).
    """
    return tuple(int(item) for item in split_list(text) or ())
