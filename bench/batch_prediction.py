"""Batch prediction benchmark: our Beam RunInference pipeline vs the direct loop vs pandas.

    python bench/batch_prediction.py [--rows N] [--json PATH] [--skip-monitoring]
        [--paths runinference,direct,pandas] [--workdir DIR]

Table: ``key`` + 20 FLOAT64 + 5 STRING (5-20 chars) columns (fakes.arrow_tables.make_wide_table)
in a DuckDB file. Model: the project's classifier (training/model.py: lookups, normalisation,
one-hot, 64-32 hidden units, 2 classes) with its preprocessing fit on a 50k-row sample and
exported as the train step does (SavedModel + model.keras); its weights are not trained, which
does not change the cost of a prediction. Each path runs in a fresh child process (its peak
RSS is its own: ``ru_maxrss`` of the child and of any process it starts, the larger); the time
counts from opening the table to the last row:

  runinference  score_table: DuckDB source -> Beam RunInference (DirectRunner, record-batch
                elements) -> Parquet parts -> published DuckDB table (everything a run does)
  direct        the limit: the same SavedModel (BatchScorer.predict) on the same Arrow record
                batches in a loop (read as score_table reads them, DuckDB's buffer pool
                capped), nothing written
  pandas        what users usually write: SELECT * into a DataFrame, then
                keras.models.load_model("model.keras").predict(dict of columns)

Monitoring: bench/monitoring.py's ``measure`` (its own table of the same size and shape, with
NULLs and 30 values per categorical column as monitored features have; statistics in SQL vs
pandas/numpy after loading, best of 3 runs below 5M rows, one run above).

``--workdir DIR`` keeps the table and model in DIR and reuses them when DIR already holds a
table of ``--rows`` rows; ``--paths`` measures a subset (the table then has only those rows).
The load average is printed with the table: on a shared machine, ratios measured in one run
are what counts.
Targets (issue 14): runinference >= 0.5x direct; peak RSS flat from 1M to 10M rows; monitoring
SQL faster than pandas at 10M rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("runinference", "direct", "pandas")
TABLE = "scored"
N_FLOAT, N_STRING = 20, 5
SAMPLE_ROWS = 50_000
PANDAS_MEMORY_FACTOR = 6
"""Peak memory of the pandas path over its DataFrame's deep size: measured at 1M rows, a
0.25 GB DataFrame and a 2.4 GB peak over a 0.9 GB base (30 Nov)."""


# ----------------------------------------------------------------------------- setup
def prepare(workdir: Path, rows: int) -> None:
    """Write the table into ``workdir/bench.duckdb`` and the model into ``workdir/model``."""
    import pyarrow as pa

    from fakes.arrow_tables import make_wide_table
    from vertex_imbalanced.warehouse.duckdb_settings import write_table_chunks

    def chunks():
        for done in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - done)
            table = make_wide_table(n, N_FLOAT, N_STRING, seed=done, label=False, key=True)
            yield table.set_column(0, "key", pa.array(table.column("key").to_numpy() + done))

    write_table_chunks(workdir / "bench.duckdb", TABLE, chunks())
    export_model(workdir / "model")


def export_model(model_dir: Path) -> None:
    """The project's classifier, preprocessing fit on a sample, exported like the train step."""
    import keras

    from fakes.arrow_tables import WIDE_LABEL, make_wide_table, wide_float_names, wide_string_names
    from vertex_imbalanced.config import FeatureSpec, Hyperparameters
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset
    from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
    from vertex_imbalanced.training.export import export_saved_model
    from vertex_imbalanced.training.model import build_model
    from vertex_imbalanced.training.statistics import compute_feature_stats

    classes = ("0", "1")
    spec = FeatureSpec(
        label=WIDE_LABEL,
        key="key",
        numeric=tuple(wide_float_names(N_FLOAT)),
        categorical=tuple(wide_string_names(N_STRING)),
    )
    sample = make_wide_table(SAMPLE_ROWS, N_FLOAT, N_STRING, seed=99, key=True)
    ds = make_dataset(ArrowTableSource(sample), spec, FeedOptions(), classes=classes)
    stats = compute_feature_stats(ds, spec, len(classes))
    model = build_model(spec, stats, classes, Hyperparameters(hidden_units=(64, 32)))
    model_dir.mkdir(parents=True)
    export_saved_model(model, spec, str(model_dir / "saved_model"))
    model.save(model_dir / "model.keras")
    metadata = {"classes": list(classes), "feature_spec": spec.to_dict()}
    (model_dir / "model_metadata.json").write_text(json.dumps(metadata))
    keras.backend.clear_session()


