"""Three CPU workers (MultiWorkerMirroredStrategy) on the local Storage Read fake: kill, resume.

::

    python bench/multiworker_resume.py [--workers 3] [--rows 3000] [--epochs 3] [--kill-at 1,2]

The local BigQuery Storage Read v1 server (``fakes.storage_server``) returns **one stream**
per session whatever is asked (``max_streams_returned=1``, as BigQuery often does). Three worker
processes (TF_CONFIG chief + workers on 127.0.0.1) train the demo model on it with checkpoints:

1. an uninterrupted run (the reference);
2. a run whose workers are all killed after batch B of epoch E (``--kill-at E,B``, 0-based).
   SIGKILL, not SIGTERM: under MultiWorkerMirroredStrategy TensorFlow's coordination service
   installs its own SIGTERM handler (preemption notice) and the worker goes on training, so a
   preempted Vertex worker really ends with the SIGKILL that follows the grace period;
3. the same command again, which resumes from the chief's checkpoint.

Each worker records, per read pass, the key of every training row it read from the source. The
script prints and checks: every training pass reads each training row exactly once over all
workers (disjoint shards covering the table; later epochs replay the feed's in-memory cache of
the same chunks, FeedOptions.cache_bytes); only the chief wrote the shared checkpoint; the killed
run left a checkpoint of the last finished epoch; the resumed run trained only the remaining
epochs and ended with the reference's history, metrics and weights. Exit status 1 when a check
fails. It measures nothing else (timings are loaded-machine figures).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLES = {
    "train": "projects/p/datasets/d/tables/train",
    "validation": "projects/p/datasets/d/tables/validation",
}


# -- worker process ---------------------------------------------------------------------------


class _Recording:
    """A source that records the keys of every batch it yields, one list per read pass."""

    def __init__(self, inner, shard_index: int, passes: dict):
        self.inner, self.shard_index, self.passes = inner, shard_index, passes
        self.description, self.schema = inner.description, inner.schema
        self.num_streams = inner.num_streams

    def read_stream(self, index):
        keys = []
        self.passes.setdefault(self.shard_index, []).append(keys)
        for batch in self.inner.read_stream(index):
            keys.extend(batch.column("id").to_pylist())
            yield batch

    def shard(self, shard_index, num_shards, key):
        return _Recording(self.inner.shard(shard_index, num_shards, key), shard_index, self.passes)


def worker_main(args: argparse.Namespace) -> int:
    """One worker: train with checkpoints, record what it read, write the result as JSON."""
    import keras

    from fakes.storage_server import local_client
    from vertex_imbalanced.config import WEIGHT_COLUMN, Hyperparameters
    from vertex_imbalanced.reading.sources.bigquery_storage import BigQueryStorageSource
    from vertex_imbalanced.training.trainer import train_model
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC

    class KillAt(keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at, self.epoch = at, -1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.at == (self.epoch, batch):
                os.kill(os.getpid(), signal.SIGKILL)  # TF catches SIGTERM (see above)

    spec = DEMO_SPEC.with_weight(WEIGHT_COLUMN)
    factory = functools.partial(local_client, args.address)
    passes: dict[int, list[list[int]]] = {}
    train = _Recording(
        BigQueryStorageSource(
            "p.d.train", spec.read_columns, num_streams=4, client_factory=factory
        ),
        -1,
        passes,
    )
    validation = BigQueryStorageSource(
        "p.d.validation", DEMO_SPEC.read_columns, num_streams=4, client_factory=factory
    )
    kill_at = tuple(int(v) for v in args.kill_at.split(",")) if args.kill_at else None
    hp = Hyperparameters(
        hidden_units=(8,),
        epochs=args.epochs,
        batch_size=128,
        early_stopping_patience=args.epochs,
        steps_per_execution=1,
    )
    result = train_model(
        train,
        validation,
        spec,
        ("0", "1", "2"),
        hp,
        args.output,
        backup_dir=args.backup,
        callbacks=[KillAt(kill_at)],
    )
    Path(args.result).write_text(
        json.dumps(
            {
                "passes": {str(k): v for k, v in passes.items()},
                "history": result.history,
                "metrics": result.metrics,
                "weights": [w.ravel().tolist() for w in result.model.get_weights()],
                "is_chief": result.model_dir is not None,
            }
        )
    )
    return 0


# -- driver -----------------------------------------------------------------------------------


def run_cluster(
    work: Path,
    name: str,
    workers: int,
    address: str,
    epochs: int,
    kill_at: str | None,
    timeout_s: float,
):
    """Start ``workers`` processes (chief + workers), wait; return (exit codes, results, seconds)."""
    from fakes.server_process import free_ports

    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    cluster = {"chief": hosts[:1], "worker": hosts[1:]}
    procs = []
    started = time.monotonic()
    for i in range(workers):
        task = {"type": "chief", "index": 0} if i == 0 else {"type": "worker", "index": i - 1}
        scratch = work / f"scratch-{name}-{i}"
        scratch.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
        env.update(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": task}),
            TMPDIR=str(scratch),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--address",
            address,
            "--output",
            str(work / "model"),
            "--backup",
            str(work / "model.backup"),
            "--result",
            str(work / f"{name}-{i}.json"),
            "--epochs",
            str(epochs),
        ]
        if kill_at:
            command += ["--kill-at", kill_at]
        log = open(work / f"{name}-{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append(
            (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    deadline = started + timeout_s
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
        log.close()
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = []
    for i in range(workers):
        path = work / f"{name}-{i}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return codes, results, time.monotonic() - started


def pass_coverage(results, all_keys: set[int]) -> list[bool]:
    """Per training pass over the source: did the workers together read every row once?"""
    per_worker = []
    for i, res in enumerate(results):
        own = res["passes"][str(i)]
        per_worker.append(own[1:])  # pass 0: the statistics pass (every worker reads all shards)
    ok = []
    for e in range(max(len(p) for p in per_worker)):
        counts = collections.Counter(k for p in per_worker if e < len(p) for k in p[e])
        ok.append(set(counts) == all_keys and set(counts.values()) == {1})
    return ok


def main(argv: list[str] | None = None) -> int:
    """Parse the options; run the worker (``--worker``) or the three-run check."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--kill-at", default=None, help="E,B: SIGKILL after batch B of epoch E")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--address", "--output", "--backup", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    return drive(args)


