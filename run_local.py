"""Run the whole training pipeline on this machine with kfp.local (no cloud, no Docker).

    python run_local.py                      # demo data -> prepare, train, evaluate, gate, register
    python run_local.py --source data.csv --label churned --key customer_id
    python run_local.py --source "duckdb:///abs/file.db?table=orders" --label status --key id

Uses the same pipeline definition as Vertex AI (pipelines/training_pipeline.py) with a DuckDB
source and a local registry directory (default ``build/registry``, shared across runs, so a
second run's gate compares against the first run's champion). Writes
``OUTPUT_DIR/summary.json`` and prints one line per step event and a short summary.
The work is done by :func:`pipelines.local_run.main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines import local_run
from vertex_imbalanced.config import IMBALANCE_MODES

DEFAULTS = local_run.LocalRunOptions()


def build_parser() -> argparse.ArgumentParser:
    """The command line of run_local.py (defaults come from ``LocalRunOptions``)."""
    p = argparse.ArgumentParser(
        description="Run the whole training pipeline locally (kfp.local + DuckDB + local registry)."
    )
    p.add_argument(
        "--source",
        help="CSV or Parquet file, or duckdb:///abs/file.db?table=[schema.]NAME "
        "(default: generated demo data)",
    )
    p.add_argument("--label", help="label column (required with --source)")
    p.add_argument(
        "--key",
        help="unique row key column (drives the deterministic split; required with a DuckDB "
        "--source; CSV/Parquet without it get a row_key column numbering the rows)",
    )
    p.add_argument(
        "--features",
        type=local_run.split_list,
        help="comma-separated feature columns (default: all others)",
    )
    p.add_argument("--rows", type=int, default=DEFAULTS.rows, help="demo data rows")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="demo data seed")
    p.add_argument("--output-dir", default=DEFAULTS.output_dir)
    p.add_argument("--registry", default=DEFAULTS.registry, help="local registry directory")
    p.add_argument("--model-name", default=None, help="registered model name")
    p.add_argument("--imbalance-mode", default=DEFAULTS.imbalance_mode, choices=IMBALANCE_MODES)
    p.add_argument(
        "--max-ratio", type=float, default=DEFAULTS.max_ratio, help="majority:minority cap"
    )
    p.add_argument(
        "--min-metric", type=float, default=DEFAULTS.min_metric, help="gate: minimum macro F1"
    )
    p.add_argument(
        "--tolerance", type=float, default=DEFAULTS.tolerance, help="gate: allowed drop vs champion"
    )
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--epochs", type=int, default=None, help="default: Hyperparameters().epochs")
    hp.add_argument("--batch-size", type=int, default=None)
    hp.add_argument("--learning-rate", type=float, default=None)
    hp.add_argument("--hidden-units", type=local_run.int_list, default=None, help="e.g. 64,32")
    p.add_argument("--verbose", action="store_true", help="show every line kfp.local prints")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run; returns the exit status (0 ok, 2 bad input, 1 failed)."""
    args = build_parser().parse_args(argv)
    return local_run.main(local_run.LocalRunOptions(**vars(args)))


if __name__ == "__main__":
    sys.exit(main())
