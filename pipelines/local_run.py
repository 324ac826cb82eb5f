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
import errno
import io
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from vertex_imbalanced import options_check as check
from vertex_imbalanced.artifacts import REPORT_FILE, metrics_path
from vertex_imbalanced.config import (
    DEFAULT_IMBALANCE_MODE,
    DEFAULT_NA_VALUES,
    IMBALANCE_MODES,
    LABEL_POLICIES,
    FeatureSpec,
)
from vertex_imbalanced.errors import OutputBusyError, PipelineInputError, PipelineRunError
from vertex_imbalanced.warehouse.local_import import (
    ROW_KEY,
    DataRequest,
    SourceCheck,
    StagedSource,
    check_source,
    describe_roles,
    split_source,
    stage_demo,
    stage_source,
)
from vertex_imbalanced.warehouse.prepare import PreparedData

DEFAULT_OUTPUT_DIR = "build/local_run"
DEFAULT_REGISTRY = "build/registry"
DEFAULT_ROWS = 100_000
DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)
SUMMARY_FILE = "summary.json"
LOG_FILE = "pipeline.log"
LOCK_FILE = ".run.lock"
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
_WARNING_LINE = re.compile(r"^\s*\S+:\d+: (\w*Warning): (.*)$")
_EPOCH_LINE = re.compile(r"^\s*(?:\[[^\]]*\]:?\s*)?(epoch \d+/\d+: .*)$")
"""The train step's one line per epoch (``epoch 3/20: loss ... val_loss ... rows/s ...``)."""
_DISK_FULL = re.compile(r"No space left on device|Errno 28|ENOSPC|Disk quota exceeded")


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class LocalRunOptions:
    """Everything a local run needs (``run_local.py``'s options, parsed).

    Attributes:
        source: CSV/Parquet path or DuckDB URI; None for the generated demo table.
        label, key: label and unique row key columns (label required with ``source``; a
            CSV/Parquet file without ``key`` gets a ``row_key`` column).
        features: feature columns (None: all other columns, roles from their types).
        ignore: columns left out.
        classes: class names in id order (None: inferred from the train split, sorted).
        label_policy: ``error`` or ``skip`` rows whose label is NULL (or outside ``classes``).
        na_values: CSV text read as missing (None: ``config.DEFAULT_NA_VALUES``).
        feature_config: YAML/JSON feature-config file (the pipeline's ``feature_config``);
            the options above override its keys.
        split_ratios: train, validation, test shares (None: 0.8, 0.1, 0.1).
        rows, seed: size and seed of the demo table.
        output_dir: where the run writes (summary, log, work database, kfp.local's root).
        registry: local registry directory (shared across runs: champions persist).
        model_name: registered model name (None: the pipeline's default).
        imbalance_mode, max_ratio: how the train split is rebalanced (max_ratio 0: no cap).
        min_metric, tolerance: the gate's settings.
        epochs, batch_size, learning_rate, hidden_units: hyperparameters (None: defaults).
        verbose: echo every line kfp.local prints instead of one line per step event.
    """

    source: str | None = None
    label: str | None = None
    key: str | None = None
    features: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    label_policy: str | None = None
    na_values: tuple[str, ...] | None = None
    feature_config: str | None = None
    split_ratios: tuple[float, ...] | None = None
    rows: int = DEFAULT_ROWS
    seed: int = 7
    output_dir: str = DEFAULT_OUTPUT_DIR
    registry: str = DEFAULT_REGISTRY
    model_name: str | None = None
    imbalance_mode: str = DEFAULT_IMBALANCE_MODE
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
            InputProblemsError: invalid values, each named (checked here, not three steps in).
        """
        values = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "hidden_units": list(self.hidden_units) if self.hidden_units else None,
        }
        hyper = {name: value for name, value in values.items() if value is not None}
        problems = check.Problems()
        problems.extend(check.hyperparameter_problems(hyper, HYPERPARAMETER_OPTIONS))
        problems.raise_if_any()
        return hyper


HYPERPARAMETER_OPTIONS = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "hidden_units": "--hidden-units",
}
TEXT_OPTIONS = {
    "int": ("rows", "seed", "epochs", "batch_size"),
    "float": ("max_ratio", "min_metric", "tolerance", "learning_rate"),
    "names": ("features", "ignore", "classes"),
}
"""Command-line options given as text and converted by :func:`options_from_text`."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def options_from_text(values: Mapping[str, Any]) -> tuple[LocalRunOptions, list[str]]:
    """Convert ``run_local.py``'s text options, collecting every value that does not convert.

    Args:
        values: option name (``LocalRunOptions`` field) -> text (or a typed default).

    Returns:
        The options (fields that did not convert keep their defaults) and one problem line
        per bad value.
    """
    problems = check.Problems()
    out: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(value, str):
            out[name] = value
        elif name in TEXT_OPTIONS["int"]:
            try:
                out[name] = int(value)
            except ValueError:
                problems.add(f"{_option(name)}: {value!r} is not an integer")
        elif name in TEXT_OPTIONS["float"]:
            number = check.parse_number(_option(name), value, problems)
            if number is not None:
                out[name] = number
        elif name in TEXT_OPTIONS["names"]:
            out[name] = check.name_list(value)
        elif name == "hidden_units":
            out[name] = check.int_list("--hidden-units", value, problems)
        elif name == "split_ratios":
            out[name] = check.parse_ratios("--split-ratios", value, problems)
        elif name == "na_values":
            out[name] = tuple(item.strip() for item in value.split(","))
        else:
            out[name] = value
    return LocalRunOptions(**out), problems.lines


