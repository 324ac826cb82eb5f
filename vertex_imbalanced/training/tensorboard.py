"""Per-epoch TensorBoard scalars written with TensorFlow alone (no ``tensorboard`` package).

``keras.callbacks.TensorBoard`` needs the ``tensorboard`` package (``tf.summary.scalar`` is
implemented there), which the product image does not ship. The event files written here hold
the same records ``tf.summary.scalar`` writes (a tensor summary tagged for the ``scalars``
plugin), so TensorBoard and the Vertex AI TensorBoard uploader read them as usual.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALARS = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


class EpochScalars(keras.callbacks.Callback):
    """Write every epoch's logs to ``<log_dir>/train`` and ``<log_dir>/validation``."""

    def __init__(self, log_dir: str):
        """Create the callback.

        Args:
            log_dir: TensorBoard log directory (local or ``gs://``).
        """
        super().__init__()
        self.log_dir = log_dir.rstrip("/")
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, name: str) -> tf.summary.SummaryWriter:
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(f"{self.log_dir}/{name}")
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        """Write ``loss``, ``accuracy``, ... as ``epoch_<name>`` scalars at step ``epoch``."""
        for key, value in (logs or {}).items():
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(run).as_default():
                tf.summary.write(
                    f"epoch_{name}",
                    tf.constant(float(value), tf.float32),
                    step=epoch,
                    metadata=_SCALARS,
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        """Close the event files."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
