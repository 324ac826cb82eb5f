"""Score a table locally with the registered champion (kfp.local + Beam DirectRunner + DuckDB).

    python predict_local.py                  # a fresh demo sample, scored by `make run`'s champion
    python predict_local.py --demo-shift     # the same with x1 and color shifted: skew alerts
    python predict_local.py --input "duckdb:///abs/file.db?table=orders" --key order_id
    python predict_local.py --input new_rows.csv --version 2

Runs the same pipeline definition as Vertex AI (pipelines/batch_prediction_pipeline.py). The
work is done by :func:`pipelines.local_batch_prediction.main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines import local_batch_prediction as local

DEFAULTS = local.LocalPredictOptions()


def build_parser() -> argparse.ArgumentParser:
    """The command line of predict_local.py."""
    p = argparse.ArgumentParser(
        description="Score a table locally with a registered model (batch prediction pipeline)."
    )
    p.add_argument(
        "--input",
        help="duckdb:///abs/file.db?table=NAME, or a .csv/.parquet file "
        "(default: a fresh sample of the demo distribution)",
    )
    p.add_argument("--key", default=DEFAULTS.key, help="key column (default: the model's)")
    p.add_argument("--rows", type=int, default=DEFAULTS.rows, help="demo sample rows")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="demo sample seed")
    p.add_argument(
        "--demo-shift",
        action="store_true",
        help="score a demo sample with x1 and color shifted on purpose (monitoring flags skew)",
    )
    p.add_argument("--output-dir", default=DEFAULTS.output_dir)
    p.add_argument("--registry", default=DEFAULTS.registry, help="local registry directory")
    p.add_argument(
        "--model-name",
        default="",
        help=f"registered model name (default: {local.default_model_name()!r}, the name "
        "`make run` registers the demo model under)",
    )
    p.add_argument("--alias", default=DEFAULTS.alias, help="model alias (default: champion)")
    p.add_argument("--version", default="", help="explicit model version (overrides --alias)")
    p.add_argument(
        "--statistics-store",
        default=DEFAULTS.statistics_store,
        help="DuckDB file keeping each run's statistics for drift ('' = off)",
    )
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when monitoring alerts")
    p.add_argument(
        "--adjust-probabilities",
        action="store_true",
        help="add adjusted_probabilities: re-weighted to this run's EM serving prior "
        "(the predicted class stays the model's decision)",
    )
    p.add_argument("--verbose", action="store_true", help="show every line kfp.local prints")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run predict_local.py; returns the exit status."""
    args = build_parser().parse_args(argv)
    return local.main(
        local.LocalPredictOptions(
            input=args.input,
            key=args.key,
            rows=args.rows,
            seed=args.seed,
            demo_shift=args.demo_shift,
            output_dir=args.output_dir,
            registry=args.registry,
            model_name=args.model_name,
            alias=args.alias,
            version=args.version,
            statistics_store=args.statistics_store,
            fail_on_alert=args.fail_on_alert,
            adjust_probabilities=args.adjust_probabilities,
            verbose=args.verbose,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
