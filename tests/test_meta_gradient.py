"""The meta-gradient of the jit-compiled step against finite differences and a hand-written unroll."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from metadial import MetaReweighting, MLPScorer, NetWeighting, TableWeighting
from metadial.estimators import Lookahead
from metadial.steps import stack_batches
from metadial.weighting import MetaWeightNet
from tests import tiny

LR = 0.1
B1, B2, EPS, EPS_ROOT = 0.9, 0.999, 1e-8, 1e-8

INNER_OPTIMIZERS = {
    "sgd": lambda: optax.sgd(LR),
    "adam": lambda: optax.adam(LR, b1=B1, b2=B2, eps=EPS, eps_root=EPS_ROOT),
    "clip_adam": lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.adam(LR, eps_root=EPS_ROOT)),
}


KINDS = ["table", "net", "mwnet"]  # a logit per example; a network on the example; a network on its loss


def make_weighting(kind):
    if kind == "table":
        return TableWeighting(tiny.NUM_RELATED)
    if kind == "mwnet":
        return MetaWeightNet((4,))
    return NetWeighting(MLPScorer(hidden_sizes=(4,)), lambda b: jnp.concatenate([b["x"], b["y"][:, None] * 1.0], -1))


def setup(kind, optimizer_name, inner_steps, target_in_inner=False, normalize=False):
    """A learner and a state whose optimizer state has seen two real updates (so Adam's moments are not 0)."""
    target, related, outer = tiny.make_batches()
    weighting = make_weighting(kind)
    learner = MetaReweighting(
        tiny.loss_fn,
        weighting,
        INNER_OPTIMIZERS[optimizer_name](),
        optax.sgd(1.0),
        estimator=Lookahead(inner_steps, include_target=target_in_inner),
        normalize=normalize,
    )
    meta_params = jax.tree.map(lambda a: a.astype(jnp.float64), weighting.init(jax.random.key(1), related))
    if kind == "table":
        meta_params = jax.random.normal(jax.random.key(2), meta_params.shape)
    state = learner.init(tiny.make_params(jax.random.key(3)), meta_params)
    step = jax.jit(learner.step)
    for seed in (5, 6):
        t, r, o = tiny.make_batches(seed)
        state = step(state, t, r, o)[0]
    return learner, state, (target, related, outer)


def outer_loss(learner, meta_params, state, target, related, outer):
    """The look-ahead's outer loss as a function of the meta-parameters (what its meta-gradient differentiates)."""
    return learner.estimator.outer_loss(
        learner.problem, state.params, state.opt_state, meta_params, target, related, outer
    )


def central_difference(fn, x, h=1e-6):
    flat, unravel = ravel_pytree(x)
    fn = jax.jit(fn)
    grad = np.zeros(flat.shape)
    for i in range(flat.size):
        e = jnp.zeros_like(flat).at[i].set(h)
        grad[i] = (fn(unravel(flat + e)) - fn(unravel(flat - e))) / (2 * h)
    return grad


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "clip_adam"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_step_meta_gradient_matches_finite_differences(kind, optimizer_name, inner_steps):
    with jax.enable_x64(True):
        learner, state, (target, related, outer) = setup(kind, optimizer_name, inner_steps)
        new_state, _ = jax.jit(learner.step)(state, target, related, outer)
        # the meta-optimizer is sgd(1.0), so the step moved the meta-parameters by exactly -gradient
        step_grad = -(ravel_pytree(new_state.meta_params)[0] - ravel_pytree(state.meta_params)[0])
        fd = central_difference(lambda m: outer_loss(learner, m, state, target, related, outer), state.meta_params)
        assert np.abs(fd).max() > 1e-6  # the check is not vacuous
        assert rel_err(step_grad, fd) < 1e-4


@pytest.mark.parametrize("options", [dict(target_in_inner=True), dict(normalize=True)])
def test_meta_gradient_options_match_finite_differences(options):
    with jax.enable_x64(True):
        learner, state, (target, related, outer) = setup("net", "adam", 1, **options)
        grad = jax.jit(learner.meta_gradient)(state, target, related, outer).grads
        fd = central_difference(lambda m: outer_loss(learner, m, state, target, related, outer), state.meta_params)
        assert rel_err(ravel_pytree(grad)[0], fd) < 1e-4


def hand_unrolled_outer_loss(optimizer_name, inner_steps, weights_of, meta_params, state, batches):
    """The outer loss written out by hand: K plain SGD or Adam steps on the weighted related loss."""
    _, related, outer = batches
    params = state.params
    if optimizer_name == "adam":
        mu, nu, count = state.opt_state[0].mu, state.opt_state[0].nu, state.opt_state[0].count
    w = weights_of(meta_params)
    for _ in range(inner_steps):
        g = jax.grad(lambda p: jnp.mean(w * tiny.loss_fn(p, related)))(params)
        if optimizer_name == "sgd":
            params = jax.tree.map(lambda p, gi: p - LR * gi, params, g)
        else:
            count = count + 1
            mu = jax.tree.map(lambda m, gi: B1 * m + (1 - B1) * gi, mu, g)
            nu = jax.tree.map(lambda v, gi: B2 * v + (1 - B2) * gi**2, nu, g)
            params = jax.tree.map(
                lambda p, m, v: p - LR * (m / (1 - B1**count)) / (jnp.sqrt(v / (1 - B2**count) + EPS_ROOT) + EPS),
                params,
                mu,
                nu,
            )
    return jnp.mean(tiny.loss_fn(params, outer))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_step_meta_gradient_matches_hand_written_unroll(kind, optimizer_name, inner_steps):
    with jax.enable_x64(True):
        learner, state, batches = setup(kind, optimizer_name, inner_steps)
        weights_of = lambda m: learner.weights(state.params, m, batches[1])  # mwnet: losses at the start
        hand = lambda m: hand_unrolled_outer_loss(optimizer_name, inner_steps, weights_of, m, state, batches)
        np.testing.assert_allclose(
            hand(state.meta_params), outer_loss(learner, state.meta_params, state, *batches), rtol=1e-12
        )
        new_state, _ = jax.jit(learner.step)(state, *batches)
        step_grad = -(ravel_pytree(new_state.meta_params)[0] - ravel_pytree(state.meta_params)[0])
        assert rel_err(step_grad, ravel_pytree(jax.grad(hand)(state.meta_params))[0]) < 1e-10


def fresh_learner(learner):
    return dataclasses.replace(learner, estimator=dataclasses.replace(learner.estimator, fresh_batches=True))


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_inner_batches_of_one_repeated_batch_equal_the_same_batch_steps(kind):
    with jax.enable_x64(True):
        learner, state, (target, related, outer) = setup(kind, "adam", 2, target_in_inner=True)
        expected, _ = jax.jit(learner.step)(state, target, related, outer)
        repeated = stack_batches([target, target]), stack_batches([related, related])
        got, _ = jax.jit(fresh_learner(learner).step)(state, *repeated, outer)
        tiny.assert_trees_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_inner_batches_meta_gradient_matches_finite_differences(kind):
    with jax.enable_x64(True):
        learner, state, (target, related, outer) = setup(kind, "clip_adam", 2, target_in_inner=True)
        learner = fresh_learner(learner)
        t2, r2, _ = tiny.make_batches(7)
        targets, relateds = stack_batches([target, t2]), stack_batches([related, r2])
        new_state, _ = jax.jit(learner.step)(state, targets, relateds, outer)
        step_grad = -(ravel_pytree(new_state.meta_params)[0] - ravel_pytree(state.meta_params)[0])
        loss = lambda m: outer_loss(learner, m, state, targets, relateds, outer)
        fd = central_difference(loss, state.meta_params)
        assert np.abs(fd).max() > 1e-6
        assert rel_err(step_grad, fd) < 1e-4
        # the second batch matters: the outer loss differs from repeating the first batch twice
        repeated = stack_batches([target, target]), stack_batches([related, related])
        repeated_loss = outer_loss(learner, state.meta_params, state, *repeated, outer)
        assert abs(float(loss(state.meta_params)) - float(repeated_loss)) > 1e-6


def test_fresh_inner_batches_need_a_leading_axis_of_inner_steps():
    target, related, outer = tiny.make_batches()
    weighting = make_weighting("net")
    learner = MetaReweighting(
        tiny.loss_fn, weighting, optax.sgd(LR), optax.sgd(1.0), estimator=Lookahead(2, fresh_batches=True)
    )
    state = learner.init(tiny.make_params(jax.random.key(3)), weighting.init(jax.random.key(1), related))
    with pytest.raises(ValueError, match="leading axis of length 2 "):
        outer_loss(learner, state.meta_params, state, target, related, outer)
