"""Run the whole training pipeline on this machine with kfp.local (no cloud, no Docker).

    python run_local.py                      # demo data -> prepare, train, evaluate, gate, register
    python run_local.py --source credit_data.csv --label Status --key id
    python run_local.py --source "duckdb:///abs/file.db?table=orders" --label status --key id

Uses the same pipeline definition as Vertex AI (pipelines/training_pipeline.py) with a DuckDB
work database under the output directory (the user's files are only read) and a local
registry directory (default ``build/registry``, shared across runs, so a second run's gate
compares against the first run's champion). Every problem of the options and the input is
listed before anything runs.

Stopping and resuming: Ctrl-C or SIGTERM stops the running step's processes too (nothing of
the run writes after run_local exits; exit status 130 / 143). Rerunning the same command
(same options, same data, same code) resumes a run that did not finish: the same run id (the
registry registers it once), finished steps reused, training continued from its last epoch.
``--fresh`` starts a new run instead. Rerunning after a run that finished starts a new run.

Writes ``OUTPUT_DIR/summary.json`` and prints the columns' roles, the class mapping, one line
per step event, per epoch and per warning, and a short summary.
The work is done by :func:`pipelines.local_run.main_from_text`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines import local_run
from vertex_imbalanced.config import (
    DEFAULT_NA_VALUES,
    IMBALANCE_MODES,
    LABEL_POLICIES,
    Hyperparameters,
)

DEFAULTS = local_run.LocalRunOptions()
EXAMPLES = """examples:
  # a CSV as R writes it (NA for missing), text labels "good"/"bad", an id column
  python run_local.py --source credit_data.csv --label Status --key id

  # a DuckDB table, classes in a fixed order, rows without a label skipped and counted
  python run_local.py --source "duckdb:///abs/shop.db?table=orders" --label churned \\
      --key order_id --classes no,yes --label-policy skip --ignore notes,created_by
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of run_local.py (defaults come from ``LocalRunOptions``).

    Values are parsed as text and converted by :func:`pipelines.local_run.options_from_text`,
    so every bad value is reported together with the other problems.
    """
    p = argparse.ArgumentParser(
        description="Run the whole training pipeline locally (kfp.local + DuckDB + local "
        "registry). Every problem of the options and the input is listed before anything runs. "
        "Ctrl-C or SIGTERM also stops the running step; rerunning the same command resumes a "
        "run that did not finish (same run id, finished steps reused; see --fresh).",
        epilog=EXAMPLES,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--source",
        help="CSV or Parquet file, or duckdb:///abs/file.db?table=[schema.]NAME (read only: "
        "copied into the run's work database) (default: generated demo data)",
    )
    data.add_argument("--label", help="label column: text, integer or boolean values "
                      "(required with --source)")  # fmt: skip
    data.add_argument(
        "--key",
        help="unique row key column (drives the deterministic split; required with a DuckDB "
        "--source; a CSV/Parquet file without it gets a row_key column numbering the rows)",
    )
    data.add_argument(
        "--features", help="comma-separated feature columns (default: all other columns)"
    )
    data.add_argument("--ignore", help="comma-separated columns to leave out (default: none)")
    data.add_argument(
        "--classes",
        help="comma-separated class names in id order, e.g. bad,good or false,true "
        "(default: the train split's label values, numbers sorted numerically, text lexically)",
    )
    data.add_argument(
        "--label-policy",
        help=f"what a NULL label (or one outside --classes) does: {' or '.join(LABEL_POLICIES)} "
        "(skip: leave the rows out and count them) (default: error)",
    )
    data.add_argument(
        "--na-values",
        help="comma-separated CSV text read as missing, replacing the default "
        f"{','.join(v for v in DEFAULT_NA_VALUES if v)} (an empty field is always missing)",
    )
    data.add_argument(
        "--feature-config",
        help="YAML/JSON feature config (the pipeline's feature_config: label, key, numeric, "
        "categorical, ignored, classes, label_policy, na_values); options above override it",
    )
    data.add_argument(
        "--split-ratios", help="train,validation,test shares summing to 1 (default: 0.8,0.1,0.1)"
    )
    data.add_argument(
        "--rows", default=str(DEFAULTS.rows), help="demo data rows (default: %(default)s)"
    )
    data.add_argument(
        "--seed", default=str(DEFAULTS.seed), help="demo data seed (default: %(default)s)"
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--output-dir",
        default=DEFAULTS.output_dir,
        help="where the run writes: summary, log, work database (default: %(default)s)",
    )
    run.add_argument(
        "--registry",
        default=DEFAULTS.registry,
        help="local registry directory (default: %(default)s)",
    )
    run.add_argument(
        "--model-name",
        help="registered model name (default: derived from the source table and label, e.g. demo-label)",
    )
    run.add_argument(
        "--imbalance-mode",
        default=DEFAULTS.imbalance_mode,
        help=f"{', '.join(IMBALANCE_MODES)} (default: %(default)s)",
    )
    run.add_argument(
        "--max-ratio",
        default=str(DEFAULTS.max_ratio),
        help="majority:minority cap after downsampling, >= 1 or 0 for none (default: %(default)s)",
    )
    run.add_argument(
        "--min-metric",
        default=str(DEFAULTS.min_metric),
        help="gate: minimum macro F1, 0..1 (default: %(default)s)",
    )
    run.add_argument(
        "--tolerance",
        default=str(DEFAULTS.tolerance),
        help="gate: allowed drop vs the champion, >= 0 (default: %(default)s)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        default=argparse.SUPPRESS,  # only present when given: main_from_text takes it out
        help="start a new run even when a run with the same options and data in --output-dir "
        "did not finish (default: resume it: same run id, so the registry gets one version; "
        "finished steps reused; training continues from its last epoch). A finished run is "
        "never resumed: rerunning it trains a new run",
    )
    run.add_argument("--verbose", action="store_true", help="show every line kfp.local prints")
    hp = p.add_argument_group(
        "hyperparameters (defaults: vertex_imbalanced.config.Hyperparameters)"
    )
    hp.add_argument("--epochs", help=f"default: {hyperparameter_default('epochs')}")
    hp.add_argument("--batch-size", help=f"default: {hyperparameter_default('batch_size')}")
    hp.add_argument("--learning-rate", help=f"default: {hyperparameter_default('learning_rate')}")
    hp.add_argument(
        "--hidden-units",
        help=f"comma-separated layer widths (default: {hyperparameter_default('hidden_units')})",
    )
    return p


def hyperparameter_default(name: str) -> str:
    """The default of a ``Hyperparameters`` field as --help shows it."""
    value = getattr(Hyperparameters(), name)
    if value is None:
        return "fitted to the number of training rows"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run; returns the exit status (0 ok, 2 bad input, 1 failed)."""
    args = build_parser().parse_args(argv)
    return local_run.main_from_text(vars(args))


if __name__ == "__main__":
    sys.exit(main())
