"""Weight-aware sampling of related examples (metadial/sampling.py): probabilities, and the importance correction
that keeps the weighted objective the same."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadial.estimators import inner_objective
from metadial.sampling import IMPORTANCE, draw, pool_mean, sampling_probabilities


def test_probabilities_mix_the_weights_with_a_uniform_share():
    w = jnp.array([0.0, 1.0, 3.0, 0.0])
    q = np.asarray(sampling_probabilities(w, 0.2))
    np.testing.assert_allclose(q, 0.8 * np.array([0, 0.25, 0.75, 0]) + 0.05, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sampling_probabilities(jnp.zeros(4), 0.2)), 0.25)  # no weight: uniform
    with pytest.raises(ValueError, match=r"uniform_share must be in \(0, 1\], got 0.0"):
        sampling_probabilities(w, 0.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_importance_corrected_batch_estimates_the_full_weighted_objective(normalize):
    """A large batch drawn by weight, with its importance factors, gives the weighted objective over all
    examples (mean(w l), or sum(w l) / sum(w)); without the factors it would not."""
    n = 50
    k_w, k_l, k_d = jax.random.split(jax.random.key(0), 3)
    weights = jax.nn.sigmoid(3 * jax.random.normal(k_w, (n,)))
    losses = 2 * (1 - weights) + jax.random.uniform(k_l, (n,))  # low-weight examples have high losses
    loss_fn = lambda params, batch: batch["loss"]
    full = inner_objective(loss_fn, None, weights, {}, {"loss": losses}, False, normalize)
    idx, importance = draw(k_d, sampling_probabilities(weights, 0.1), 400_000)
    q = sampling_probabilities(weights, 0.1)
    np.testing.assert_allclose(np.asarray(importance), np.asarray(1.0 / (n * q[idx])), rtol=1e-6)
    batch = {"loss": losses[idx], IMPORTANCE: importance}
    estimate = inner_objective(loss_fn, None, weights[idx], {}, batch, False, normalize)
    biased = inner_objective(loss_fn, None, weights[idx], {}, {"loss": losses[idx]}, False, normalize)
    assert abs(float(estimate) - float(full)) < 0.01 * float(full)
    assert abs(float(biased) - float(full)) > 0.05 * float(full)


def test_pool_mean_of_a_batch_drawn_by_weight_is_the_pools_mean_weight():
    """Weights of a large batch drawn by weight: importance-corrected, their mean is the pool's mean weight; the
    plain batch mean is the probability-weighted mean ``sum(q w)``, well above it."""
    n = 50
    weights = jax.nn.sigmoid(3 * jax.random.normal(jax.random.key(1), (n,)))
    q = sampling_probabilities(weights, 0.1)
    idx, importance = draw(jax.random.key(2), q, 400_000)
    corrected = float(pool_mean(weights[idx], {IMPORTANCE: importance}))
    plain = float(pool_mean(weights[idx], {}))
    assert corrected == pytest.approx(float(jnp.mean(weights)), rel=0.01)
    assert plain == pytest.approx(float(jnp.sum(q * weights)), rel=0.01)
    assert plain > 1.2 * float(jnp.mean(weights))
