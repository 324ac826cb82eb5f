"""Pick the ``tf.distribute`` strategy, this worker's shard and the mixed-precision policy.

Read from the environment at call time (never at import time):

* ``TF_CONFIG`` (set by Vertex AI and by hand) or Vertex's ``CLUSTER_SPEC``, translated to a
  ``TF_CONFIG`` (worker pool 0 -> ``chief``, pool 1 -> ``worker``, pool 2 = Reduction Server
  (not a TF task), pool 3 -> ``evaluator``). More than one chief/worker task means
  ``MultiWorkerMirroredStrategy``.
* Vertex lists the Reduction Server pool under ``ps`` in ``TF_CONFIG``. TensorFlow would make
  the first ``ps`` host (a reducer that runs no TensorFlow) the coordination-service leader
  and strategy creation would hang, so :func:`training_cluster` drops ``ps`` from the cluster
  (our strategies never use parameter servers) and the cleaned ``TF_CONFIG`` is what
  ``MultiWorkerMirroredStrategy`` reads. The primary may be called ``chief`` or ``master``
  (older Vertex / AI Platform jobs): ``master`` is renamed ``chief``.
* otherwise more than one visible GPU means ``MirroredStrategy``; else the default strategy.
* Workers with GPUs all-reduce with NCCL (:func:`collective_implementation`; Vertex's Reduction
  Server is an NCCL plugin, so it serves only NCCL all-reduce); CPU workers let TensorFlow
  choose (ring all-reduce).

Each worker reads a disjoint part of the table
(:func:`vertex_imbalanced.reading.sources.base.worker_shard` with ``WorkerInfo.index`` /
``WorkerInfo.count``); only the chief writes the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from vertex_imbalanced.errors import PipelineInputError

MIXED_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")
_POOL_TO_TASK = {"workerpool0": "chief", "workerpool1": "worker", "workerpool3": "evaluator"}
REDUCER_TASK_TYPES = ("ps", "reduction_server")
"""Task types of Reduction Server replicas: never part of the TensorFlow cluster."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Where this process sits in the training cluster.

    Attributes:
        index: this worker's index among the training workers (chief = 0).
        count: number of training workers (chief + workers).
        is_chief: whether this process writes the model and logs.
        task_type: ``chief``, ``worker``, ``evaluator`` or ``local``.
    """

    index: int = 0
    count: int = 1
    is_chief: bool = True
    task_type: str = "local"


@dataclasses.dataclass(frozen=True)
class DistributionContext:
    """The strategy to build and fit the model under, and this worker's place."""

    strategy: Any
    kind: str
    worker: WorkerInfo

    @property
    def num_replicas(self) -> int:
        """Replicas training in sync (across all workers)."""
        return int(self.strategy.num_replicas_in_sync)


