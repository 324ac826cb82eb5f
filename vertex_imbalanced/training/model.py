"""The Keras 3 classifier: raw feature dict in, class probabilities out.

Preprocessing lives inside the model (fit from :class:`vertex_imbalanced.training.statistics.FeatureStats`),
so the exported model takes exactly the feature dict :func:`vertex_imbalanced.reading.datasets.make_dataset`
yields and serving cannot drift from training. The model has two levels:

* the outer (exported) model takes the raw dict: it stacks the numeric columns into one
  ``[n, k]`` float32 matrix and maps each categorical column (string, ``""`` = NULL) through a
  ``StringLookup`` over the training vocabulary plus ``""`` as its own token (index 0 = out of
  vocabulary), giving an ``[n, m]`` int32 id matrix;
* the inner model (:func:`encoded_model`, the layer named ``encoded_classifier``) takes
  ``{"numeric": [n, k], "categorical": [n, m]}``: missing indicators ``isnan(x)``, NaN replaced
  by the training mean, the numeric encoding (below), one-hot ids, all concatenated into the
  tensor named :data:`PREPROCESSED_FEATURES` (fixed, nothing learned), then hidden ``Dense`` +
  ReLU layers with L1/L2 kernel regularisers and dropout, and a ``Dense`` softmax head in
  float32 (also under a mixed-precision policy), one unit per class.

**Numeric encoding, per column by its training shape** (:data:`NUMERIC_ENCODING` =
``"by_shape"``). A column far from normal (:func:`far_from_normal`: ``|skewness| > 2`` or
excess kurtosis ``> 7``, the rule of thumb of West, Finch and Curran 1995, from the weighted
moments of the statistics pass) is encoded piecewise-linearly over quantile bins (Gorishniy et
al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning"); a column near normal
is clipped to its training ``[min, max]`` and standardised (one input). Bin edges are the
column's training quantiles (:func:`bin_edges`: up to :data:`MAX_BINS` bins, fewer for few rows,
equal quantiles merged, so a 0/1 column has one bin), from the weighted quantile sketch; a
value ``x`` becomes, per bin ``[left, right]``, ``clip((x - left) / (right - left), 0, 1)``: 1
for bins wholly below ``x``, 0 above, the fraction inside. That encoding does not care about a
column's scale or tail (a heavy-tailed count spreads over its bins as evenly as a Gaussian
one) and lets the first layer bend the feature's effect at the quantiles; on near-normal
columns it only adds inputs (and costs: a training step about 2.5x the standardised one) and
lost accuracy where a linear effect suffices. Both encodings are bounded by the training range:
a serving value far outside it encodes as the training minimum or maximum, never as a huge
input. Chosen by measurement on ``bench/real_data.py`` and the demo (README, "Numeric
features"): piecewise-linear everywhere lifted hpc_data (heavy-tailed counts) from 0.71 to 0.79
macro F1 but cost the demo's Gaussian features (0.948 -> 0.932) and breast_cancer (0.978 ->
0.961); by shape keeps both gains. Statistics without quantiles (built by hand) standardise
every column without clipping (``"standardize"`` does so always, ``"piecewise_linear"``
bins every column).

**Only what training saw reaches the network.** An input that is constant over the training
rows gets no gradient, so its first-layer weights stay at their random initial values and a
different value at serving would move the output by an amount training never checked (or, for
a zero-variance column scaled by ``1 / sqrt(1e-7)``, explode it). So: a numeric column constant
in training (:func:`constant_columns`) is left out of the network (the trainer warns, naming
it); a missing indicator exists only for columns with NULLs in training; a one-hot position that
no training row took (out-of-vocabulary when the vocabulary was not truncated, ``""`` when no
training row was NULL) is left out, so such values at serving weigh exactly zero.

**Lookups map every string as the training feed does.** ``StringLookup``'s own OOV token
(``[UNK]`` by default) is dropped from a vocabulary that starts with it, shifting every id; the
model's lookups use an OOV token that is not in the vocabulary (:func:`oov_token`), so each
string -- ``[UNK]``, ``""``, whitespace, any unicode -- maps to the id
:class:`vertex_imbalanced.reading.training_encoding.CategoryLookup` gives it.

The trainer fits the inner model on :func:`vertex_imbalanced.reading.datasets.make_encoded_dataset`, which applies
the same vocabularies (:func:`model_vocabularies`) while reading Arrow, so training skips per-row
string tensors; the weights are shared, and the outer model is what is saved and served.
The model is built with Keras ops and layers only (no custom layers), so ``model.keras`` loads
without importing this package; :mod:`vertex_imbalanced.training.export` writes it out.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.record_packing import MISSING_CATEGORY
from vertex_imbalanced.reading.training_encoding import ENCODED_CATEGORICAL, ENCODED_NUMERIC
from vertex_imbalanced.training.serving_names import serving_name
from vertex_imbalanced.training.statistics import FeatureStats, NumericStats

PROBABILITIES = "probabilities"
CLASS_ID = "class_id"
CLASS_NAME = "class_name"
ENCODED_MODEL = "encoded_classifier"
PREPROCESSED_FEATURES = "preprocessed_features"
"""Name of the fixed (not learned) preprocessed-features tensor of the inner model."""
CONSTANT_RELATIVE_VARIANCE = 1e-12
"""A numeric column whose training variance is at most this times ``max(1, mean**2)`` is
constant in training (float rounding of a constant column leaves a variance near 0)."""


def model_vocabularies(spec: FeatureSpec, stats: FeatureStats) -> dict[str, list[str]]:
    """Per categorical column, its tokens in lookup order (id ``i + 1``; 0 = out of vocabulary).

    The training vocabulary plus ``""`` (NULL) as its own token; the model's ``StringLookup``
    layers and the training feed (``make_encoded_dataset``) both use exactly these lists.
    """
    vocabularies = {}
    for column in spec.categorical:
        tokens = list(stats.vocabularies[column])
        if MISSING_CATEGORY not in tokens:
            tokens.append(MISSING_CATEGORY)
        vocabularies[column] = tokens
    return vocabularies


def oov_token(tokens: Sequence[str]) -> str:
    """``[UNK]``, or the first of ``[UNK]#1``, ``[UNK]#2``, ... that is not in ``tokens``."""
    taken = set(tokens)
    token, i = "[UNK]", 0
    while token in taken:
        i += 1
        token = f"[UNK]#{i}"
    return token


