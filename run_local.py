"""Run the whole training pipeline on this machine with kfp.local (no cloud, no Docker).

    python run_local.py                      # demo data -> prepare, train, evaluate, gate, register
    python run_local.py --source data.csv --label churned --key customer_id
    python run_local.py --source "duckdb:///abs/file.db?table=orders" --label status

Uses the same pipeline definition as Vertex AI (pipelines/training_pipeline.py) with a DuckDB
source and a local registry directory (default ``build/registry``, shared across runs, so a
second run's gate compares against the first run's champion). Writes
``OUTPUT_DIR/summary.json`` and prints a short summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import re
import sys
import time
import urllib.parse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vertex_imbalanced.config import IMBALANCE_MODES, FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.identifiers import require_columns, validate_column

DEFAULT_OUTPUT_DIR = "build/local_run"
DEFAULT_REGISTRY = "build/registry"
DEFAULT_ROWS = 100_000
DEMO_TABLE = "demo"
SOURCE_TABLE = "source"
STEPS = ("prepare-data", "train", "evaluate", "lookup-champion", "gate", "register")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)):\s?(.*)$")
_NUMERIC_TYPES = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|"
    r"DOUBLE|REAL|DECIMAL.*|BOOLEAN|DATE|TIMESTAMP.*)$"
)


class PipelineRunError(RuntimeError):
    """A pipeline task failed; names the task and the error it raised."""


# ----------------------------------------------------------------------------- inputs
def check_output_dir(path: str | Path) -> Path:
    """Create the output directory and prove it is writable (clear error otherwise)."""
    out = Path(path).resolve()
    probe = out / ".write-probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PipelineInputError(f"output directory {str(out)!r} is not writable: {err}") from err
    return out


def _describe(db: Path, table: str) -> dict[str, str]:
    """``{column: duckdb type}`` of a table (clear error if the file or table is missing)."""
    import duckdb

    if not db.is_file():
        raise PipelineInputError(f"DuckDB file {str(db)!r} does not exist")
    validate_column(table)
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if table not in tables:
            raise PipelineInputError(
                f"table {table!r} not found in {db}; tables there: {', '.join(sorted(tables)) or 'none'}"
            )
        return {name: kind for name, kind, *_ in con.execute(f'DESCRIBE "{table}"').fetchall()}


def import_file(path: Path, output_dir: Path, add_key: bool) -> Path:
    """Load a CSV or Parquet file into ``OUTPUT_DIR/source.duckdb`` (table ``source``).

    With ``add_key`` a ``row_key`` column numbers the rows in file order (the split needs a key).
    """
    import duckdb

    if not path.is_file():
        raise PipelineInputError(f"--source file {str(path)!r} does not exist")
    reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
    key = ", CAST(row_number() OVER () AS VARCHAR) AS row_key" if add_key else ""
    db = output_dir / "source.duckdb"
    tmp = db.with_suffix(".duckdb.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            con.execute(
                f"CREATE TABLE {SOURCE_TABLE} AS SELECT *{key} FROM {reader}(?)", [str(path)]
            )
    except duckdb.Error as err:
        tmp.unlink(missing_ok=True)
        raise PipelineInputError(f"cannot read --source {str(path)!r}: {err}") from err
    tmp.replace(db)
    return db


def parse_duckdb_uri(uri: str) -> tuple[Path, str]:
    """``duckdb:///abs/file.db?table=name`` -> (path, table)."""
    parsed = urllib.parse.urlsplit(uri)
    table = dict(urllib.parse.parse_qsl(parsed.query)).get("table")
    if parsed.netloc or not parsed.path or not table:
        raise PipelineInputError(
            f"invalid DuckDB source {uri!r}: use duckdb:///path/to/file.db?table=NAME"
        )
    return Path(parsed.path), table


def feature_spec(
    db: Path, table: str, label: str, key: str, features: Sequence[str] | None
) -> FeatureSpec:
    """Check the columns exist and build the spec.

    Without ``features`` the prepare step infers numeric/categorical roles from the schema;
    with them, DuckDB's column types decide the role here.
    """
    columns = _describe(db, table)
    require_columns(f"{db.name}:{table}", [label, key, *(features or [])], list(columns))
    if not features:
        return FeatureSpec(label=label, key=key)
    numeric = [c for c in features if _NUMERIC_TYPES.match(columns[c].upper())]
    categorical = [c for c in features if c not in numeric]
    return FeatureSpec(label=label, key=key, numeric=tuple(numeric), categorical=tuple(categorical))