def drive(args: argparse.Namespace) -> int:
    """Reference run, killed run, resumed run; print and check."""
    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(REPO))
    from fakes.storage_server import StorageReadServer
    from vertex_imbalanced.config import WEIGHT_COLUMN
    from vertex_imbalanced.warehouse.demo_data import demo_table

    kill_at = args.kill_at or "1,2"
    train = demo_table(args.rows, seed=1)
    train = train.append_column(WEIGHT_COLUMN, pa.array(np.ones(args.rows), pa.float64()))
    all_keys = set(train.column("id").to_pylist())
    checks: list[tuple[str, bool]] = []
    base = Path(args.work_dir or tempfile.mkdtemp(prefix="multiworker-resume-"))
    with StorageReadServer(batch_rows=256, max_streams_returned=1) as srv:
        srv.add_table(TABLES["train"], train)
        srv.add_table(TABLES["validation"], demo_table(max(args.rows // 3, 300), seed=2))
        runs = {}
        for name, kill in (("reference", None), ("killed", kill_at), ("resumed", None)):
            work = base / ("reference" if name == "reference" else "interrupted")
            work.mkdir(parents=True, exist_ok=True)
            codes, results, seconds = run_cluster(
                work, name, args.workers, srv.address, args.epochs, kill, args.timeout
            )
            runs[name] = (codes, results, work)
            print(
                f"{name}: {args.workers} workers, exit codes {codes}, {seconds:.0f} s (loaded machine)"
            )
            if name == "killed":
                backup = work / "model.backup"
                manifest = json.loads((backup / "manifest.json").read_text())
                print(
                    f"  killed at epoch {kill_at.split(',')[0]} batch {kill_at.split(',')[1]} "
                    f"(0-based); checkpoint manifest: epochs_done={manifest['epochs_done']}, "
                    f"slot {manifest['slot']}; shared dir holds {sorted(p.name for p in backup.iterdir())}"
                )
                checks.append(("all workers were killed", codes == [-9] * args.workers))
                checks.append(
                    (
                        "checkpoint = last finished epoch",
                        manifest["epochs_done"] == int(kill_at.split(",")[0]),
                    )
                )
                checks.append(
                    (
                        "only the chief wrote the shared checkpoint",
                        sorted(p.name for p in backup.iterdir())
                        == ["manifest.json", f"slot-{manifest['slot']}"],
                    )
                )
                own = [
                    list((work / f"scratch-killed-{i}").glob("checkpoint-worker*"))
                    for i in range(1, args.workers)
                ]
                checks.append(
                    (
                        "other workers wrote their own temporary checkpoints",
                        all(len(o) == 1 for o in own),
                    )
                )
                checks.append(("no model published", not (work / "model" / "_COMPLETE").exists()))
            else:
                checks.append((f"{name}: all workers exit 0", codes == [0] * args.workers))
        ref, res = runs["reference"][1], runs["resumed"][1]
        if all(ref) and all(res):
            cover_ref = pass_coverage(ref, all_keys)
            cover_res = pass_coverage(res, all_keys)
            shard_rows = [len(r["passes"][str(i)][1]) for i, r in enumerate(ref)]
            print(f"  rows per worker shard (reference): {shard_rows} of {len(all_keys)}")
            print(
                f"  reference: training passes over the source reading every row once: {cover_ref}"
            )
            print(
                f"  resumed:   training passes over the source reading every row once: {cover_res}"
            )
            print(
                f"  epochs run: reference {len(ref[0]['history']['loss'])}, resumed run trained "
                f"{res[0]['metrics']['epochs_run'] - int(kill_at.split(',')[0])} more of {args.epochs}"
            )
            checks.append(
                (
                    "reference: every source pass reads every row exactly once",
                    bool(cover_ref) and all(cover_ref),
                )
            )
            checks.append(
                (
                    "resumed: every source pass reads every row exactly once",
                    bool(cover_res) and all(cover_res),
                )
            )
            same = all(
                r["history"] == q["history"]
                and r["metrics"] == q["metrics"]
                and r["weights"] == q["weights"]
                for r, q in zip(ref, res, strict=True)
            )
            print(f"  reference val_loss {ref[0]['history']['val_loss']}")
            print(f"  resumed   val_loss {res[0]['history']['val_loss']}")
            checks.append(("resumed = reference (history, metrics, weights on every worker)", same))
            checks.append(
                ("resumed: model published", (runs["resumed"][2] / "model" / "_COMPLETE").is_file())
            )
            checks.append(
                ("resumed: checkpoint removed", not (runs["resumed"][2] / "model.backup").exists())
            )
        sessions = srv.created_sessions
        print(
            f"  read sessions created: {len(sessions)}, streams per session: {sorted({s.streams for s in sessions})}"
        )
        checks.append(
            ("the fake returned one stream per session", {s.streams for s in sessions} == {1})
        )
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