def tf_config_from_cluster_spec(cluster_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Translate Vertex AI's ``CLUSTER_SPEC`` into a ``TF_CONFIG`` dict.

    Args:
        cluster_spec: parsed ``CLUSTER_SPEC``:
            ``{"cluster": {"workerpool0": [...], ...}, "task": {"type": ..., "index": ...}}``.

    Returns:
        ``{"cluster": {"chief": [...], "worker": [...]}, "task": {"type", "index"}}``.
        A Reduction Server task (pool 2) gets task type ``reduction_server``.

    Raises:
        PipelineInputError: the spec lacks ``cluster`` or ``task``.
    """
    try:
        pools = cluster_spec["cluster"]
        task = cluster_spec["task"]
        pool, index = task["type"], int(task["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineInputError(
            f"CLUSTER_SPEC needs 'cluster' and 'task': {{'type', 'index'}}; got {cluster_spec!r}"
        ) from exc
    cluster = {
        _POOL_TO_TASK[name]: list(hosts) for name, hosts in pools.items() if name in _POOL_TO_TASK
    }
    task_type = _POOL_TO_TASK.get(pool, "reduction_server")
    return {"cluster": cluster, "task": {"type": task_type, "index": index}}


def training_cluster(tf_config: Mapping[str, Any]) -> dict[str, Any]:
    """``tf_config`` as TensorFlow must see it: no Reduction Server, ``master`` as ``chief``.

    Args:
        tf_config: a parsed ``TF_CONFIG`` (``cluster``, ``task`` and any other keys).

    Returns:
        A new dict: ``ps`` (Vertex's Reduction Server pool) removed from ``cluster``, the task
        type and cluster key ``master`` renamed ``chief``; other keys unchanged. A reducer's
        own task keeps its type (it does not train).

    Raises:
        PipelineInputError: both ``chief`` and ``master`` are listed.
    """
    cluster = dict(tf_config.get("cluster") or {})
    if "master" in cluster:
        if "chief" in cluster:
            raise PipelineInputError(
                f"TF_CONFIG lists both 'chief' and 'master': {sorted(cluster)}; give one primary"
            )
        cluster["chief"] = cluster.pop("master")
    for reducer in REDUCER_TASK_TYPES:
        cluster.pop(reducer, None)
    task = dict(tf_config.get("task") or {})
    if task.get("type") == "master":
        task["type"] = "chief"
    return {**tf_config, "cluster": cluster, "task": task}


def cluster_config(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The ``TF_CONFIG`` in effect: ``TF_CONFIG`` itself, else one built from ``CLUSTER_SPEC``.

    Either is cleaned by :func:`training_cluster` (no Reduction Server, ``master`` -> ``chief``).

    Raises:
        PipelineInputError: either variable holds invalid JSON.
    """
    environ = os.environ if environ is None else environ
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PipelineInputError(f"{name} is not valid JSON: {exc}: {text[:200]!r}") from exc
        if not parsed.get("cluster"):
            continue
        return training_cluster(
            parsed if name == "TF_CONFIG" else tf_config_from_cluster_spec(parsed)
        )
    return None


def worker_info(tf_config: Mapping[str, Any] | None) -> WorkerInfo:
    """This worker's index / count / chief flag from a ``TF_CONFIG`` dict (None: local).

    Reduction Server tasks are not counted; ``master`` counts as ``chief``.
    """
    if not tf_config:
        return WorkerInfo()
    tf_config = training_cluster(tf_config)
    cluster = tf_config.get("cluster", {})
    task = tf_config.get("task", {})
    chiefs = len(cluster.get("chief", []))
    count = chiefs + len(cluster.get("worker", []))
    if count > 1 and "index" not in task:
        # TensorFlow's resolver treats a missing index as None and the workers then wait for
        # each other forever; fail instead.
        raise PipelineInputError(f"TF_CONFIG task needs an 'index' in a {count}-worker cluster")
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    if task_type == "chief":
        return WorkerInfo(index=index, count=max(count, 1), is_chief=True, task_type=task_type)
    if task_type == "worker":
        # Without a chief task, worker 0 plays the chief (TF's own convention).
        is_chief = chiefs == 0 and index == 0
        return WorkerInfo(
            index=chiefs + index, count=max(count, 1), is_chief=is_chief, task_type=task_type
        )
    return WorkerInfo(index=0, count=max(count, 1), is_chief=False, task_type=task_type)


def collective_implementation(num_gpus: int) -> str:
    """The ``CommunicationImplementation`` name for multi-worker all-reduce.

    Args:
        num_gpus: GPUs visible to this worker.

    Returns:
        ``"NCCL"`` with GPUs (needed by the Reduction Server's NCCL plugin, and the fastest
        GPU all-reduce), ``"AUTO"`` without (TensorFlow uses ring all-reduce on CPUs).
    """
    return "NCCL" if num_gpus > 0 else "AUTO"


def choose_strategy(environ: Mapping[str, str] | None = None) -> DistributionContext:
    """Build the strategy for this process from the environment.

    For several workers the cleaned ``TF_CONFIG`` (:func:`training_cluster`; translated from
    ``CLUSTER_SPEC`` if need be) is exported to ``os.environ`` before the strategy is built:
    ``MultiWorkerMirroredStrategy`` reads it there, and it must not see the Reduction Server.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The strategy, its kind (``multi_worker``, ``mirrored``, ``default``) and worker info.

    Raises:
        PipelineInputError: this task is not a training worker (evaluator, reduction server).
    """
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    tf_config = cluster_config(environ)
    info = worker_info(tf_config)
    if info.task_type not in ("local", "chief", "worker"):
        raise PipelineInputError(
            f"task type {info.task_type!r} does not train; run the trainer on chief/worker tasks"
        )
    if info.count > 1:
        os.environ["TF_CONFIG"] = json.dumps(tf_config)
        # Physical devices only: listing logical ones would start the runtime before the
        # collective ops are configured.
        implementation = collective_implementation(len(tf.config.list_physical_devices("GPU")))
        communication = tf.distribute.experimental.CommunicationOptions(
            implementation=getattr(
                tf.distribute.experimental.CommunicationImplementation, implementation
            )
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)
        return DistributionContext(strategy, "multi_worker", info)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return DistributionContext(tf.distribute.MirroredStrategy(), "mirrored", info)
    return DistributionContext(tf.distribute.get_strategy(), "default", info)


def set_mixed_precision(policy: str | None) -> str:
    """Set Keras' global dtype policy; returns the previous policy's name to restore later.

    Args:
        policy: ``None`` (float32), ``"mixed_float16"`` or ``"mixed_bfloat16"``.

    Raises:
        PipelineInputError: an unknown policy name.
    """
    import keras

    if policy is not None and policy not in MIXED_PRECISION_POLICIES:
        raise PipelineInputError(
            f"mixed_precision must be None or one of {MIXED_PRECISION_POLICIES}, got {policy!r}"
        )
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy or "float32")
    return previous
