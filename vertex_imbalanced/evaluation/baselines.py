"""Baselines scored beside the model on the same test split: the class prior and a logistic regression.

* **prior**: the training class prior (weighted, so it is the original prior even after
  downsampling) as the probabilities of every row, and the majority class as the decision.
  Its macro F1 is the floor any classifier must clear (F1 of the majority class / C).
* **logistic_regression**: scikit-learn's ``LogisticRegression`` (lbfgs, multinomial, L2 with
  ``C=1``) on **the model's own preprocessed features**: a sub-model of the trained Keras model up
  to its preprocessed-features tensor (missing indicators, imputation, standardisation of
  near-normal numeric columns and piecewise-linear quantile encoding of the others, one-hot;
  nothing learned), so the comparison isolates what the network adds. It is fitted on a
  uniform sample of at most :data:`MAX_TRAIN_ROWS` rows of the training split (a seeded
  Bernoulli sample at rate ``max_rows / train rows``), with the training weights (rescaled to
  mean 1) like the model, and decides with the same kind of rule as the model, chosen on the
  validation split by
  :func:`~vertex_imbalanced.evaluation.decision_rule.choose_decision_rule` (on a uniform sample of
  at most the same number of validation rows, :class:`BoundedSample`, so the evaluate step's memory
  does not grow with the table).

The preprocessed-features tensor is found in the model loaded from ``model.keras``, in this
order: a layer named :data:`FEATURE_LAYERS` (``preprocessed_features``, then today's
``features`` concatenation), else the input of the first ``Dense`` layer; nested models (the
trainer's ``encoded_classifier``) are searched too.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vertex_imbalanced.evaluation.decision_rule import DecisionRule, choose_decision_rule

MAX_TRAIN_ROWS = 50_000
"""Most training rows the logistic regression is fitted on (a uniform sample above it).

Measured on the 1M-row demo (158,753 downsampled train rows, 171 preprocessed features, test
macro F1 at argmax, one BLAS thread, loaded 2-core machine): 50k rows fit in 7.5 s and score
0.9332, 100k rows in 19 s and score 0.9346 or 0.9333 -- at 100k the lbfgs stop (tol 1e-4) moves
with a +-2e-7 perturbation of the features (102 vs 84 iterations), at 50k it does not (88 and
88). Fitted to convergence (tol 1e-6, 10-30x the time) 50k gives 0.9344-0.9346 and 100k
0.9341-0.9343: the sample's size above 50k does not change the baseline's F1; 25k gives 0.9314.
"""
FEATURE_LAYERS = ("preprocessed_features", "features")
"""Layer names holding the model's preprocessed features, in the order they are looked for."""
SAMPLE_SEED = 20260101
"""Seed of the training-row sample (the sample is the same on every run of the same data)."""
LOGISTIC_C = 1.0
"""Inverse L2 strength of the logistic regression (features are already standardised)."""
LOGISTIC_MAX_ITER = 300

PRIOR = "prior"
LOGISTIC = "logistic_regression"


def features_model(model: Any) -> Any | None:
    """A Keras model from the raw inputs of ``model`` to its preprocessed-features tensor.

    Args:
        model: the trained Keras classifier (raw feature dict in).

    Returns:
        The sub-model (sharing the trained layers), or None when no such tensor is found.
    """
    import keras

    for find in (_named_tensor, _first_dense_input):
        sub = _sub_model(model, find, keras)
        if sub is not None:
            return sub
    return None


def _named_tensor(model: Any) -> Any | None:
    names = {layer.name: layer for layer in model.layers}
    for name in FEATURE_LAYERS:
        if name in names:
            return names[name].output
    return None


def _first_dense_input(model: Any) -> Any | None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            return layer.input
    return None


def _sub_model(model: Any, find: Any, keras: Any) -> Any | None:
    """``model.input -> find(model)``; else the same through a nested model (its call node)."""
    target = find(model)
    if target is not None:
        return keras.Model(model.input, target)
    for layer in model.layers:
        if not isinstance(layer, keras.Model):
            continue
        inner = _sub_model(layer, find, keras)
        if inner is None:
            continue
        for node in reversed(getattr(layer, "_inbound_nodes", [])):
            try:  # Keras has no public handle on the tensors a nested model was called with
                return keras.Model(model.input, inner(*node.arguments.args))
            except (ValueError, TypeError, AttributeError):
                continue
    return None