def constant_columns(spec: FeatureSpec, stats: FeatureStats) -> list[str]:
    """Numeric columns constant over the (non-NULL) training rows: left out of the network."""
    out = []
    for name in spec.numeric:
        s = stats.numeric[name]
        if s.variance <= CONSTANT_RELATIVE_VARIANCE * max(1.0, s.mean * s.mean):
            out.append(name)
    return out


def feature_inputs(spec: FeatureSpec) -> dict[str, keras.KerasTensor]:
    """One rank-1 ``keras.Input`` per feature column (float32 numeric, string categorical)."""
    inputs = {n: keras.Input(shape=(), dtype="float32", name=n) for n in spec.numeric}
    inputs |= {n: keras.Input(shape=(), dtype="string", name=n) for n in spec.categorical}
    return inputs


def encoded_inputs(spec: FeatureSpec) -> dict[str, keras.KerasTensor]:
    """Inputs of the inner model: ``numeric`` ``[n, k]`` float32, ``categorical`` ``[n, m]`` int32."""
    inputs = {}
    if spec.numeric:
        inputs[ENCODED_NUMERIC] = keras.Input(
            shape=(len(spec.numeric),), dtype="float32", name=ENCODED_NUMERIC
        )
    if spec.categorical:
        inputs[ENCODED_CATEGORICAL] = keras.Input(
            shape=(len(spec.categorical),), dtype="int32", name=ENCODED_CATEGORICAL
        )
    return inputs


NUMERIC_ENCODINGS = ("standardize", "piecewise_linear", "by_shape")
NUMERIC_ENCODING = "by_shape"
"""How numeric columns enter the network (one of :data:`NUMERIC_ENCODINGS`; module docstring)."""
MAX_BINS = 32
"""Most piecewise-linear bins per numeric column."""
ROWS_PER_BIN = 32
"""A column gets at most ``present rows // ROWS_PER_BIN`` bins (at least one). Measured
(bench/real_data.py, 5 split seeds, one run each): 32 rather than 8 lifts iris (about 105 train
rows: 3 bins instead of 13) from 0.919 to 0.958, leaves wine at 0.972, moves breast_cancer from
0.965 to 0.961 (within its spread) and changes nothing from about 1,000 train rows up, where
:data:`MAX_BINS` binds."""


