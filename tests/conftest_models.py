"""Test helper: write a tiny model directory that follows the train step's artifact contract.

The model is a hand-weighted Keras functional model (no training, so it is instant and
deterministic): raw feature dict in, softmax out. For ``x ~ N(class_id, sigma)`` the logits
``s * (k * x - k**2 / 2)`` make it a Gaussian classifier, so its predictions are informative.
A NaN in ``x`` propagates to NaN probabilities (no imputation), which tests use on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from vertex_imbalanced.artifacts import MODEL_COMPLETE_FILE


def make_table(
    classes: Sequence[str],
    counts: Sequence[int],
    *,
    sigma: float = 0.7,
    seed: int = 0,
    label: str = "label",
) -> pa.Table:
    """Rows with ``x ~ N(class_id, sigma)``, a categorical ``color``, a key and the label name."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    rng.shuffle(ids)
    n = ids.size
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "x": pa.array(rng.normal(ids, sigma), pa.float64()),
            "color": pa.array(rng.choice(["red", "blue", "green"], n)),
            label: pa.array([classes[k] for k in ids], pa.string()),
        }
    )


def build_tiny_model(
    model_dir: str | Path,
    classes: Sequence[str],
    *,
    scale: float = 3.0,
    numeric: Sequence[str] = ("x",),
    categorical: Sequence[str] = ("color",),
) -> Path:
    """Write ``saved_model/``, ``model.keras`` and ``model_metadata.json`` into ``model_dir``."""
    import keras
    import tensorflow as tf

    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.training.export import export_model

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    c = len(classes)
    inputs = {n: keras.Input(shape=(), dtype="float32", name=n) for n in numeric}
    inputs |= {n: keras.Input(shape=(), dtype="string", name=n) for n in categorical}
    parts = [keras.layers.Reshape((1,))(inputs[n]) for n in numeric]
    for n in categorical:
        lookup = keras.layers.StringLookup(
            vocabulary=["red", "blue", "green"], output_mode="one_hot"
        )
        parts.append(lookup(inputs[n]))
    dense = keras.layers.Dense(c, activation="softmax", name="head")
    outputs = dense(keras.layers.Concatenate()(parts) if len(parts) > 1 else parts[0])
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((dense.kernel.shape[0], c), np.float32)
    k = np.arange(c, dtype=np.float32)
    kernel[0] = scale * k  # first numeric feature drives the class
    dense.set_weights([kernel, -scale * k**2 / 2])
    metadata = {
        "framework": "tensorflow",
        "tf_version": tf.__version__,
        "classes": list(classes),
        "feature_spec": {
            "label": "label",
            "numeric": list(numeric),
            "categorical": list(categorical),
        },
        "hyperparameters": {},
        "imbalance": {},
        "training_metrics": {},
    }
    spec = FeatureSpec(label="label", numeric=tuple(numeric), categorical=tuple(categorical))
    export_model(model, spec, metadata, model_dir)  # the train step's writer of the layout
    (model_dir / MODEL_COMPLETE_FILE).write_text("{}")  # as the train step marks it, last
    return model_dir