def option_problems(options: LocalRunOptions) -> list[str]:
    """Every problem of the option values alone (no file or table read), one line each."""
    from vertex_imbalanced.registry.local import validate_model_name

    p = check.Problems()
    p.add(check.finite_number("--min-metric", options.min_metric, minimum=0.0, maximum=1.0))
    p.add(check.finite_number("--tolerance", options.tolerance, minimum=0.0))
    ratio = check.finite_number("--max-ratio", options.max_ratio, minimum=0.0)
    if not ratio and 0 < options.max_ratio < 1:
        ratio = f"--max-ratio: {options.max_ratio} must be >= 1 (or 0: no cap)"
    p.add(ratio)
    p.add(check.one_of("--imbalance-mode", options.imbalance_mode, IMBALANCE_MODES))
    if options.label_policy is not None:
        p.add(check.one_of("--label-policy", options.label_policy, LABEL_POLICIES))
    p.add(check.matches("--model-name", options.model_name, validate_model_name))
    if options.split_ratios is not None:
        p.add(check.split_ratios("--split-ratios", options.split_ratios))
    if options.source is None and options.rows <= 0:
        p.add(f"--rows: must be > 0, got {options.rows}")
    if options.source is not None:
        p.attempt("--source", lambda: split_source(options.source))
        if not options.label:
            p.add("--label: required with --source")
    if options.classes and len(set(options.classes)) != len(options.classes):
        p.add(f"--classes: duplicate class names in {list(options.classes)}")
    taken = {options.label, options.key} - {None}
    for option, names in (("--features", options.features), ("--ignore", options.ignore)):
        for name in sorted(taken & set(names or ())):
            p.add(f"{option}: {name!r} is the label or the key column")
    both = set(options.features or ()) & set(options.ignore or ())
    if both:
        p.add(f"--ignore: {sorted(both)} are also listed in --features")
    hyper = {
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "hidden_units": list(options.hidden_units) if options.hidden_units else None,
    }
    given = {k: v for k, v in hyper.items() if v is not None}
    p.extend(check.hyperparameter_problems(given, HYPERPARAMETER_OPTIONS))
    return p.lines


def read_feature_config(path: str | None, problems: check.Problems) -> dict[str, Any]:
    """The feature-config file as a dict (empty if none); unreadable files and keys -> problems."""
    if path is None:
        return {}
    known = {f.name for f in dataclasses.fields(FeatureSpec)}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        problems.add(f"--feature-config: cannot read {path}: {err}")
        return {}
    if not isinstance(data, dict):
        problems.add(f"--feature-config: {path} is not a mapping of feature-config keys")
        return {}
    for name in sorted(set(data) - known):
        problems.add(f"--feature-config: unknown key {name!r} in {path} (known: {sorted(known)})")
    if data.get("weight"):
        problems.add("--feature-config: 'weight' is not supported (the prepare step adds it)")
    return {k: v for k, v in data.items() if k in known}


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return check.name_list(value) or ()
    from vertex_imbalanced.config import class_name

    return tuple(class_name(v) for v in value)


def data_request(
    options: LocalRunOptions, config: Mapping[str, Any], default_key: str | None
) -> DataRequest:
    """The table request: command-line options over the feature-config file's keys."""
    features = options.features
    numeric = categorical = ()
    if features is None:
        numeric, categorical = _names(config.get("numeric")), _names(config.get("categorical"))
    na_values = options.na_values
    if na_values is None:
        na_values = _names(config["na_values"]) if "na_values" in config else DEFAULT_NA_VALUES
    return DataRequest(
        label=options.label or config.get("label"),
        key=options.key or config.get("key") or default_key,
        features=features,
        numeric=numeric,
        categorical=categorical,
        ignored=options.ignore if options.ignore is not None else _names(config.get("ignored")),
        classes=options.classes if options.classes is not None else _names(config.get("classes")),
        label_policy=options.label_policy or config.get("label_policy") or "error",
        na_values=tuple(na_values),
        split_ratios=tuple(options.split_ratios or DEFAULT_SPLIT_RATIOS),
    )


