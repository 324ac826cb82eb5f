"""Run the batch prediction pipeline on this machine with kfp.local (``predict_local.py``).

The same pipeline definition as on Vertex AI (:mod:`pipelines.batch_prediction_pipeline`) with a
DuckDB input, the local registry directory of ``run_local.py`` (default ``build/registry``), the
run's work database and the Beam DirectRunner inside the score task. Without ``--input`` it
scores a fresh sample of the demo distribution (another seed than training's; ``--demo-shift``:
with ``x1`` and ``color`` moved on purpose) with the ``champion`` that ``make run`` registered
(model name derived from the demo table and its label, as training derives it).

Writes ``OUTPUT_DIR/summary.json`` (:func:`build_summary` lists its keys), the kfp.local log
``OUTPUT_DIR/pipeline.log`` and the predictions table ``predictions_<run>`` into the run's work
database ``OUTPUT_DIR/work.duckdb``. A user's DuckDB input is only read (read-only connections;
the file stays byte-identical): the monitor attaches the work database to it read-only and
computes its statistics across the two files in SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pipelines.local_input import OutputLock
from pipelines.local_resume import RunInterrupted, TaskSupervisor, fixed_run_name, new_run_name
from pipelines.local_run import KfpLocalOutput
from pipelines.local_summary import RunOutputs
from vertex_imbalanced.errors import PipelineInputError, PipelineRunError

DEFAULT_OUTPUT_DIR = "build/batch_prediction"
DEFAULT_REGISTRY = "build/registry"
DEFAULT_ROWS = 20_000
DEFAULT_SEED = 11
"""Seed of the default input: the demo distribution, not the training run's rows (seed 7)."""
INPUT_DB = "score_input.duckdb"
"""The generated demo sample (a user's ``--input`` is read where it is)."""
WORK_DB = "work.duckdb"
"""The run's work database: the predictions table goes here, never into the input's file."""
STAGING_DIR = "staging"
SUMMARY_FILE = "summary.json"
LOG_FILE = "pipeline.log"
PIPELINE_ROOT_DIR = "pipeline_root"
DEFAULT_STATISTICS_STORE = "build/monitoring/statistics.duckdb"
"""Where scored-table statistics persist between local runs (drift vs the previous run)."""
STEPS = ("resolve-model", "importer", "batch-predict", "monitor")
"""The pipeline's tasks (``importer`` makes the registered model directory an artifact)."""


@dataclasses.dataclass(frozen=True)
class LocalPredictOptions:
    """What ``predict_local.py`` was asked to do.

    Attributes:
        input: DuckDB URI or CSV/Parquet file to score; None: a fresh demo sample.
        key: key column of the input ('' = the key recorded with the model).
        rows, seed: size and seed of the demo sample.
        demo_shift: the demo sample with ``x1`` and ``color`` shifted on purpose
            (:func:`vertex_imbalanced.warehouse.demo_data.demo_table`), to see skew alerts.
        output_dir: where the run writes (summary, log, predictions database, pipeline root).
        registry: local registry directory (``run_local.py``'s).
        model_name: registered model name ('' = :func:`default_model_name`, the name
            ``make run`` registers its demo model under).
        alias, version: which version to score with (version wins when given).
        statistics_store: DuckDB file keeping each run's statistics ('' = no run-to-run drift).
        fail_on_alert: fail the run when monitoring raises an alert.
        adjust_probabilities: add the ``adjusted_probabilities`` column (EM serving prior).
        verbose: echo every line kfp.local prints.
    """

    input: str | None = None
    key: str = ""
    rows: int = DEFAULT_ROWS
    seed: int = DEFAULT_SEED
    demo_shift: bool = False
    output_dir: str = DEFAULT_OUTPUT_DIR
    registry: str = DEFAULT_REGISTRY
    model_name: str = ""
    alias: str = "champion"
    version: str = ""
    statistics_store: str = DEFAULT_STATISTICS_STORE
    fail_on_alert: bool = False
    adjust_probabilities: bool = False
    verbose: bool = False


def default_model_name() -> str:
    """The name ``make run`` registers its model under: derived from the demo table and label.

    Training names a model it was not given a name for with
    :func:`vertex_imbalanced.registry.champion.default_model_name` of its source table and
    label; ``run_local.py`` without ``--source`` trains on the demo table.
    """
    from vertex_imbalanced.registry.champion import default_model_name as derived
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC
    from vertex_imbalanced.warehouse.local_import import DEMO_DB, DEMO_TABLE

    return derived(f"duckdb:///{DEMO_DB}?table={DEMO_TABLE}", DEMO_SPEC.label)


