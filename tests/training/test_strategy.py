import json

import keras
import pytest
import tensorflow as tf

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.strategy import (
    WorkerInfo,
    choose_strategy,
    cluster_config,
    set_mixed_precision,
    tf_config_from_cluster_spec,
    worker_info,
)

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
