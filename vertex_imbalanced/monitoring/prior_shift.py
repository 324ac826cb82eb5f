"""Serving class prior under label shift: the EM procedure of Saerens, Latinne & Decaestecker (2002).

Under label shift ``p(x | y)`` stays the same and only the prior ``p(y)`` moves. A calibrated
model trained with prior ``pi_train`` gives posteriors ``p(y | x)``; for a candidate serving
prior ``pi`` the adjusted posteriors are::

    p'(y | x) = (pi[y] / pi_train[y]) * p(y | x) / sum_j (pi[j] / pi_train[j]) * p(j | x)

and the EM iteration ``pi <- mean_x p'(y | x)`` converges to the maximum-likelihood serving
prior (Saerens et al., "Adjusting the outputs of a classifier to new a priori probabilities: a
simple procedure", Neural Computation 14(1), 2002). The estimate is only as good as the model's
calibration on the training prior.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vertex_imbalanced.errors import PipelineInputError


@dataclasses.dataclass(frozen=True)
class PriorEstimate:
    """Result of :func:`estimate_prior`.

    Attributes:
        prior: estimated serving prior, shape [C], sums to 1.
        iterations: EM iterations run.
        converged: the largest change of the last iteration was below the tolerance.
    """

    prior: np.ndarray
    iterations: int
    converged: bool


def _check(probabilities: np.ndarray, train_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(train_prior, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != t.shape[0] or p.shape[1] < 2:
        raise PipelineInputError(
            f"probabilities of shape {p.shape} do not match a training prior of {t.shape[0]} classes"
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise PipelineInputError("probabilities must be finite and non-negative")
    if np.any(t <= 0) or not np.isclose(t.sum(), 1.0, atol=1e-6):
        raise PipelineInputError(f"training prior must be positive and sum to 1, got {t.tolist()}")
    return p, t


def adjust_probabilities(
    probabilities: np.ndarray, train_prior: np.ndarray, new_prior: np.ndarray
) -> np.ndarray:
    """Posteriors re-weighted from the training prior to ``new_prior`` (rows sum to 1).

    Args:
        probabilities: model posteriors, shape [n, C].
        train_prior: prior the model's posteriors reflect, shape [C].
        new_prior: prior to adjust to, shape [C].

    Returns:
        Adjusted posteriors, shape [n, C].
    """
    p, t = _check(probabilities, train_prior)
    w = p * (np.asarray(new_prior, dtype=np.float64) / t)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.full_like(w, 1.0 / w.shape[1]), where=total > 0)


def estimate_prior(
    probabilities: np.ndarray,
    train_prior: np.ndarray,
    *,
    counts: np.ndarray | None = None,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
) -> PriorEstimate:
    """EM estimate of the serving prior (Saerens et al., 2002).

    Args:
        probabilities: model posteriors, shape [n, C] (rows, or distinct rows with ``counts``).
        train_prior: the prior the model was calibrated for, shape [C] (positive, sums to 1).
        counts: how many rows each row of ``probabilities`` stands for, shape [n] (default 1).
        tolerance: stop when no class share moves more than this.
        max_iterations: upper bound on EM iterations.

    Returns:
        The estimate, iterations and whether it converged.

    Raises:
        PipelineInputError: shapes disagree, non-finite probabilities, an invalid prior, or no rows.
    """
    p, t = _check(probabilities, train_prior)
    c = np.ones(p.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    if c.shape != (p.shape[0],) or c.sum() <= 0:
        raise PipelineInputError("no rows to estimate the prior from")
    prior = t.copy()
    for i in range(1, max_iterations + 1):
        adjusted = adjust_probabilities(p, t, prior)
        new = (adjusted * c[:, None]).sum(axis=0) / c.sum()
        done = float(np.max(np.abs(new - prior))) < tolerance
        prior = new
        if done:
            return PriorEstimate(prior, i, True)
    return PriorEstimate(prior, max_iterations, False)
