"""Work around Keras 3's broken ``fit`` under ``MultiWorkerMirroredStrategy`` (TF backend).

Keras 3 (checked with 3.15.1) cannot train with more than one worker:

* ``fit`` / ``evaluate`` first build the model from one batch that they combine across
  replicas with ``strategy.reduce`` on the whole nested batch, which the multi-worker strategy
  rejects ("Attempt to convert a value ({'x1': PerReplica ...}) ... to a Tensor";
  keras-team/keras#20329);
* every step reduces the scalar loss / metric logs with ``strategy.reduce("MEAN", v, axis=0)``
  ("Invalid reduction dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388).

:func:`patch_multi_worker_fit` replaces both, for ``MultiWorkerMirroredStrategy`` only: the build
uses this worker's first local batch (only shapes and dtypes matter) and the logs are averaged
over all replicas, as Keras does for the single-machine ``MirroredStrategy``. Other strategies
go to the original Keras code. Remove this module once Keras fixes both.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as _tf_trainer

_PATCHED = False


def _is_multi_worker(strategy: Any) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _first_local(strategy: Any, values: Any) -> Any:
    def first(v: Any) -> Any:
        if isinstance(v, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(v)[0]
        return v

    return tf.nest.map_structure(first, values)


def patch_multi_worker_fit() -> None:
    """Make Keras ``fit`` / ``evaluate`` work under ``MultiWorkerMirroredStrategy`` (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    original_reduce = _tf_trainer.reduce_per_replica
    original_build = _tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if not (_is_multi_worker(strategy) and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)

        def mean(v: Any) -> Any:
            if isinstance(v, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", v, axis=None)
            return v

        return tf.nest.map_structure(mean, values)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        strategy = self._distribute_strategy
        if not _is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = _first_local(strategy, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)
        return None

    _tf_trainer.reduce_per_replica = reduce_per_replica
    _tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED = True