def resolve_source(args: argparse.Namespace, output_dir: Path) -> tuple[str, FeatureSpec, str]:
    """(source URI for the pipeline, feature spec, human description) from the CLI options."""
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    if args.source is None:
        from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb

        db = output_dir / "demo.duckdb"
        write_demo_duckdb(db, rows=args.rows, seed=args.seed, table=DEMO_TABLE)
        spec = DEMO_SPEC
        if args.label or args.key or features:
            spec = feature_spec(
                db, DEMO_TABLE, args.label or spec.label, args.key or spec.key, features
            )
        return f"duckdb://{db}?table={DEMO_TABLE}", spec, f"demo data ({args.rows} rows)"
    parsed = urllib.parse.urlsplit(args.source)
    if parsed.scheme == "duckdb":
        db, table = parse_duckdb_uri(args.source)
        if not args.key:
            raise PipelineInputError("--key is required with a DuckDB --source (a unique row key)")
    elif parsed.scheme in ("", "file") and Path(parsed.path).suffix.lower() in (".csv", ".parquet"):
        db = import_file(Path(parsed.path), output_dir, add_key=not args.key)
        table = SOURCE_TABLE
    else:
        raise PipelineInputError(
            f"unknown --source {args.source!r}: use a .csv or .parquet file or "
            "duckdb:///path/to/file.db?table=NAME"
        )
    if not args.label:
        raise PipelineInputError("--label is required with --source")
    db = db.resolve()
    spec = feature_spec(db, table, args.label, args.key or "row_key", features)
    return f"duckdb://{db}?table={table}", spec, args.source


# ----------------------------------------------------------------------------- running
class _KfpOutput(io.TextIOBase):
    """Where kfp.local's stdout goes: a log file, step progress, and a tail for errors."""

    def __init__(self, log: io.TextIOBase, echo: io.TextIOBase, verbose: bool):
        self._log, self._echo, self._verbose = log, echo, verbose
        self._partial = ""
        self.tail: dict[str, collections.deque[str]] = {}
        self._task = ""
        self._started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._verbose:
            self._echo.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._echo.flush()

    def _say(self, text: str) -> None:
        if not self._verbose:
            self._echo.write(text + "\n")
            self._echo.flush()

    def _line(self, line: str) -> None:
        if m := re.search(r"Executing task '([^']+)'", line):
            self._task = m[1]
            self._started[m[1]] = time.monotonic()
            self.tail[m[1]] = collections.deque(maxlen=400)
            step = STEPS.index(m[1]) + 1 if m[1] in STEPS else "?"
            self._say(f"[{step}/{len(STEPS)}] {m[1]} ...")
        elif m := re.search(r"Task '([^']+)' finished with status (\w+)", line):
            seconds = time.monotonic() - self._started.get(m[1], time.monotonic())
            self.seconds[m[1]] = round(seconds, 1)
            self._say(f"      {m[1]}: {m[2].lower()} in {seconds:.1f} s")
        elif m := re.search(r"Skipping conditional task (\S+)", line):
            self._say(f"      {m[1]} skipped: the gate did not pass, nothing registered")
        elif self._task:
            self.tail[self._task].append(line)

    def reason(self, task: str) -> str:
        """The last exception line a task printed (or a hint to read the log)."""
        for line in reversed(self.tail.get(task, ())):
            if m := _ERROR_LINE.match(line):
                return f"{m[1]}: {m[3]}"
        return "see the log for details"


def _patch_kfp_local_conditions() -> None:
    """Let kfp.local evaluate ``dsl.If`` on a named output (``gate.outputs["passed"]``).

    kfp 2.17's local orchestrator resolves condition channels only for single outputs
    (``task-Output``); ``pipelinechannel--gate-passed`` is looked up as a pipeline input and
    the condition silently evaluates to False. Fall back to ``task name`` + ``output key``
    (split at the last '-': output keys are Python identifiers).
    """
    from kfp.local.orchestrator import enhanced_dag_orchestrator as orchestrator

    evaluator = orchestrator.ConditionEvaluator
    if getattr(evaluator, "_imbalanced_patched", False):
        return
    original = evaluator._resolve_pipeline_channel

    def resolve(channel_ref: str, io_store: Any) -> Any:
        ref = channel_ref.replace("pipelinechannel--", "")
        task, sep, key = ref.rpartition("-")
        if sep and "--" not in ref and not ref.endswith("-Output"):
            with contextlib.suppress(Exception):
                return io_store.get_task_output(task, key)
        return original(channel_ref, io_store)

    evaluator._resolve_pipeline_channel = staticmethod(resolve)
    evaluator._imbalanced_patched = True


