"""tensorflow-io 0.37.1 reader benchmark (legacy env): Avro and Arrow in their best config.

    .venv-legacy/bin/python bench/tfio_reader_bench.py [--rows N] [--batch-rows B] [--repeat R]
                                                       [--batch-size S] [--streams K]

Starts ``fakes.storage_server_v1beta1`` in its own process over a table of N rows
(20 FLOAT64 + 5 STRING of 5-20 chars + INT64 label; ``ReadRows`` responses of --batch-rows
rows), then, per format, a fresh child process that opens a ``TfioBigQuerySource`` (2 streams)
and iterates ``dataset(batch_size)`` to the end: each stream read by tensorflow-io and batched
inside the interleave, converted to the contract's ``(features, label, weight)`` in the graph.
The time counts from the first ``next()`` to the last batch; opening the session is reported
apart (``session_s``: our test server encodes the whole Avro session then, BigQuery does not).
Peak RSS is the child's ``ru_maxrss`` (TensorFlow itself is ~0.5 GB of it).

Prints one JSON line: ``{"rows": N, "results": [{"reader": "tfio_avro", "rows_per_s",
"peak_rss_mb", ...}, {"reader": "tfio_arrow", ...}]}`` (medians over --repeat runs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ("AVRO", "ARROW")
TABLE = "p.d.t"


def run_child(args) -> int:
    """Read the whole table once with one format; print one JSON line."""
    import tensorflow as tf
    import tensorflow_io.bigquery as tfio_bq

    from fakes.arrow_tables import wide_float_names, wide_string_names
    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.reading.sources.tfio_source import TfioBigQuerySource, raise_tfio_errors

    spec = FeatureSpec(
        label="label",
        numeric=tuple(wide_float_names(20)),
        categorical=tuple(wide_string_names(5)),
    )
    client = tfio_bq.BigQueryTestClient(args.address)
    t0 = time.perf_counter()
    source = TfioBigQuerySource(
        TABLE, spec, client=client, data_format=args.child, num_streams=args.streams
    )
    ds = source.dataset(args.batch_size, num_parallel_calls=args.streams)
    t1 = time.perf_counter()
    rows = 0
    with raise_tfio_errors(TABLE):
        iterator = iter(ds)
        start = time.perf_counter()
        for _, label, _ in iterator:
            rows += int(tf.shape(label)[0])
        seconds = time.perf_counter() - start
    if rows != args.rows:
        raise SystemExit(f"read {rows} rows, expected {args.rows}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"rows": rows, "seconds": seconds, "session_s": t1 - t0, "peak_rss_mb": peak}),
        flush=True,
    )
    return 0


def measure(args, address: str, data_format: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        f"--child={data_format}",
        f"--address={address}",
        f"--rows={args.rows}",
        f"--streams={args.streams}",
        f"--batch-size={args.batch_size}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"tfio {data_format} child failed ({proc.returncode}): {tail}")
    return json.loads(lines[-1])


def run_parent(args) -> int:
    from fakes.storage_server_v1beta1 import serve_in_subprocess

    runs: dict[str, list[dict]] = {f: [] for f in args.formats.split(",")}
    with serve_in_subprocess(
        args.rows, kind="wide", table=TABLE, batch_rows=args.batch_rows
    ) as addr:
        for _ in range(args.repeat):
            for data_format in runs:
                got = measure(args, addr, data_format)
                runs[data_format].append(got)
                print(f"tfio {data_format}: {got}", file=sys.stderr, flush=True)
    results = []
    for data_format, got in runs.items():
        rates = [g["rows"] / g["seconds"] for g in got]
        results.append(
            {
                "reader": f"tfio_{data_format.lower()}",
                "rows_per_s": statistics.median(rates),
                "peak_rss_mb": statistics.median(g["peak_rss_mb"] for g in got),
                "session_s": statistics.median(g["session_s"] for g in got),
                "runs": len(got),
                "config": f"{args.streams} streams, batch {args.batch_size} inside the "
                f"interleave, {data_format}, server responses of {args.batch_rows} rows",
            }
        )
    print(json.dumps({"rows": args.rows, "columns": 26, "results": results}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table")
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per ReadRows response")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per tf.data batch (default: --batch-rows)",
    )
    parser.add_argument("--streams", type=int, default=2, help="read streams (2 cores: 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per format (median)")
    parser.add_argument("--formats", default="AVRO,ARROW", help="comma-separated: AVRO,ARROW")
    parser.add_argument("--child", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or args.batch_rows
    return run_child(args) if args.child else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