# ----------------------------------------------------------------------------- children
def child_runinference(workdir: Path) -> int:
    from vertex_imbalanced.batch_prediction.resolve import ResolvedModel
    from vertex_imbalanced.batch_prediction.run import score_table

    model = ResolvedModel("bench", "1", str(workdir / "model"), "none", "bench")
    result = score_table(
        model,
        f"duckdb://{workdir / 'bench.duckdb'}?table={TABLE}",
        f"duckdb://{workdir / 'out.duckdb'}?table=predictions",
        "bench",
        str(workdir / "staging"),
    )
    return result.rows


def child_direct(workdir: Path) -> int:
    from vertex_imbalanced.batch_prediction.scoring import BatchScorer
    from vertex_imbalanced.reading.sources.duckdb_source import DuckDBSource

    scorer = BatchScorer(str(workdir / "model"), "bench", "1", key="key")
    source = DuckDBSource(workdir / "bench.duckdb", TABLE, scorer.inputs.read_columns)
    rows = 0
    # the reader score_table runs (under the same DuckDB memory limit), so that the two paths
    # differ only by Beam
    for index in range(source.num_streams):
        for batch in source.read_stream(index):
            probabilities, _ = scorer.predict(batch)
            rows += len(probabilities)
    return rows


def child_pandas(workdir: Path) -> int:
    import duckdb
    import keras

    model = keras.models.load_model(workdir / "model" / "model.keras")
    with duckdb.connect(str(workdir / "bench.duckdb"), read_only=True) as con:
        df = con.execute(f"SELECT * FROM {TABLE}").df()
    features = {c: df[c].to_numpy() for c in df.columns if c != "key"}
    for name, values in features.items():
        features[name] = values.astype("float32") if values.dtype.kind == "f" else values
    probabilities = model.predict(features, batch_size=8192, verbose=0)
    return len(probabilities)


CHILDREN = {"runinference": child_runinference, "direct": child_direct, "pandas": child_pandas}


def run_child(path: str, workdir: Path) -> None:
    """Child process: time one path and print one JSON line."""
    import gc

    start = time.perf_counter()
    rows = CHILDREN[path](workdir)
    seconds = time.perf_counter() - start
    gc.collect()
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    peak_mb = peak_kb / 1024
    print(json.dumps({"path": path, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}))


