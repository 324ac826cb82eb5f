import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from fakes.server_process import free_ports
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.strategy import (
    WorkerInfo,
    choose_strategy,
    cluster_config,
    set_mixed_precision,
    tf_config_from_cluster_spec,
    training_cluster,
    worker_info,
)

TIMEOUT_S = 300
STRATEGY_S = 60  # creating the strategy: ~2 s here; with the reducer as leader, minutes


VERTEX_SPEC = {
    "cluster": {
        "workerpool0": ["chief:2222"],
        "workerpool1": ["w0:2222", "w1:2222"],
        "workerpool2": ["reducer:2222"],
    },
    "environment": "cloud",
    "task": {"type": "workerpool1", "index": 1},
    "job": "{}",
}


def test_cluster_spec_translates_to_tf_config():
    config = tf_config_from_cluster_spec(VERTEX_SPEC)
    assert config == {
        "cluster": {"chief": ["chief:2222"], "worker": ["w0:2222", "w1:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert worker_info(config) == WorkerInfo(index=2, count=3, is_chief=False, task_type="worker")
    reducer = {**VERTEX_SPEC, "task": {"type": "workerpool2", "index": 0}}
    assert tf_config_from_cluster_spec(reducer)["task"]["type"] == "reduction_server"


def test_tf_config_wins_over_cluster_spec_and_chief_rules():
    tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    env = {"TF_CONFIG": json.dumps(tf_config), "CLUSTER_SPEC": json.dumps(VERTEX_SPEC)}
    assert cluster_config(env) == tf_config
    assert worker_info(tf_config) == WorkerInfo(0, 2, True, "worker")  # no chief: worker 0 is
    chief = {**VERTEX_SPEC, "task": {"type": "workerpool0", "index": 0}}
    assert worker_info(cluster_config({"CLUSTER_SPEC": json.dumps(chief)})).is_chief
    assert cluster_config({}) is None and worker_info(None) == WorkerInfo()


def test_bad_cluster_variables_fail_clearly():
    with pytest.raises(PipelineInputError, match="TF_CONFIG is not valid JSON"):
        cluster_config({"TF_CONFIG": "{nope"})
    with pytest.raises(PipelineInputError, match="CLUSTER_SPEC needs 'cluster' and 'task'"):
        cluster_config({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"]}})})
    evaluator = {
        "cluster": {"chief": ["a:1"], "evaluator": ["e:1"]},
        "task": {"type": "evaluator", "index": 0},
    }
    with pytest.raises(PipelineInputError, match="'evaluator' does not train"):
        choose_strategy({"TF_CONFIG": json.dumps(evaluator)})


def test_local_and_single_worker_get_the_default_strategy():
    for env in (
        {},
        {
            "TF_CONFIG": json.dumps(
                {"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}
            )
        },
    ):
        ctx = choose_strategy(env)
        assert ctx.kind == "default" and ctx.worker.count == 1 and ctx.worker.is_chief
        assert ctx.strategy is tf.distribute.get_strategy() and ctx.num_replicas == 1


def test_mixed_precision_policy_set_and_restored():
    previous = set_mixed_precision("mixed_bfloat16")
    try:
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert set_mixed_precision(None) == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "float32"
    finally:
        keras.config.set_dtype_policy(previous)
    with pytest.raises(PipelineInputError, match="mixed_float32"):
        set_mixed_precision("mixed_float32")


def test_multi_worker_tf_config_without_task_index_is_an_error():
    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker"}}
    with pytest.raises(PipelineInputError, match="needs an 'index'"):
        worker_info(tf_config)


def test_reduction_server_and_master_are_cleaned_from_tf_config():
    vertex = {
        "cluster": {"master": ["m:1"], "worker": ["w0:1", "w1:1"], "ps": ["r0:1", "r1:1"]},
        "task": {"type": "master", "index": 0},
        "environment": "cloud",
    }
    cleaned = training_cluster(vertex)
    assert cleaned == {
        "cluster": {"chief": ["m:1"], "worker": ["w0:1", "w1:1"]},
        "task": {"type": "chief", "index": 0},
        "environment": "cloud",
    }
    assert "ps" in vertex["cluster"]  # the input is not changed
    assert cluster_config({"TF_CONFIG": json.dumps(vertex)}) == cleaned
    assert worker_info(vertex) == WorkerInfo(index=0, count=3, is_chief=True, task_type="chief")
    reducer = {**vertex, "task": {"type": "ps", "index": 1}}
    with pytest.raises(PipelineInputError, match="'ps' does not train"):
        choose_strategy({"TF_CONFIG": json.dumps(reducer)})
    both = {"cluster": {"chief": ["a:1"], "master": ["b:1"]}, "task": {"type": "chief"}}
    with pytest.raises(PipelineInputError, match="both 'chief' and 'master'"):
        worker_info(both)


# TensorFlow's import is timed apart: on a loaded 2-core machine it alone can take minutes.
STRATEGY_SCRIPT = """
import json, os, time
import tensorflow
from vertex_imbalanced.training.strategy import choose_strategy
started = time.monotonic()
ctx = choose_strategy()
print(json.dumps({"kind": ctx.kind, "replicas": ctx.num_replicas, "chief": ctx.worker.is_chief,
                  "index": ctx.worker.index, "seconds": time.monotonic() - started,
                  "tf_config": json.loads(os.environ["TF_CONFIG"])}))
"""


def test_vertex_tf_config_with_reduction_server_builds_the_strategy_in_bounded_time(tmp_path):
    # Vertex's shape: chief (pool 0), worker (pool 1), ps = Reduction Server (pool 2) that
    # runs no TensorFlow (nothing listens on its ports). Before the fix this hung for minutes.
    chief, worker, reducer = (f"127.0.0.1:{p}" for p in free_ports(3))
    cluster = {"chief": [chief], "worker": [worker], "ps": [reducer]}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("CLUSTER_SPEC", None)
    script = tmp_path / "strategy.py"
    script.write_text(STRATEGY_SCRIPT)
    procs = []
    for task_type, log in (("chief", "c"), ("worker", "w")):
        tf_config = {"cluster": cluster, "task": {"type": task_type, "index": 0}, "job": "{}"}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env={**env, "TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"{log}.log").open("w"),
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            assert proc.returncode == 0, out
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [(r["kind"], r["replicas"], r["chief"], r["index"]) for r in results] == [
        ("multi_worker", 2, True, 0),
        ("multi_worker", 2, False, 1),
    ]
    assert all(r["tf_config"]["cluster"] == {"chief": [chief], "worker": [worker]} for r in results)
    assert all(r["seconds"] < STRATEGY_S for r in results), results