def bin_edges(stats: NumericStats, max_bins: int | None = None) -> np.ndarray:
    """Piecewise-linear bin edges of one column: distinct training quantiles, ascending.

    ``b = clip(present // ROWS_PER_BIN, 1, max_bins)`` bins at the quantiles ``i / b`` of the
    statistics' quantile grid; equal quantiles (discrete columns, a mass at one value) merge,
    so a 0/1 column gets the one bin ``[0, 1]``. Empty for statistics without quantiles.
    """
    q = np.asarray(stats.quantiles, np.float64)
    if q.size < 2:
        return np.zeros(0, np.float64)
    bins = int(min(max(stats.present // ROWS_PER_BIN, 1), max_bins or MAX_BINS, q.size - 1))
    picks = np.round(np.linspace(0, q.size - 1, bins + 1)).astype(int)
    return np.unique(q[picks])


SKEW_LIMIT = 2.0
"""A column with ``|skewness|`` above this is far from normal (West, Finch and Curran 1995)."""
KURTOSIS_LIMIT = 7.0
"""A column with excess kurtosis above this is far from normal (West, Finch and Curran 1995)."""


def far_from_normal(stats: NumericStats) -> bool:
    """Whether a column's training distribution is far from normal (piecewise-linear it).

    ``|skewness| > SKEW_LIMIT`` or ``excess kurtosis > KURTOSIS_LIMIT``, from the weighted
    training moments; statistics without moments (older ones) count as far.
    """
    if stats.skewness is None or stats.excess_kurtosis is None:
        return True
    return abs(stats.skewness) > SKEW_LIMIT or stats.excess_kurtosis > KURTOSIS_LIMIT


def _piecewise_linear(columns, edges: Sequence[np.ndarray]):
    """``[n, k]`` -> ``[n, k * T]``: per bin ``clip((x - left) / width, 0, 1)``.

    ``T`` is the most bins of any column; a column with fewer bins is padded with bins whose
    left edge is the float32 maximum, which encode every finite value as exactly 0 (training
    and serving alike), so their weights never matter. Broadcasting (elementwise, exact) is
    used instead of a gather along axis 1, which is several times slower on CPU.
    """
    width_t = max(len(e) - 1 for e in edges)
    left = np.full((len(edges), width_t), np.finfo(np.float32).max, np.float32)
    width = np.ones((len(edges), width_t), np.float32)
    for j, e in enumerate(edges):
        left[j, : len(e) - 1] = e[:-1]
        width[j, : len(e) - 1] = np.diff(e)
    bins = keras.ops.clip((keras.ops.expand_dims(columns, -1) - left) / width, 0.0, 1.0)
    return keras.ops.reshape(bins, (-1, len(edges) * width_t)), width_t


def _numeric_block(values: keras.KerasTensor, spec: FeatureSpec, stats: FeatureStats) -> list:
    """Imputed encoded values and missing indicators (see the module docstring)."""
    parts = []
    constant = set(constant_columns(spec, stats))
    kept = [j for j, n in enumerate(spec.numeric) if n not in constant]
    if kept:
        names = [spec.numeric[j] for j in kept]
        columns = values if len(kept) == len(spec.numeric) else keras.ops.take(values, kept, 1)
        means = np.array([stats.numeric[n].mean for n in names], np.float32)
        imputed = keras.ops.where(keras.ops.isnan(columns), means, columns)
        parts += _encode_numeric(imputed, [stats.numeric[n] for n in names])
    missing = [j for j, n in enumerate(spec.numeric) if stats.numeric[n].missing > 0]
    if missing:
        is_nan = keras.ops.isnan(keras.ops.take(values, missing, 1))
        parts.append(keras.ops.cast(is_nan, "float32"))
    return parts


def _standardize(columns, numeric: Sequence[NumericStats]) -> list:
    normalize = keras.layers.Normalization(
        mean=np.array([s.mean for s in numeric], np.float32),
        variance=np.array([s.variance for s in numeric], np.float32),
        dtype="float32",
        name="normalize_numeric",
    )
    return [normalize(columns)]


def _encode_numeric(columns, numeric: Sequence[NumericStats]) -> list:
    """Encode the imputed non-constant columns ``[n, k]`` as :data:`NUMERIC_ENCODING` says.

    ``by_shape``: the columns near normal (:func:`far_from_normal` false) clipped to their
    training ``[min, max]`` and standardised, ``[n, near]``, then the others piecewise-linear,
    ``[n, far * T]``. Statistics without quantiles (made by hand or before the sketch existed)
    standardise every column.
    """
    if NUMERIC_ENCODING not in NUMERIC_ENCODINGS:
        raise ValueError(f"NUMERIC_ENCODING {NUMERIC_ENCODING!r} not in {NUMERIC_ENCODINGS}")
    if NUMERIC_ENCODING == "standardize" or any(len(s.quantiles) < 2 for s in numeric):
        return _standardize(columns, numeric)
    if NUMERIC_ENCODING == "piecewise_linear":
        encoded, _ = _piecewise_linear(columns, [bin_edges(s) for s in numeric])
        return [encoded]
    far = [j for j, s in enumerate(numeric) if far_from_normal(s)]
    near = [j for j, s in enumerate(numeric) if not far_from_normal(s)]
    parts = []
    if near:
        sub = columns if len(near) == len(numeric) else keras.ops.take(columns, near, 1)
        low = np.array([numeric[j].quantiles[0] for j in near], np.float32)
        high = np.array([numeric[j].quantiles[-1] for j in near], np.float32)
        # maximum/minimum, not clip: Clip with array bounds cannot be saved in model.keras
        bounded = keras.ops.minimum(keras.ops.maximum(sub, low), high)
        parts += _standardize(bounded, [numeric[j] for j in near])
    if far:
        sub = columns if len(far) == len(numeric) else keras.ops.take(columns, far, 1)
        encoded, _ = _piecewise_linear(sub, [bin_edges(numeric[j]) for j in far])
        parts.append(encoded)
    return parts


def _seen_positions(column: str, tokens: Sequence[str], stats: FeatureStats) -> list[int]:
    """One-hot positions some training row took: 0 (OOV) only when tokens were cut."""
    seen = set(stats.vocabularies[column])
    positions = [0] if stats.truncated.get(column, 0) > 0 else []
    return positions + [i + 1 for i, token in enumerate(tokens) if token in seen]


def _categorical_block(
    ids: keras.KerasTensor, vocabularies: dict[str, list[str]], stats: FeatureStats
) -> list:
    """One-hot per categorical column over the positions training saw (index 0 = OOV)."""
    parts = []
    for j, (column, tokens) in enumerate(vocabularies.items()):
        one_hot = keras.ops.one_hot(ids[:, j], len(tokens) + 1, dtype="float32")
        seen = _seen_positions(column, tokens, stats)
        parts.append(one_hot if len(seen) == len(tokens) + 1 else keras.ops.take(one_hot, seen, 1))
    return parts


def _encoded_classifier(
    spec: FeatureSpec,
    stats: FeatureStats,
    vocabularies: dict[str, list[str]],
    classes: Sequence[str],
    hp: Hyperparameters,
) -> keras.Model:
    """The inner model: encoded matrices in, float32 probabilities ``[n, C]`` out."""
    inputs = encoded_inputs(spec)
    parts = []
    if spec.numeric:
        parts += _numeric_block(inputs[ENCODED_NUMERIC], spec, stats)
    if spec.categorical:
        parts += _categorical_block(inputs[ENCODED_CATEGORICAL], vocabularies, stats)
    if not parts:
        raise PipelineInputError(
            f"no feature varies over the training rows (constant: {list(spec.numeric)}); "
            "nothing to learn from"
        )
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    x = keras.layers.Identity(name=PREPROCESSED_FEATURES)(x)
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
    return keras.Model(inputs, outputs, name=ENCODED_MODEL)


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
        A functional model mapping the raw feature dict to float32 probabilities ``[n, C]``;
        its inner model (:func:`encoded_model`) shares all trainable weights.
    """
    inputs = feature_inputs(spec)
    vocabularies = model_vocabularies(spec, stats)
    encoded = {}
    if spec.numeric:
        columns = [inputs[n] for n in spec.numeric]
        encoded[ENCODED_NUMERIC] = keras.ops.stack(columns, axis=-1)
    if spec.categorical:
        ids = []
        for name, tokens in vocabularies.items():
            lookup = keras.layers.StringLookup(
                vocabulary=tokens,
                num_oov_indices=1,
                oov_token=oov_token(tokens),
                output_mode="int",
                name=f"lookup_{serving_name(name)}",
            )
            ids.append(keras.ops.cast(lookup(inputs[name]), "int32"))
        encoded[ENCODED_CATEGORICAL] = keras.ops.stack(ids, axis=-1)
    outputs = _encoded_classifier(spec, stats, vocabularies, classes, hp)(encoded)
    return keras.Model(inputs, outputs, name="imbalanced_classifier")


def encoded_model(model: keras.Model) -> keras.Model:
    """The inner model of :func:`build_model` (fit it on ``make_encoded_dataset`` batches)."""
    return model.get_layer(ENCODED_MODEL)