def measure(path: str, workdir: Path) -> dict:
    """Run one path in a fresh child; its result line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", path, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"path {path} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "path": path,
        "rows_per_s": result["rows"] / result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "seconds": result["seconds"],
        "rows": result["rows"],
    }


# ----------------------------------------------------------------------------- parent
def table_rows(workdir: Path) -> int:
    """Rows of the prepared table in ``workdir`` (0 when there is none, or no model)."""
    import duckdb

    db = workdir / "bench.duckdb"
    if not db.is_file() or not (workdir / "model" / "model_metadata.json").is_file():
        return 0
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TABLE]
        ).fetchall()[0][0]
        return con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0] if found else 0


def ready(workdir: Path, rows: int) -> None:
    """Prepare the table and model in ``workdir`` unless it already holds ``rows`` rows."""
    import shutil

    if table_rows(workdir) == rows:
        print(f"reusing the table of {rows} rows and the model in {workdir}")
        return
    for stale in ("bench.duckdb", "model"):
        path = workdir / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    prepare(workdir, rows)
    print(f"table of {rows} rows and model ready in {time.perf_counter() - t0:.0f} s")


def pandas_memory_estimate(workdir: Path, rows: int, sample: int = 20_000) -> float:
    """Bytes the pandas path needs for ``rows`` rows, from a sample of the table.

    The DataFrame's own size (``memory_usage(deep=True)``: Python string objects included)
    times :data:`PANDAS_MEMORY_FACTOR`, for DuckDB's result converted into it, the DataFrame,
    the float32 / object arrays handed to Keras and Keras' own copies, alive together.
    """
    import duckdb

    with duckdb.connect(str(workdir / "bench.duckdb"), read_only=True) as con:
        df = con.execute(f"SELECT * FROM {TABLE} LIMIT {int(sample)}").df()
    per_row = df.memory_usage(deep=True).sum() / max(len(df), 1)
    return PANDAS_MEMORY_FACTOR * per_row * rows


def available_memory() -> float:
    """``MemAvailable`` from /proc/meminfo in bytes (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def score_paths(workdir: Path, rows: int, paths: list[str]) -> list[dict]:
    """Measure each path in its own child process, one after the other.

    The pandas path is skipped (``{"path": "pandas", "skipped": reason}``) when its estimated
    memory (:func:`pandas_memory_estimate`) exceeds 80 % of the available memory: it would
    swap or be killed, and take the machine's other processes with it.
    """
    import shutil

    results = []
    for path in paths:
        if path == "pandas":
            need, have = pandas_memory_estimate(workdir, rows), available_memory()
            if need > 0.8 * have:
                reason = (
                    f"needs about {need / 2**30:.1f} GiB for the whole table in a DataFrame; "
                    f"{have / 2**30:.1f} GiB available"
                )
                results.append({"path": path, "skipped": reason})
                print(f"  {path}: skipped ({reason})", flush=True)
                continue
        for scratch in ("out.duckdb", "staging"):
            target = workdir / scratch
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        results.append(measure(path, workdir))
        done = results[-1]
        print(
            f"  {path}: {done['seconds']:.0f} s, {done['rows_per_s']:,.0f} rows/s, "
            f"peak RSS {done['peak_rss_mb']:,.0f} MB",
            flush=True,
        )
        if results[-1]["rows"] != rows:
            raise RuntimeError(f"path {path} scored {results[-1]['rows']} rows, not {rows}")
    return results


def print_table(rows: int, results: list[dict], monitoring: dict | None, load: tuple) -> None:
    """The one table of the run."""
    by_path = {r["path"]: r for r in results if "skipped" not in r}
    direct = by_path["direct"]["rows_per_s"] if "direct" in by_path else None
    print(
        f"\n{rows:,} rows, 20 numeric + 5 categorical columns (load average {load[0]:.1f} "
        f"at start, {os.getloadavg()[0]:.1f} at end, {os.cpu_count()} CPUs)"
    )
    print(f"{'path':<14}{'rows/s':>12}{'x direct':>10}{'peak RSS MB':>13}{'seconds':>10}")
    for r in results:
        if "skipped" in r:
            print(f"{r['path']:<14}skipped: {r['skipped']}")
            continue
        ratio = f"{r['rows_per_s'] / direct:>10.2f}" if direct else f"{'-':>10}"
        print(
            f"{r['path']:<14}{r['rows_per_s']:>12,.0f}{ratio}"
            f"{r['peak_rss_mb']:>13,.0f}{r['seconds']:>10.1f}"
        )
    if monitoring:
        print(
            f"monitoring statistics  SQL {monitoring['sql_s']:.2f} s   pandas {monitoring['pandas_s']:.2f} s"
            f" (load + compute; compute alone {monitoring['pandas_compute_s']:.2f} s)   "
            f"SQL / pandas {monitoring['sql_s'] / monitoring['pandas_s']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Prepare the table and model, measure every path, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--json", help="write the results as JSON to this path")
    p.add_argument(
        "--workdir", help="keep (and reuse) the table and model here (default: temporary)"
    )
    p.add_argument(
        "--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS)
    )
    p.add_argument("--skip-monitoring", action="store_true")
    p.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args.child, Path(args.workdir))
        return 0
    paths = [x for x in args.paths.split(",") if x]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or not paths:
        p.error(f"--paths: unknown {unknown}; choose from {', '.join(PATHS)}")
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ready(workdir, args.rows)
        results = score_paths(workdir, args.rows, paths)
    monitoring = None
    if not args.skip_monitoring:
        from bench.monitoring import measure as measure_monitoring

        repeat = 3 if args.rows < 5_000_000 else 1
        monitoring = measure_monitoring(args.rows, repeat=repeat, workdir=args.workdir)
    print_table(args.rows, results, monitoring, load)
    if args.json:
        doc = {
            "rows": args.rows,
            "results": [
                {k: r[k] for k in ("path", "rows_per_s", "peak_rss_mb")}
                for r in results
                if "skipped" not in r
            ],
            "skipped": [
                {"path": r["path"], "reason": r["skipped"]} for r in results if "skipped" in r
            ],
            "monitoring": (
                {k: monitoring[k] for k in ("sql_s", "pandas_s")} if monitoring else None
            ),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