def run_pipeline(
    arguments: dict[str, Any], output_dir: Path, verbose: bool = False
) -> tuple[Path, dict[str, float]]:
    """Run the pipeline with kfp.local in this interpreter.

    Returns:
        The run directory and the seconds each task took.

    Raises:
        PipelineRunError: naming the failed task and its error.
    """
    from kfp import local

    from pipelines.training_pipeline import build_pipeline

    _patch_kfp_local_conditions()
    root = output_dir / "pipeline_root"
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(None, retries=False)
    log_path = output_dir / "pipeline.log"
    with log_path.open("w") as log, warnings.catch_warnings():
        # kfp.local warns that display names, retries and resources only apply on Vertex.
        warnings.filterwarnings("ignore", message=r".*no effect in the current local runner.*")
        # ... and that the components' base image (the project image) is not used here.
        warnings.filterwarnings("ignore", message=r".*custom or non-Python base image.*")
        sink = _KfpOutput(log, sys.stdout, verbose)
        try:
            with contextlib.redirect_stdout(sink):
                pipeline(**arguments)
        except RuntimeError as err:
            message = _ANSI.sub("", str(err))
            failed = re.findall(r"Inner task failed: '([^']+)'", message)
            task = failed[0] if failed else "?"
            raise PipelineRunError(
                f"pipeline stopped: task {task!r} failed: {sink.reason(task)} (full log: {log_path})"
            ) from err
    runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise PipelineRunError(f"kfp.local wrote no run directory under {root}")
    return runs[-1], sink.seconds


# ----------------------------------------------------------------------------- summary
def _task_output(run_dir: Path, task: str) -> dict[str, Any] | None:
    path = run_dir / task / "executor_output.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _artifact_path(run_dir: Path, task: str, name: str) -> Path:
    output = _task_output(run_dir, task) or {}
    artifacts = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
    return Path(artifacts[0]["uri"]) if artifacts else run_dir / task / name