# ----------------------------------------------------------------------------- output directory
class OutputLock:
    """Exclusive use of an output directory for one run (``<dir>/.run.lock``, ``flock``).

    The lock is the kernel's: it goes away with the process, so a crashed run never leaves
    a directory busy. A directory this lock created is removed again on :meth:`release`
    with ``remove_if_created`` when it holds nothing but the lock file.
    """

    def __init__(self, path: str | Path) -> None:
        """Create the directory if needed and take its lock.

        Raises:
            OutputBusyError: another run holds the lock (names the directory and its pid).
            PipelineInputError: the directory cannot be created or written.
        """
        import fcntl

        self.path = Path(path).resolve()
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise PipelineInputError(
                f"output directory {str(self.path)!r} is not writable: {err}"
            ) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise OutputBusyError(
                f"output directory {str(self.path)!r} is busy: another run (pid {holder}) is "
                "writing there; wait for it to finish or pass another --output-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self, *, remove_if_created: bool = False) -> None:
        """Give the directory back (the lock file stays: removing it would race)."""
        import fcntl

        if self._fd < 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
        if remove_if_created and self.created:
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink()
                self.path.rmdir()


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


# ----------------------------------------------------------------------------- the input
@dataclasses.dataclass(frozen=True)
class LocalSource:
    """The accepted table a local run reads.

    Attributes:
        uri: ``duckdb:///abs/file.db?table=name`` in the run's work database.
        spec: every role, the classes in id order, the label policy.
        description: what the user named, for the summary.
        check: the outcome of the checks (warnings, label counts, skipped rows).
        declared_classes: the classes were given (``--classes`` / feature config), not inferred.
    """

    uri: str
    spec: FeatureSpec
    description: str
    check: SourceCheck
    declared_classes: bool = False


def _stage(
    options: LocalRunOptions,
    work_dir: Path,
    request: DataRequest,
    add_key: bool,
    problems: check.Problems,
) -> StagedSource | None:
    if options.source is None:
        return problems.attempt("--rows", lambda: stage_demo(work_dir, options.rows, options.seed))
    return problems.attempt(
        "--source",
        lambda: stage_source(
            options.source,
            work_dir,
            key=None if add_key else request.key,
            label=request.label,
            na_values=request.na_values,
        ),
    )


def prepare_input(
    options: LocalRunOptions, work_dir: Path, problems: check.Problems
) -> LocalSource | None:
    """Stage the source in ``work_dir`` and check it with the options: all problems at once.

    Appends every problem to ``problems``; the staged copy is moved into place only when
    there is none (and deleted otherwise).

    Returns:
        The accepted source, or None when there are problems.
    """
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC

    config = read_feature_config(options.feature_config, problems)
    add_key = False
    if options.source is None and options.rows <= 0:
        return None  # reported by option_problems
    if options.source is not None and split_source_or_none(options.source) is None:
        return None  # reported by option_problems
    if options.source is None:
        default = dataclasses.replace(options, label=options.label or DEMO_SPEC.label)
        request = data_request(default, config, options.key or DEMO_SPEC.key)
    else:
        kind = split_source_or_none(options.source)
        has_key = bool(options.key or config.get("key"))
        add_key = kind == "file" and not has_key
        request = data_request(options, config, ROW_KEY if add_key else None)
        if kind == "duckdb" and not has_key:
            problems.add("--key: required with a DuckDB --source (a unique row key column)")
    staged = _stage(options, work_dir, request, add_key, problems)
    if staged is None:
        return None
    try:
        checked = check_source(staged, request)
    except BaseException:
        staged.discard()
        raise
    problems.extend(checked.problems)
    if problems or checked.spec is None:
        staged.discard()
        return None
    description = options.source or staged.description
    declared = bool(request.classes)
    return LocalSource(staged.commit(), checked.spec, description, checked, declared)


def split_source_or_none(source: str) -> str | None:
    """``"duckdb"``, ``"file"`` or None (an unknown form, reported elsewhere)."""
    try:
        return split_source(source)[0]
    except PipelineInputError:
        return None


def class_mapping_line(spec: FeatureSpec, declared: bool) -> str:
    """``classes: 0=bad 1=good (inferred from the train split, sorted)``."""
    how = "as declared" if declared else "inferred from the train split, sorted"
    mapping = "  ".join(f"{i}={name!r}" for i, name in enumerate(spec.classes))
    return f"classes: {mapping}  ({how})"


def input_lines(source: LocalSource, declared: bool) -> list[str]:
    """What run_local prints before the pipeline starts: roles, classes, skipped, warnings."""
    lines = [f"columns: {line}" for line in describe_roles(source.spec, source.check.types)]
    lines.append(class_mapping_line(source.spec, declared))
    if source.check.skipped:
        lines.append(
            f"label policy skip: {source.check.skipped} row(s) with a NULL label or one outside "
            "the classes are left out"
        )
    lines += [f"warning: {line}" for line in source.check.warnings]
    return lines


def pipeline_arguments(
    options: LocalRunOptions, source: LocalSource, registry: Path
) -> dict[str, Any]:
    """The pipeline's parameter values for a local run."""
    from pipelines.training_pipeline import DEFAULT_MODEL_NAME
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
        except (RuntimeError, OSError) as err:
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
    """Classes, split and class counts, skipped rows, keep rates, kept/weighted counts, mode.

    ``classes`` in id order; ``skipped_labels`` per split (rows left out by the label policy).
    """
    imbalance = prepared.imbalance
    return {
        "classes": list(prepared.classes),
        "label_policy": prepared.spec.label_policy,
        "skipped_labels": prepared.skipped_labels,
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


def _split_order(splits: Mapping[str, Any]) -> list[str]:
    """Split names train, validation, test first (JSON sorts them alphabetically)."""
    order = ("train", "validation", "test")
    return sorted(splits, key=lambda name: (order.index(name) if name in order else 3, name))


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's human-readable lines (data, test metrics, per class, gate, registry)."""
    splits = summary["data"]["split_counts"] or {}
    m = summary["metrics"]
    gate = summary["gate"]
    data = summary["data"]
    skipped = data.get("skipped_labels") or {}
    skipped_line = (
        [
            f"skipped: {sum(skipped.values())} row(s) with a NULL label or one outside the "
            "classes (" + ", ".join(f"{k}={v}" for k, v in skipped.items()) + ")"
        ]
        if sum(skipped.values())
        else []
    )
    classes = data.get("classes") or []
    return "\n".join(
        [
            f"data: {summary['source']}; splits "
            + ", ".join(f"{name}={sum(splits[name].values())}" for name in _split_order(splits)),
            *skipped_line,
            "classes: " + "  ".join(f"{i}={name!r}" for i, name in enumerate(classes)),
            f"test: macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
            f"accuracy {m['accuracy']:.4f}",
            *_per_class_lines(m["per_class"] or {}),
            f"gate: {'PASSED' if gate['passed'] else 'REJECTED'} - {gate['reason']}",
            _registered_line(summary["registered"]),
            f"report: {summary['paths']['report']}",
        ]
    )


# ----------------------------------------------------------------------------- one call
def _remove_if_new_and_empty(path: Path, existed: bool) -> None:
    if not existed:
        with contextlib.suppress(OSError):
            path.rmdir()


def run_local(
    options: LocalRunOptions, problems: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check everything, then prepare the source, run the pipeline, write the summary.

    Every problem of the options and the input is found in one pass before any step runs
    (:func:`option_problems`, :func:`prepare_input`); then nothing is left behind (no work
    database, no new output or registry directory).

    Args:
        options: the run's options.
        problems: problems already found while parsing the command line.

    Returns:
        The summary (:func:`build_summary` plus ``step_seconds`` and ``seconds``), also
        written to ``OUTPUT_DIR/summary.json``.

    Raises:
        InputProblemsError: every problem of the options and the input (nothing ran).
        OutputBusyError: another run uses the output directory.
        PipelineRunError: a task failed, or the gate passed and nothing was registered.
    """
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
        run_dir, seconds = run_pipeline(arguments, lock.path, verbose=options.verbose)
        summary = build_summary(run_dir, source.description)
        summary["step_seconds"] = seconds
        summary["seconds"] = round(time.monotonic() - started, 1)
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


def main(options: LocalRunOptions, problems: list[str] | tuple[str, ...] = ()) -> int:
    """Run :func:`run_local`, print the summary or the error lines; return the exit status.

    Returns:
        0 on success, 2 for bad input (nothing ran), 1 when the pipeline failed.
    """
    try:
        summary = run_local(options, problems)
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
    """``run_local.py``'s call: convert the text options (collecting problems) and run."""
    options, problems = options_from_text(values)
    return main(options, problems)
