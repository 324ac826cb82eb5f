"""Reader benchmark: BigQuery Storage Read v1 -> tf.data against a local server in its own process.

    python bench/readers.py [--rows N] [--json PATH] [--repeat R]

Table: 20 FLOAT64 + 5 STRING (5-20 chars) + INT64 label, record batches of --batch-rows rows,
served by ``fakes.storage_server`` in a separate process. Each measurement runs in
a fresh child process (so its peak RSS, ``ru_maxrss``, is its own); the time counts from
creating the read session (or the in-memory source) to the last batch. Readers:

  v1             our BigQueryStorageSource (2 streams) through vertex_imbalanced.reading.datasets.make_dataset
  v1_train       the same source through the training feed, make_encoded_dataset (numeric
                 matrix + vocabulary ids; 1000-token vocabularies, batches of --batch-rows)
  tfio           tensorflow-io 0.37.1 best config, via bench/tfio_reader_bench.py in .venv-legacy
  pandas         what users usually write: whole table via the Storage API into
                 ReadRowsStream.to_dataframe(), then tf.data.Dataset.from_tensor_slices(dict(df))
                 .batch(batch_rows)
  pyarrow        decode limit: the serialized ReadRows responses (fetched beforehand, untimed)
                 parsed and decoded by pyarrow into numpy (floats; strings as offsets + bytes),
                 no tf.data
  tfdata_memory  framework limit: the same record batches from memory (ArrowTableSource)
                 through make_dataset, no gRPC

Every child gets the same process settings: glibc malloc thresholds raised (DESIGN.md §7) and
``gc.freeze()`` after imports; ``--plain`` turns both off.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READERS = ("v1", "v1_train", "tfio", "pandas", "pyarrow", "tfdata_memory")
TABLE = "projects/p/datasets/d/tables/t"
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
N_FLOAT, N_STRING = 20, 5


# children ------------------------------------------------------------------------------------


def _spec():
    from fakes.arrow_tables import wide_float_names, wide_string_names
    from vertex_imbalanced.config import FeatureSpec

    return FeatureSpec(
        label="label",
        numeric=tuple(wide_float_names(N_FLOAT)),
        categorical=tuple(wide_string_names(N_STRING)),
    )


def _count_dataset(ds) -> int:
    rows = 0
    for _, label, _ in ds:
        rows += int(label.shape[0])
    return rows


def child_v1(args) -> tuple[int, float]:
    from fakes.storage_server import local_client
    from vertex_imbalanced.reading.datasets import make_dataset
    from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource

    spec = _spec()
    client = local_client(args.address)
    start = time.perf_counter()
    source = BigQueryStorageSource("p.d.t", list(spec.read_columns), num_streams=2, client=client)
    rows = _count_dataset(make_dataset(source, spec))
    return rows, time.perf_counter() - start


def child_v1_train(args) -> tuple[int, float]:
    import numpy as np

    from fakes.arrow_tables import random_strings
    from fakes.storage_server import local_client
    from vertex_imbalanced.reading.datasets import FeedOptions, make_encoded_dataset
    from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource

    spec = _spec()
    rng = np.random.default_rng(1)  # random tokens: nearly every lookup misses, as costly as a hit
    vocabularies = {c: random_strings(rng, 1000).to_pylist() for c in spec.categorical}
    client = local_client(args.address)
    start = time.perf_counter()
    source = BigQueryStorageSource("p.d.t", list(spec.read_columns), num_streams=2, client=client)
    ds = make_encoded_dataset(source, spec, vocabularies, FeedOptions(batch_size=args.batch_rows))
    rows = _count_dataset(ds)
    return rows, time.perf_counter() - start


def child_pandas(args) -> tuple[int, float]:
    import pandas as pd
    import tensorflow as tf
    from google.cloud.bigquery_storage_v1 import types

    from fakes.storage_server import local_client

    client = local_client(args.address)
    start = time.perf_counter()
    requested = types.ReadSession(table=TABLE, data_format=types.DataFormat.ARROW)
    session = client.create_read_session(
        parent="projects/p", read_session=requested, max_stream_count=2
    )
    frames = [client.read_rows(s.name).to_dataframe(session) for s in session.streams]
    df = pd.concat(frames, ignore_index=True)
    del frames
    label = df.pop("label")
    ds = tf.data.Dataset.from_tensor_slices((dict(df), label)).batch(args.batch_rows)
    rows = 0
    for _, y in ds:
        rows += int(y.shape[0])
    return rows, time.perf_counter() - start


def _fetch_raw_responses(address: str) -> list[bytes]:
    import grpc
    from google.cloud.bigquery_storage_v1 import types

    from fakes.storage_server import local_client

    client = local_client(address)
    requested = types.ReadSession(table=TABLE, data_format=types.DataFormat.ARROW)
    session = client.create_read_session(
        parent="projects/p", read_session=requested, max_stream_count=2
    )
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)])
    read_rows = channel.unary_stream(
        "/google.cloud.bigquery.storage.v1.BigQueryRead/ReadRows",
        request_serializer=types.ReadRowsRequest.serialize,
    )
    raw = [m for s in session.streams for m in read_rows(types.ReadRowsRequest(read_stream=s.name))]
    return [session.arrow_schema.serialized_schema, *raw]


def child_pyarrow(args) -> tuple[int, float]:
    import numpy as np
    import pyarrow as pa
    from google.cloud.bigquery_storage_v1 import types

    schema_bytes, *raw = _fetch_raw_responses(args.address)
    parse = types.ReadRowsResponse.pb().FromString
    start = time.perf_counter()
    schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
    rows = 0
    sink = 0.0
    for message in raw:
        pb = parse(message)
        batch = pa.ipc.read_record_batch(
            pa.py_buffer(pb.arrow_record_batch.serialized_record_batch), schema
        )
        n = batch.num_rows
        for column in batch.columns:
            if pa.types.is_string(column.type):
                _, offsets, data = column.buffers()
                values = np.frombuffer(offsets, np.int32, n + 1, column.offset * 4)
                chars = np.frombuffer(data, np.uint8)
                sink += values[-1] + chars.size
            else:
                sink += column.to_numpy(zero_copy_only=False)[-1]
        rows += n
    return rows, time.perf_counter() - start


def child_tfdata_memory(args) -> tuple[int, float]:
    from fakes.arrow_tables import make_wide_table
    from vertex_imbalanced.reading.datasets import make_dataset
    from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource

    table = make_wide_table(args.rows, N_FLOAT, N_STRING, seed=args.seed)
    start = time.perf_counter()
    source = ArrowTableSource(table, num_streams=2, batch_rows=args.batch_rows)
    rows = _count_dataset(make_dataset(source, _spec()))
    return rows, time.perf_counter() - start


def child_baseline(args) -> tuple[int, float]:
    """Imports only: the RSS every child starts from (TensorFlow, pyarrow, gRPC)."""
    import pandas  # noqa: F401
    from google.cloud.bigquery_storage_v1 import types  # noqa: F401

    import vertex_imbalanced.reading.datasets  # noqa: F401

    return 0, 1.0


CHILDREN = {
    "baseline": child_baseline,
    "v1": child_v1,
    "v1_train": child_v1_train,
    "pandas": child_pandas,
    "pyarrow": child_pyarrow,
    "tfdata_memory": child_tfdata_memory,
}


def run_child(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401  (import cost outside the timing, same for every reader)

    if not args.plain:
        gc.collect()
        gc.freeze()
    rows, seconds = CHILDREN[args.child](args)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}), flush=True)


# parent --------------------------------------------------------------------------------------


def _child_env(plain: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if not plain:
        env.update(MALLOC_ENV)
    return env


def measure(reader: str, args, address: str) -> dict | str:
    """One measurement in a fresh process; returns the child's JSON or an error text."""
    cmd = [
        sys.executable,
        __file__,
        f"--child={reader}",
        f"--address={address}",
        f"--rows={args.rows}",
        f"--seed={args.seed}",
        f"--batch-rows={args.batch_rows}",
        *(["--plain"] if args.plain else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(args.plain))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    result = json.loads(lines[-1])
    if reader != "baseline" and result["rows"] != args.rows:
        return f"failed: read {result['rows']} rows of {args.rows}"
    return result


def measure_tfio(args) -> list[dict] | str:
    """Run the legacy-env tfio bench (it starts its own v1beta1 server); JSON line(s) back."""
    python = ROOT / ".venv-legacy" / "bin" / "python"
    script = ROOT / "bench" / "tfio_reader_bench.py"
    if not python.exists():
        return "n/a (make legacy-env)"
    if not script.exists():
        return "n/a (bench/tfio_reader_bench.py missing)"
    cmd = [str(python), str(script), f"--rows={args.rows}", f"--batch-rows={args.batch_rows}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(args.plain))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    found = json.loads(lines[-1])
    entries = found.get("results", [found])
    return [e for e in entries if "rows_per_s" in e]


def summarize(reader: str, runs: list[dict]) -> dict:
    rates = [r["rows"] / r["seconds"] for r in runs]
    return {
        "reader": reader,
        "rows_per_s": statistics.median(rates),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "runs": len(runs),
    }


def run_parent(args) -> int:
    from fakes.storage_server import serve_in_subprocess

    results: list[dict] = []
    notes: dict[str, str] = {}
    readers = args.readers.split(",") if args.readers else list(READERS)
    runs: dict[str, list[dict]] = {r: [] for r in readers if r != "tfio"}
    if args.rows > args.pandas_max_rows and "pandas" in runs:
        del runs["pandas"]
        notes["pandas"] = f"skipped: {args.rows:,} rows > --pandas-max-rows (memory)"
    if "tfio" in readers:
        got = measure_tfio(args)
        if isinstance(got, str):
            notes["tfio"] = got
        else:
            # The legacy script names its configs (tfio_avro, tfio_arrow); the JSON contract
            # calls them all "tfio", with the config kept alongside.
            results.extend(
                {**entry, "reader": "tfio", "config": entry.get("config") or entry.get("reader")}
                for entry in got
            )
    with serve_in_subprocess(
        args.rows, kind="wide", seed=args.seed, batch_rows=args.batch_rows
    ) as address:
        baseline = measure("baseline", args, address)
        # Round-robin over the readers so that load from other processes spreads evenly.
        for _ in range(args.repeat):
            for reader in list(runs):
                got = measure(reader, args, address)
                print(f"  {reader}: {got}", file=sys.stderr)
                if isinstance(got, str):
                    notes[reader] = got
                    del runs[reader]
                else:
                    runs[reader].append(got)
    results.extend(summarize(reader, got) for reader, got in runs.items())
    results.sort(key=lambda r: READERS.index(r["reader"]))
    base_mb = baseline["peak_rss_mb"] if isinstance(baseline, dict) else None
    print_table(args, results, notes, base_mb)
    if args.json:
        payload = {
            "rows": args.rows,
            "columns": N_FLOAT + N_STRING,
            "baseline_rss_mb": base_mb,
            "results": [
                {
                    "reader": r["reader"],
                    "rows_per_s": float(r["rows_per_s"]),
                    "peak_rss_mb": float(r["peak_rss_mb"]),
                    **({"config": r["config"]} if "config" in r else {}),
                }
                for r in results
            ],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def print_table(args, results: list[dict], notes: dict[str, str], base_mb: float | None) -> None:
    print(
        f"\n{args.rows:,} rows x ({N_FLOAT} FLOAT64 + {N_STRING} STRING + label), "
        f"record batches of {args.batch_rows}, median of {args.repeat} run(s), "
        f"{os.cpu_count()} CPUs{' (plain process settings)' if args.plain else ''}"
    )
    names = [r["reader"] + (f" ({r['config']})" if r.get("config") else "") for r in results]
    width = max([22, *map(len, names)])
    print(f"{'reader':<{width}} {'rows/s':>12} {'peak RSS MB':>12}")
    for name, r in zip(names, results, strict=True):
        print(f"{name:<{width}} {r['rows_per_s']:>12,.0f} {r['peak_rss_mb']:>12,.0f}")
    for reader, note in notes.items():
        print(f"{reader:<{width}} {note}")
    if base_mb is not None:
        print(f"(peak RSS of a child that only imports TF/pyarrow/gRPC: {base_mb:,.0f} MB)")
    by = {r["reader"]: r["rows_per_s"] for r in results}
    if "v1" in by and "tfdata_memory" in by:
        print(f"v1 / tfdata_memory = {by['v1'] / by['tfdata_memory']:.2f}")
    if "v1" in by and "tfio" in by:
        print(
            f"v1 / best tfio = {by['v1'] / max(r['rows_per_s'] for r in results if r['reader'] == 'tfio'):.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader (median)")
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per record batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", help=f"comma-separated subset of {','.join(READERS)}")
    parser.add_argument(
        "--pandas-max-rows",
        type=int,
        default=5_000_000,
        help="skip the pandas reader above this many rows (it holds the whole table, ~1 GB/1M rows)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="no malloc tuning and no gc.freeze() in children"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
