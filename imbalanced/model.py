"""The Keras 3 classifier: raw feature dict in, class probabilities out.

Preprocessing lives inside the model (fit from :class:`imbalanced.feature_stats.FeatureStats`),
so the exported model takes exactly the feature dict :func:`imbalanced.tfdata.make_dataset`
yields and serving cannot drift from training:

* numeric column ``x`` (float32, NaN = NULL): a missing indicator ``isnan(x)``, the value with
  NaN replaced by the training mean, then ``Normalization`` with the training mean/variance;
* categorical column (string, ``""`` = NULL): ``StringLookup`` one-hot over the training
  vocabulary plus ``""`` as its own token and one out-of-vocabulary bucket for unseen values;
* hidden ``Dense`` + ReLU layers with L1/L2 kernel regularisers and dropout;
* a ``Dense`` softmax head in float32 (also under a mixed-precision policy), one unit per class.

The model is built with Keras ops only (no custom layers), so ``model.keras`` loads without
importing this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from imbalanced.config import FeatureSpec, Hyperparameters
from imbalanced.feature_stats import MISSING_CATEGORY, FeatureStats

PROBABILITIES = "probabilities"
CLASS_ID = "class_id"


def feature_inputs(spec: FeatureSpec) -> dict[str, keras.KerasTensor]:
    """One rank-1 ``keras.Input`` per feature column (float32 numeric, string categorical)."""
    inputs = {n: keras.Input(shape=(), dtype="float32", name=n) for n in spec.numeric}
    inputs |= {n: keras.Input(shape=(), dtype="string", name=n) for n in spec.categorical}
    return inputs


def _numeric_block(
    inputs: dict[str, keras.KerasTensor], spec: FeatureSpec, stats: FeatureStats
) -> list[keras.KerasTensor]:
    """Normalised imputed values ``[n, k]`` and missing indicators ``[n, k]``."""
    if not spec.numeric:
        return []
    imputed, missing = [], []
    for name in spec.numeric:
        x = keras.ops.expand_dims(inputs[name], -1)
        is_nan = keras.ops.isnan(x)
        imputed.append(keras.ops.where(is_nan, float(stats.numeric[name].mean), x))
        missing.append(keras.ops.cast(is_nan, "float32"))
    values = imputed[0] if len(imputed) == 1 else keras.ops.concatenate(imputed, axis=-1)
    normalize = keras.layers.Normalization(
        mean=np.array([stats.numeric[n].mean for n in spec.numeric], np.float32),
        variance=np.array([stats.numeric[n].variance for n in spec.numeric], np.float32),
        dtype="float32",
        name="normalize_numeric",
    )
    indicators = missing[0] if len(missing) == 1 else keras.ops.concatenate(missing, axis=-1)
    return [normalize(values), indicators]


def _categorical_block(
    inputs: dict[str, keras.KerasTensor], spec: FeatureSpec, stats: FeatureStats
) -> list[keras.KerasTensor]:
    """One-hot ``[n, vocabulary + 1]`` per categorical column (index 0 = out of vocabulary)."""
    parts = []
    for name in spec.categorical:
        vocabulary = list(stats.vocabularies[name])
        if MISSING_CATEGORY not in vocabulary:
            vocabulary.append(MISSING_CATEGORY)
        lookup = keras.layers.StringLookup(
            vocabulary=vocabulary,
            num_oov_indices=1,
            output_mode="one_hot",
            name=f"lookup_{name}",
        )
        one_hot = lookup(keras.ops.expand_dims(inputs[name], -1))
        parts.append(keras.ops.cast(one_hot, "float32"))
    return parts


def build_model(
    spec: FeatureSpec,
    stats: FeatureStats,
    classes: Sequence[str],
    hp: Hyperparameters,
) -> keras.Model:
    """Build the (uncompiled) classifier.

    Call it inside ``strategy.scope()`` and after setting the dtype policy.

    Args:
        spec: feature roles (input names and order).
        stats: training statistics for imputation, normalisation and vocabularies.
        classes: class names in id order (output width).
        hp: hidden units, dropout, L1/L2 strengths, seed.

    Returns:
        A functional model mapping the raw feature dict to float32 probabilities ``[n, C]``.
    """
    inputs = feature_inputs(spec)
    parts = _numeric_block(inputs, spec, stats) + _categorical_block(inputs, spec, stats)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    regularizer = keras.regularizers.L1L2(l1=hp.l1, l2=hp.l2) if hp.l1 or hp.l2 else None
    for i, units in enumerate(hp.hidden_units):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_regularizer=regularizer,
            kernel_initializer=keras.initializers.GlorotUniform(seed=hp.seed + i),
            name=f"hidden_{i}",
        )(x)
        if hp.dropout:
            x = keras.layers.Dropout(hp.dropout, seed=hp.seed + 100 + i, name=f"dropout_{i}")(x)
    # Logits and softmax stay float32 under mixed precision (numerically stable loss).
    logits = keras.layers.Dense(
        len(classes),
        kernel_regularizer=regularizer,
        kernel_initializer=keras.initializers.GlorotUniform(seed=hp.seed + 99),
        dtype="float32",
        name="logits",
    )(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(logits)
    return keras.Model(inputs, outputs, name="imbalanced_classifier")


def export_saved_model(model: keras.Model, spec: FeatureSpec, path: str) -> None:
    """Write a SavedModel whose ``serving_default`` takes the raw feature dict.

    Outputs: ``probabilities`` (float32 ``[n, C]``) and ``class_id`` (int64 ``[n]``).

    Args:
        model: the trained classifier from :func:`build_model`.
        spec: feature roles; one rank-1 input per feature (float32 numeric, string categorical).
        path: directory to write (must not exist yet).
    """
    import tensorflow as tf

    from imbalanced.tfdata import feature_signature

    def serve(features):
        probabilities = tf.cast(model(features, training=False), tf.float32)
        return {PROBABILITIES: probabilities, CLASS_ID: tf.argmax(probabilities, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default", fn=serve, input_signature=[feature_signature(spec)]
    )
    archive.write_out(path, verbose=False)
