"""The EM prior estimate recovers a known shifted prior (Saerens et al., 2002) on synthetic data."""

import numpy as np
import pytest

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.monitoring.prior_shift import adjust_probabilities, estimate_prior


def _bayes_posteriors(x, means, prior):
    """Exact posteriors of 1-D unit-variance Gaussian classes under ``prior``."""
    like = np.exp(-0.5 * (x[:, None] - np.asarray(means)[None, :]) ** 2)
    joint = like * np.asarray(prior)[None, :]
    return joint / joint.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("train_prior", "serving_prior"),
    [((0.9, 0.1), (0.7, 0.3)), ((0.5, 0.5), (0.95, 0.05)), ((0.6, 0.3, 0.1), (0.2, 0.3, 0.5))],
)
def test_em_recovers_shifted_prior(train_prior, serving_prior):
    rng = np.random.default_rng(7)
    means = [0.0, 2.0, 4.0][: len(train_prior)]
    n = 40_000
    y = rng.choice(len(serving_prior), n, p=serving_prior)
    x = rng.normal(np.asarray(means)[y], 1.0)
    posteriors = _bayes_posteriors(x, means, train_prior)  # a model calibrated on train_prior
    est = estimate_prior(posteriors, np.asarray(train_prior))
    assert est.converged
    observed = np.bincount(y, minlength=len(serving_prior)) / n
    assert np.max(np.abs(est.prior - observed)) < 0.02
    # the plain mean of the posteriors is biased toward the training prior
    naive = posteriors.mean(axis=0)
    assert np.max(np.abs(naive - observed)) > np.max(np.abs(est.prior - observed))


def test_counts_are_row_multiplicities():
    p = np.array([[0.8, 0.2], [0.3, 0.7]])
    t = np.array([0.5, 0.5])
    a = estimate_prior(np.repeat(p, [3, 1], axis=0), t).prior
    b = estimate_prior(p, t, counts=np.array([3, 1])).prior
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_adjusted_probabilities_match_bayes_under_the_new_prior():
    x = np.linspace(-2, 4, 11)
    old, new = (0.9, 0.1), (0.6, 0.4)
    adjusted = adjust_probabilities(_bayes_posteriors(x, [0, 2], old), np.array(old), np.array(new))
    np.testing.assert_allclose(adjusted, _bayes_posteriors(x, [0, 2], new), atol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(PipelineInputError, match="do not match"):
        estimate_prior(np.ones((3, 3)) / 3, np.array([0.5, 0.5]))
    with pytest.raises(PipelineInputError, match="finite"):
        estimate_prior(np.array([[np.nan, 1.0]]), np.array([0.5, 0.5]))