@dataclasses.dataclass
class TrainSample:
    """A bounded, uniform sample of the training split's features, labels and weights.

    Attributes:
        features: ``[m, d]`` float32 preprocessed features.
        labels: ``[m]`` int64 class ids.
        weights: ``[m]`` float64 training weights.
        class_weight_sums: ``[C]`` sum of weights per class over the **whole** split.
        rows: rows read from the split.
        rate: sampling rate used.
    """

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    class_weight_sums: np.ndarray
    rows: int
    rate: float


def sample_training_rows(
    batches: Iterator[tuple[Any, np.ndarray, np.ndarray]],
    featurize: Any,
    num_classes: int,
    expected_rows: int | None,
    max_rows: int = MAX_TRAIN_ROWS,
    seed: int = SAMPLE_SEED,
) -> TrainSample:
    """Read the training split once: weighted class counts of all rows, features of a sample.

    Args:
        batches: ``(raw features, labels [n], weights [n])`` per batch, in a deterministic order.
        featurize: ``raw features, row indices -> [k, d]`` preprocessed features of those rows.
        num_classes: C.
        expected_rows: rows in the split (the model metadata's ``training_data.rows``); the
            sampling rate is ``max_rows / expected_rows``. None: keep the first ``max_rows``.
        max_rows: most rows kept.
        seed: sample seed.

    Returns:
        The sample (at most ``max_rows`` rows).
    """
    rate = 1.0 if not expected_rows else min(1.0, max_rows / expected_rows)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    sums = np.zeros(num_classes)
    kept = rows = 0
    for raw, y, w in batches:
        n = len(y)
        sums += np.bincount(y, weights=w, minlength=num_classes)
        keep = np.flatnonzero(rng.random(n) < rate)[: max(max_rows - kept, 0)]
        rows += n
        if keep.size:
            parts.append(np.asarray(featurize(raw, keep), dtype=np.float32))
            labels.append(y[keep])
            weights.append(w[keep])
            kept += keep.size
    if not parts:
        return TrainSample(
            np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0), sums, rows, rate
        )
    return TrainSample(
        np.concatenate(parts), np.concatenate(labels), np.concatenate(weights), sums, rows, rate
    )


class BoundedSample:
    """A uniform sample of at most ``max_rows`` rows of a stream of batches, in bounded memory.

    Priority sampling: each row gets a seeded uniform random priority and the ``max_rows``
    rows with the smallest priorities are kept, so the sample is uniform without knowing the
    stream's length; at most ``2 * max_rows`` rows are held at any time. The kept rows come
    back in stream order, so a stream of at most ``max_rows`` rows comes back whole and
    unchanged. Same batches in the same order and the same seed give the same sample.

    Args:
        max_rows: most rows kept (>= 1).
        seed: priority seed.

    Raises:
        ValueError: ``max_rows`` < 1.
    """

    def __init__(self, max_rows: int, seed: int = SAMPLE_SEED) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self.rows = 0
        """Rows added so far (the whole stream, kept or not)."""
        self.held_max = 0
        """Most rows held at once (at most ``2 * max_rows``)."""
        self._rng = np.random.default_rng(seed)
        self._parts: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]] = []
        self._held = 0

    def add(self, *columns: np.ndarray) -> None:
        """Add one batch: arrays with the same first dimension (e.g. probabilities, labels).

        Raises:
            ValueError: the columns' first dimensions differ.
        """
        n = len(columns[0]) if columns else 0
        if any(len(c) != n for c in columns):
            raise ValueError(f"columns of lengths {[len(c) for c in columns]} in one batch")
        if n == 0:
            return
        order = np.arange(self.rows, self.rows + n, dtype=np.int64)
        self._parts.append((self._rng.random(n), order, tuple(np.asarray(c) for c in columns)))
        self.rows += n
        self._held += n
        self.held_max = max(self.held_max, self._held)
        if self._held >= 2 * self.max_rows:
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) <= 1 and self._held <= self.max_rows:
            return
        priority = np.concatenate([p for p, _, _ in self._parts])
        order = np.concatenate([o for _, o, _ in self._parts])
        width = len(self._parts[0][2])
        columns = tuple(
            np.concatenate([cols[i] for _, _, cols in self._parts]) for i in range(width)
        )
        if priority.size > self.max_rows:
            keep = np.argpartition(priority, self.max_rows - 1)[: self.max_rows]
        else:
            keep = np.arange(priority.size)
        keep = keep[np.argsort(order[keep], kind="stable")]  # back in stream order
        self._parts = [(priority[keep], order[keep], tuple(c[keep] for c in columns))]
        self._held = keep.size

    def arrays(self) -> tuple[np.ndarray, ...] | None:
        """The kept rows' columns, in stream order; None when nothing was added."""
        if not self._parts:
            return None
        self._compact()
        return self._parts[0][2]


