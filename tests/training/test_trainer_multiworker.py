"""Two real worker processes train with MultiWorkerMirroredStrategy on CPU (127.0.0.1).

They train with checkpoints (only the chief writes the shared one), are killed in the middle of
an epoch, and the restarted pair resumes to the result of an uninterrupted run. The kill is a
SIGKILL: under MultiWorkerMirroredStrategy TensorFlow's coordination service installs its own
SIGTERM handler (preemption notice), so SIGTERM alone does not stop a worker (seen here: the
workers trained on); on Vertex the SIGKILL after the grace period ends it.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from fakes.server_process import free_ports
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table

NUM_STREAMS = 4
TIMEOUT_S = 600  # per run of the two processes (a loaded 2-core machine is slow)

# Run by each worker. The training source is wrapped to record which streams it reads: the
# statistics pass reads every stream once on every worker, so further reads are training.
WORKER_SCRIPT = textwrap.dedent(
    """
    import collections, json, os, signal, sys
    import keras
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

    class KillAt(keras.callbacks.Callback):  # SIGKILL after batch B of epoch E (KILL_AT="E,B")
        def __init__(self, at):
            super().__init__()
            self.at, self.epoch = at, -1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.at == (self.epoch, batch):
                os.kill(os.getpid(), signal.SIGKILL)

    output_dir, result_file, backup_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_at = tuple(int(v) for v in os.environ["KILL_AT"].split(",")) if "KILL_AT" in os.environ else None
    table = demo_table(800, seed=1)
    table = table.append_column(WEIGHT_COLUMN, pa.array(np.ones(800), pa.float64()))
    train = Recording(ArrowTableSource(table, num_streams=4, batch_rows=50, name="train"))
    val = ArrowTableSource(demo_table(200, seed=2), num_streams=2, name="validation")
    hp = Hyperparameters(
        hidden_units=(4,), epochs=2, batch_size=64, early_stopping_patience=5,
        steps_per_execution=1,
    )
    result = train_model(
        train, val, DEMO_SPEC.with_weight(WEIGHT_COLUMN), ("0", "1", "2"), hp, output_dir,
        backup_dir=backup_dir, callbacks=[KillAt(kill_at)],
    )
    with open(result_file, "w") as f:
        json.dump({
            "model_dir": None if result.model_dir is None else str(result.model_dir),
            "reads": {str(k): v for k, v in sorted(train.reads.items())},
            "distribution": result.metadata["distribution"],
            "history": result.history,
            "epochs_run": result.metrics["epochs_run"],
            "metrics": result.metrics,
            "weights": [w.ravel().tolist() for w in result.model.get_weights()],
        }, f)
    """
)


def run_workers(
    tmp_path, configs: dict[str, dict[str, str]], output_dir, backup_dir, run: str, returncode=0
) -> dict[str, dict]:
    """Start one process per worker, wait for all (killing them on timeout), return results."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    procs = {}
    for name, extra in configs.items():
        scratch = tmp_path / f"scratch-{run}-{name}"
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
            [
                sys.executable,
                str(script),
                str(output_dir),
                str(tmp_path / f"{run}-{name}.json"),
                str(backup_dir),
            ],
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
        assert proc.returncode == returncode, (
            f"{name} exited {proc.returncode}:\n{logs[name][-4000:]}"
        )
    if returncode:
        return {}
    return {name: json.loads((tmp_path / f"{run}-{name}.json").read_text()) for name in procs}


def cluster_configs(kill_at: str | None = None) -> dict[str, dict[str, str]]:
    """The chief gets a TF_CONFIG; the other worker Vertex AI's CLUSTER_SPEC (pool 1)."""
    chief, worker = (f"127.0.0.1:{p}" for p in free_ports(2))
    cluster = {"chief": [chief], "worker": [worker]}
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
    if kill_at:
        for extra in configs.values():
            extra["KILL_AT"] = kill_at
    return configs


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S)  # three runs of two processes
def test_two_workers_checkpoint_on_the_chief_only_and_resume_a_mid_epoch_kill(tmp_path):
    output_dir, backup = tmp_path / "model", tmp_path / "model.backup"
    results = run_workers(tmp_path, cluster_configs(), output_dir, backup, "ref")
    assert not backup.exists()  # removed once the model was written

    # Killed after batch 2 of the second epoch (checkpoint of epoch 1 on disk).
    resumed_dir, resumed_backup = tmp_path / "resumed", tmp_path / "resumed.backup"
    configs = cluster_configs(kill_at="1,2")
    run_workers(tmp_path, configs, resumed_dir, resumed_backup, "killed", returncode=-9)
    manifest = json.loads((resumed_backup / "manifest.json").read_text())
    assert manifest["epochs_done"] == 1
    # only the chief wrote the shared checkpoint; the worker wrote into its own scratch dir
    assert sorted(p.name for p in resumed_backup.iterdir()) == ["manifest.json", "slot-0"]
    (own,) = (tmp_path / "scratch-killed-worker").glob("checkpoint-worker1-*")
    assert json.loads((own / "manifest.json").read_text())["epochs_done"] == 1
    assert not (resumed_dir / "_COMPLETE").exists()
    resumed = run_workers(tmp_path, cluster_configs(), resumed_dir, resumed_backup, "resumed")
    assert (resumed_dir / "_COMPLETE").is_file() and not resumed_backup.exists()
    for name in ("chief", "worker"):  # the restored epoch is the killed run's, exactly
        assert resumed[name]["history"]["val_loss"][0] == results[name]["history"]["val_loss"][0]
        assert len(resumed[name]["history"]["loss"]) == 2

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
        "_COMPLETE",
        "logs",
        "model.keras",
        "model_metadata.json",
        "saved_model",
    ]
    assert not any((tmp_path / "scratch-ref-worker").iterdir())
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

    # The resumed run ends exactly where the uninterrupted one does (every step of a worker
    # takes one whole batch of its shard, so the epoch after the restore reads the same batches).
    for name in ("chief", "worker"):
        for key in ("history", "metrics", "weights"):
            assert resumed[name][key] == results[name][key], (name, key)
