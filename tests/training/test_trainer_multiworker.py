"""Two real worker processes train with MultiWorkerMirroredStrategy on CPU (127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table

NUM_STREAMS = 4
TIMEOUT_S = 120

# Run by each worker. The training source is wrapped to record which streams it reads: the
# statistics pass reads every stream once on every worker, so further reads are training.
WORKER_SCRIPT = textwrap.dedent(
    """
    import collections, json, sys
    import numpy as np
    import pyarrow as pa
    from vertex_imbalanced.config import WEIGHT_COLUMN, Hyperparameters
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table
    from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
    from vertex_imbalanced.training.trainer import train_model

    class Recording:
        def __init__(self, inner):
            self.inner, self.reads = inner, collections.Counter()
            self.description, self.schema = inner.description, inner.schema
            self.num_streams = inner.num_streams

        def read_stream(self, index):
            self.reads[int(index)] += 1
            yield from self.inner.read_stream(index)

    output_dir, result_file = sys.argv[1], sys.argv[2]
    table = demo_table(800, seed=1)
    table = table.append_column(WEIGHT_COLUMN, pa.array(np.ones(800), pa.float64()))
    train = Recording(ArrowTableSource(table, num_streams=4, batch_rows=50, name="train"))
    val = ArrowTableSource(demo_table(200, seed=2), num_streams=2, name="validation")
    hp = Hyperparameters(
        hidden_units=(4,), epochs=2, batch_size=64, early_stopping_patience=5,
        steps_per_execution=1,
    )
    result = train_model(
        train, val, DEMO_SPEC.with_weight(WEIGHT_COLUMN), ("0", "1", "2"), hp, output_dir
    )
    with open(result_file, "w") as f:
        json.dump({
            "model_dir": None if result.model_dir is None else str(result.model_dir),
            "reads": {str(k): v for k, v in sorted(train.reads.items())},
            "distribution": result.metadata["distribution"],
            "history": result.history,
            "epochs_run": result.metrics["epochs_run"],
        }, f)
    """
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(tmp_path, configs: dict[str, dict[str, str]], output_dir) -> dict[str, dict]:
    """Start one process per worker, wait for all (killing them on timeout), return results."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    procs = {}
    for name, extra in configs.items():
        scratch = tmp_path / f"scratch-{name}"
        scratch.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
        env.update(
            extra,
            TMPDIR=str(scratch),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")])),
        )
        procs[name] = subprocess.Popen(
            [sys.executable, str(script), str(output_dir), str(tmp_path / f"{name}.json")],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    logs, deadline = {}, time.monotonic() + TIMEOUT_S
    try:
        for name, proc in procs.items():
            logs[name], _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{logs[name][-4000:]}"
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in procs}


@pytest.mark.slow
def test_two_workers_train_disjoint_shards_and_only_the_chief_exports(tmp_path):
    chief, worker = (f"127.0.0.1:{p}" for p in free_ports(2))
    output_dir = tmp_path / "model"
    cluster = {"chief": [chief], "worker": [worker]}
    # The chief gets a TF_CONFIG; the other worker Vertex AI's CLUSTER_SPEC (pool 1 = workers).
    configs = {
        "chief": {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
        },
        "worker": {
            "CLUSTER_SPEC": json.dumps(
                {
                    "cluster": {"workerpool0": [chief], "workerpool1": [worker]},
                    "task": {"type": "workerpool1", "index": 0},
                }
            )
        },
    }
    results = run_workers(tmp_path, configs, output_dir)

    for res in results.values():
        assert res["distribution"] == {"strategy": "multi_worker", "workers": 2}
        assert res["epochs_run"] == 2
    # Synchronous training: both workers saw the same (all-reduced) losses every epoch.
    chief_history, worker_history = results["chief"]["history"], results["worker"]["history"]
    assert set(chief_history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in chief_history.items():
        assert len(values) == 2 and np.isfinite(values).all()
        np.testing.assert_allclose(worker_history[key], values, rtol=1e-5)

    # Only the chief wrote: one model directory, no staging leftovers, worker scratch cleaned.
    assert results["chief"]["model_dir"] == str(output_dir)
    assert results["worker"]["model_dir"] is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model")) == ["model"]
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "logs",
        "model.keras",
        "model_metadata.json",
        "saved_model",
    ]
    assert not any((tmp_path / "scratch-worker").iterdir())
    meta = json.loads((output_dir / "model_metadata.json").read_text())
    assert meta["distribution"] == {"strategy": "multi_worker", "workers": 2}

    # Each worker trained on its own streams (stream i -> worker i % 2), together all of them.
    for res in results.values():  # the statistics pass reads every stream on every worker
        assert set(res["reads"]) == {str(i) for i in range(NUM_STREAMS)}
    trained_on = {
        name: {int(s) for s, n in res["reads"].items() if n > 1} for name, res in results.items()
    }
    assert trained_on == {"chief": {0, 2}, "worker": {1, 3}}

    # The exported model loads and predicts probabilities.
    serving = tf.saved_model.load(str(output_dir / "saved_model"))
    rows = demo_table(5, seed=3)
    features = {
        name: tf.constant(rows[name].to_numpy(zero_copy_only=False), tf.float32)
        for name in DEMO_SPEC.numeric
    }
    for name in DEMO_SPEC.categorical:
        features[name] = tf.constant(["" if v is None else str(v) for v in rows[name].to_pylist()])
    probabilities = serving.signatures["serving_default"](**features)["probabilities"].numpy()
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