def input_uri(options: LocalPredictOptions, work_dir: Path) -> tuple[str, str]:
    """The DuckDB URI of the table to score and its description.

    Writes the demo sample, or imports a CSV/Parquet file, into ``work_dir`` first.

    Raises:
        PipelineInputError: an unusable ``--input`` or ``--rows``.
    """
    if options.input is None:
        from vertex_imbalanced.warehouse.demo_data import write_demo_duckdb

        if options.rows <= 0:
            raise PipelineInputError(f"--rows must be > 0, got {options.rows}")
        shift = options.demo_shift
        uri = write_demo_duckdb(work_dir / INPUT_DB, options.rows, options.seed, shifted=shift)
        what = "shifted demo sample" if shift else "demo sample"
        return uri, f"{what} ({options.rows} rows, seed {options.seed})"
    if options.demo_shift:
        raise PipelineInputError("--demo-shift shifts the generated demo sample: drop --input")
    if options.input.startswith("duckdb://"):
        from vertex_imbalanced.reading.sources.duckdb_source import parse_duckdb_uri

        path = parse_duckdb_uri(options.input).path
        if not Path(path).is_file():
            raise PipelineInputError(f"--input: DuckDB file {path} does not exist")
        return options.input, options.input
    path = Path(options.input)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise PipelineInputError(
            f"unknown --input {options.input!r}: use a .csv or .parquet file or "
            "duckdb:///abs/file.db?table=NAME"
        )
    from vertex_imbalanced.warehouse.local_import import import_file

    return import_file(path, work_dir, add_key=not options.key), options.input


def pipeline_arguments(
    options: LocalPredictOptions, uri: str, output_dir: Path, registry: Path
) -> dict[str, Any]:
    """The pipeline's parameter values for a local run (predictions into the work database)."""
    from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri

    work = duckdb_uri(output_dir / WORK_DB, "work").split("?", 1)[0]
    return {
        "input_uri": uri,
        "registry_uri": f"local://{registry}",
        "output_location": work,
        "staging_root": str(output_dir / STAGING_DIR),
        "model_name": options.model_name or default_model_name(),
        "model_alias": options.alias,
        "model_version": options.version,
        "key": options.key,
        "statistics_store": (
            str(Path(options.statistics_store).resolve()) if options.statistics_store else ""
        ),
        "fail_on_alert": options.fail_on_alert,
        "adjusted_probabilities": options.adjust_probabilities,
    }


def check_model(options: LocalPredictOptions, registry: Path) -> None:
    """Resolve the model before kfp.local starts, so a bad name or alias is one clear line.

    Also reads the model's training statistics, which the monitor step needs.

    Raises:
        PipelineInputError: unknown model (listing the registry's models), alias or version,
            or a model directory without ``feature_statistics.json`` (named).
    """
    from vertex_imbalanced.batch_prediction.resolve import resolve_model
    from vertex_imbalanced.monitoring.statistics import read_training_statistics

    found = resolve_model(
        f"local://{registry}",
        options.model_name or default_model_name(),
        alias=options.alias,
        version=options.version,
    )
    read_training_statistics(found.model_dir)


class _StepLines(KfpLocalOutput):
    """kfp.local's output with this pipeline's step numbers (``[2/4] importer ...``).

    ``KfpLocalOutput`` numbers the training pipeline's steps; until it takes the steps as an
    argument, the start lines it makes for tasks it does not know (``[?/6] task ...``) are
    renumbered here in the order the tasks start.
    """

    def _say(self, text: str) -> None:
        if text.startswith("[?/"):
            text = f"[{len(self.tail)}/{len(STEPS)}] " + text.split("] ", 1)[1]
        super()._say(text)