@dataclasses.dataclass
class LogisticBaseline:
    """A fitted logistic regression over the preprocessed features, with its decision rule."""

    estimator: Any
    classes_present: np.ndarray
    num_classes: int
    rule: DecisionRule | None = None

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``[n, C]`` probabilities (0 for a class absent from the training sample)."""
        out = np.zeros((len(features), self.num_classes))
        if len(features):
            out[:, self.classes_present] = self.estimator.predict_proba(features)
        return out


def fit_logistic(sample: TrainSample, num_classes: int) -> LogisticBaseline:
    """Fit the logistic regression on the sample, weights rescaled to mean 1.

    Raises:
        ValueError: the sample holds fewer than two classes.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    present = np.unique(sample.labels)
    if present.size < 2:
        raise ValueError(f"the training sample holds {present.size} class(es); need 2")
    weights = sample.weights / max(float(sample.weights.mean()), 1e-300)
    estimator = LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER)
    # One BLAS thread: beside TensorFlow's thread pools, OpenBLAS's own threads oversubscribe
    # the cores (measured: 20k rows x 180 features, 2 cores, loaded: 75.8 s with OpenBLAS's 2
    # threads, 2.9 s with one; the same iterations, coefficients equal to 1e-5 relative).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(sample.features, sample.labels, sample_weight=weights)
    return LogisticBaseline(estimator, present.astype(np.int64), num_classes)


def same_kind_rule(
    model_rule: DecisionRule,
    probabilities: np.ndarray,
    labels: np.ndarray,
) -> DecisionRule:
    """The baseline's rule: chosen like the model's on the same validation rows.

    The model's argmax rule (none chosen) gives the baseline argmax too; a cost-matrix rule
    gives the baseline the same cost matrix; a searched rule gives the baseline its own search
    for the same metric.
    """
    c = model_rule.num_classes
    if model_rule.chosen_on != "validation":
        return DecisionRule.argmax(c, "argmax, like the model (no rule was chosen for it)")
    if model_rule.kind == "cost_matrix":
        return choose_decision_rule(probabilities, labels, cost_matrix=model_rule.cost_matrix)
    return choose_decision_rule(probabilities, labels, metric=model_rule.metric)


def prior_probabilities(class_weight_sums: np.ndarray) -> np.ndarray:
    """The class prior ``[C]`` from weighted training counts (uniform when all are zero)."""
    total = float(class_weight_sums.sum())
    if total <= 0:
        return np.full(len(class_weight_sums), 1.0 / len(class_weight_sums))
    return class_weight_sums / total


BASELINE_KEYS = (
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "weighted_f1",
    "accuracy",
    "log_loss",
    "roc_auc",
    "pr_auc",
)
"""The keys of each ``metrics.json`` baseline block (ROC/PR AUC for binary problems only)."""


def baseline_summary(result: dict[str, Any], binary: bool) -> dict[str, Any]:
    """The compact baseline block from a :class:`ClassificationAccumulator` result."""
    keys: Sequence[str] = BASELINE_KEYS if binary else BASELINE_KEYS[:-2]
    out = {k: result.get(k) for k in keys}
    out["per_class_f1"] = {name: row["f1"] for name, row in result["per_class"].items()}
    out["operating_point"] = result["operating_point"]
    return out