def build_summary(run_dir: Path, source: str) -> dict[str, Any]:
    """The ``summary.json`` content, read from the run's task outputs."""
    prepared = json.loads(_artifact_path(run_dir, "prepare-data", "prepared").read_text())
    evaluation = _artifact_path(run_dir, "evaluate", "evaluation")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    gate = (_task_output(run_dir, "gate") or {}).get("parameterValues", {})
    register = _task_output(run_dir, "register")
    registered = None
    if register is not None:
        version = json.loads(register["parameterValues"]["registered_json"])
        registered = {
            "name": version["name"],
            "version": version["version"],
            "path": version["uri"],
            "aliases": version["aliases"],
        }
    if gate.get("passed") and register is None:
        raise PipelineRunError(
            f"the gate passed but the register task did not run ({run_dir}); "
            "kfp.local skipped the dsl.If branch"
        )
    imbalance = prepared.get("imbalance", {})
    return {
        "run": run_dir.name,
        "source": source,
        "data": {
            "split_counts": prepared.get("split_counts"),
            "class_counts": imbalance.get("original_counts"),
            "keep_rates": imbalance.get("keep_rates"),
            "kept_counts": imbalance.get("kept_counts"),
            "weighted_counts": imbalance.get("weighted_counts"),
            "imbalance_mode": imbalance.get("mode"),
        },
        "metrics": {
            key: metrics.get(key)
            for key in (
                "macro_f1",
                "weighted_f1",
                "accuracy",
                "per_class",
                "confusion_matrix",
                "calibration",
                "classes",
            )
        },
        "gate": {"passed": bool(gate.get("passed")), "reason": gate.get("reason", "")},
        "registered": registered,
        "paths": {
            "report": str(
                evaluation / "report.html"
                if (evaluation / "report.html").is_file()
                else _artifact_path(run_dir, "evaluate", "report")
            ),
            "model": str(_artifact_path(run_dir, "train", "model")),
            "metrics": str(evaluation / "metrics.json"),
            "run_dir": str(run_dir),
        },
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines."""
    m = summary["metrics"]
    lines = [
        f"data: {summary['source']}; splits "
        + ", ".join(
            f"{k}={sum(v.values())}" for k, v in (summary["data"]["split_counts"] or {}).items()
        ),
        f"test: macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
        f"accuracy {m['accuracy']:.4f}",
    ]
    for name, row in (m["per_class"] or {}).items():
        lines.append(
            f"  {name:>12}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
            f"f1 {row['f1']:.3f} support {int(row['support'])}"
        )
    gate = summary["gate"]
    lines.append(f"gate: {'PASSED' if gate['passed'] else 'REJECTED'} - {gate['reason']}")
    reg = summary["registered"]
    lines.append(
        f"registered: {reg['name']} version {reg['version']} {reg['aliases']} at {reg['path']}"
        if reg
        else "registered: nothing"
    )
    lines.append(f"report: {summary['paths']['report']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of run_local.py."""
    p = argparse.ArgumentParser(
        description="Run the whole training pipeline locally (kfp.local + DuckDB + local registry)."
    )
    p.add_argument(
        "--source",
        help="CSV or Parquet file, or duckdb:///file.db?table=NAME (default: generated demo data)",
    )
    p.add_argument("--label", help="label column (required with --source)")
    p.add_argument(
        "--key",
        help="unique row key column (drives the deterministic split; CSV/Parquet without it "
        "get a row_key column numbering the rows)",
    )
    p.add_argument("--features", help="comma-separated feature columns (default: all others)")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="demo data rows")
    p.add_argument("--seed", type=int, default=7, help="demo data seed")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="local registry directory")
    p.add_argument("--model-name", default=None, help="registered model name")
    p.add_argument("--imbalance-mode", default="downsample_upweight", choices=IMBALANCE_MODES)
    p.add_argument("--max-ratio", type=float, default=10.0, help="majority:minority cap")
    p.add_argument("--min-metric", type=float, default=0.5, help="gate: minimum macro F1")
    p.add_argument("--tolerance", type=float, default=0.0, help="gate: allowed drop vs champion")
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--epochs", type=int, default=None, help="default: Hyperparameters().epochs")
    hp.add_argument("--batch-size", type=int, default=None)
    hp.add_argument("--learning-rate", type=float, default=None)
    hp.add_argument("--hidden-units", default=None, help="e.g. 64,32")
    p.add_argument("--verbose", action="store_true", help="show every line kfp.local prints")
    return p


def pipeline_arguments(
    args: argparse.Namespace, source_uri: str, spec: FeatureSpec, registry: Path
) -> dict[str, Any]:
    """The pipeline's parameter values for a local run."""
    from pipelines.training_pipeline import DEFAULT_MODEL_NAME

    hyper: dict[str, Any] = {}
    if args.epochs is not None:
        hyper["epochs"] = args.epochs
    if args.batch_size is not None:
        hyper["batch_size"] = args.batch_size
    if args.learning_rate is not None:
        hyper["learning_rate"] = args.learning_rate
    if args.hidden_units:
        hyper["hidden_units"] = [int(u) for u in args.hidden_units.split(",")]
    from vertex_imbalanced.config import Hyperparameters
    from vertex_imbalanced.registry.provenance import current_git_commit

    Hyperparameters.from_dict(hyper)  # fail here, not three steps in
    return {
        "source_uri": source_uri,
        "feature_config": spec.to_json(),
        "imbalance_mode": args.imbalance_mode,
        "imbalance_max_ratio": args.max_ratio,
        "hyperparameters": json.dumps(hyper),
        "min_metric": args.min_metric,
        "tolerance": args.tolerance,
        "model_display_name": args.model_name or DEFAULT_MODEL_NAME,
        "registry_uri": f"local://{registry}",
        "git_commit": current_git_commit(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run run_local.py; returns the exit status."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        if args.rows <= 0:
            raise PipelineInputError(f"--rows must be > 0, got {args.rows}")
        output_dir = check_output_dir(args.output_dir)
        registry = check_output_dir(args.registry)
        print(f"output: {output_dir}   registry: {registry}")
        source_uri, spec, description = resolve_source(args, output_dir)
        arguments = pipeline_arguments(args, source_uri, spec, registry)
        run_dir, seconds = run_pipeline(arguments, output_dir, verbose=args.verbose)
        summary = build_summary(run_dir, description)
        summary["step_seconds"] = seconds
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PipelineRunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary["seconds"] = round(time.monotonic() - started, 1)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(format_summary(summary))
    print(f"summary: {output_dir / 'summary.json'}  ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