def run_pipeline(arguments: dict[str, Any], output_dir: Path, verbose: bool) -> tuple[Path, dict]:
    """Run the pipeline with kfp.local in this interpreter, its tasks under supervision.

    Each task runs in a process group of its own (:class:`pipelines.local_resume.TaskSupervisor`,
    as for ``run_local.py``): SIGINT, SIGTERM or SIGHUP stop the running task's whole group
    before :class:`~pipelines.local_resume.RunInterrupted` is raised, so no orphaned task
    scores or publishes after this returns.

    Returns:
        The run directory and the seconds each task took.

    Raises:
        PipelineRunError: naming the failed task and its last exception line.
        RunInterrupted: a stop signal came; the running task has been stopped.
    """
    from kfp import local

    from pipelines.batch_prediction_pipeline import PIPELINE_NAME, build_pipeline

    root = output_dir / PIPELINE_ROOT_DIR
    run_dir = root / new_run_name(PIPELINE_NAME)
    run_dir.mkdir(parents=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    log_path = output_dir / LOG_FILE
    supervisor = TaskSupervisor(run_dir)
    with log_path.open("w") as log, warnings.catch_warnings(), fixed_run_name(run_dir.name):
        warnings.filterwarnings("ignore", message=r".*no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=r".*custom or non-Python base image.*")
        sink = _StepLines(log, sys.stdout, verbose)
        try:
            with supervisor.installed(), contextlib.redirect_stdout(sink):
                build_pipeline(retries=False)(**arguments)
        except RunInterrupted:
            raise
        except (RuntimeError, OSError) as err:
            if supervisor.interrupted is not None:
                raise RunInterrupted(supervisor.interrupted) from err
            task = next((t for t in STEPS if f"'{t}'" in str(err)), sink.task or "?")
            raise PipelineRunError(
                f"pipeline stopped: task {task!r} failed: {sink.reason(task)} (full log: {log_path})"
            ) from err
    return run_dir, sink.seconds


def build_summary(run_dir: Path, source: str) -> dict[str, Any]:
    """The ``summary.json`` content.

    Keys: ``run``, ``input``, ``model``, ``predictions`` (``output_uri``, ``rows``,
    ``classes``, ``class_counts``, ``em_prior``: the prior the adjusted probabilities use, or
    None), ``alerts`` (monitoring), ``paths`` (``run_dir``, ``report``, ``monitoring``: the
    JSON report).
    """
    from vertex_imbalanced.monitoring.monitor import MONITORING_FILE

    outputs = RunOutputs(run_dir)
    scored = outputs.task_output("batch-predict") or {}
    meta = scored.get("artifacts", {}).get("predictions", {}).get("artifacts", [{}])[0]
    meta = meta.get("metadata", {})
    output_uri = meta.get("output_uri", "")
    return {
        "run": run_dir.name,
        "input": source,
        "model": meta.get("model", {}),
        "predictions": {
            "output_uri": output_uri,
            "rows": int(meta.get("rows", 0)),
            "classes": meta.get("classes", []),
            "class_counts": class_counts(output_uri) if output_uri else {},
            "em_prior": meta.get("em_prior"),
        },
        "alerts": list(outputs.parameters("monitor").get("alerts") or []),
        "paths": {
            "run_dir": str(run_dir),
            "report": str(outputs.artifact_path("monitor", "report")),
            "monitoring": str(outputs.artifact_path("monitor", "monitoring") / MONITORING_FILE),
        },
    }


def class_counts(output_uri: str) -> dict[str, int]:
    """Rows per predicted class name in a published DuckDB predictions table."""
    import duckdb

    from vertex_imbalanced.batch_prediction.output import parse_destination

    _, table, database = parse_destination(output_uri)
    with duckdb.connect(database, read_only=True) as con:
        found = con.execute(
            f"SELECT class_name, count(*) FROM {table.duckdb} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {name: int(n) for name, n in found}


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines."""
    model = summary["model"]
    pred = summary["predictions"]
    counts = ", ".join(f"{k}={v}" for k, v in pred["class_counts"].items())
    return "\n".join(
        [
            f"input: {summary['input']}",
            f"model: {model.get('name')} version {model.get('version')} ({model.get('requested')})",
            f"predictions: {pred['rows']} rows -> {pred['output_uri']}",
            f"predicted classes: {counts}",
            *(
                [f"adjusted probabilities: to the EM serving prior {pred['em_prior']}"]
                if pred.get("em_prior")
                else []
            ),
            f"monitoring: {len(summary['alerts'])} alert(s)",
            *(f"  ALERT {line}" for line in summary["alerts"]),
            f"report: {summary['paths']['report']}",
        ]
    )


def run_local_prediction(options: LocalPredictOptions) -> dict[str, Any]:
    """Prepare the input, run the pipeline, write and return the summary.

    Raises:
        PipelineInputError: bad options, input or model, found before the pipeline starts.
        PipelineRunError: a task failed.
    """
    started = time.monotonic()
    registry = Path(options.registry).resolve()
    check_model(options, registry)
    lock = OutputLock(options.output_dir)
    accepted = False
    try:
        output_dir = lock.path
        uri, description = input_uri(options, output_dir)
        accepted = True
        arguments = pipeline_arguments(options, uri, output_dir, registry)
        print(f"output: {output_dir}   registry: {registry}")
        run_dir, seconds = run_pipeline(arguments, output_dir, options.verbose)
        summary = build_summary(run_dir, description)
        summary["step_seconds"] = seconds
        summary["seconds"] = round(time.monotonic() - started, 1)
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary
    finally:
        lock.release(remove_if_created=not accepted)


def main(options: LocalPredictOptions) -> int:
    """Run :func:`run_local_prediction`; print the summary or one error line.

    Returns:
        0 on success, 2 for bad input (nothing ran), 1 when the pipeline failed, 128 + the
        signal's number when a stop signal ended it (its running task stopped too).
    """
    try:
        summary = run_local_prediction(options)
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PipelineRunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(f"stopped by signal {err.signum}: the running task was stopped", file=sys.stderr)
        return 128 + err.signum
    print(format_summary(summary))
    print(f"summary: {Path(options.output_dir).resolve() / SUMMARY_FILE}  ({summary['seconds']} s)")
    return 0
