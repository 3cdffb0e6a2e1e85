"""Invariants and known answers of the training steps (metadial/steps.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metadial import (
    FrozenWeighting,
    LearningToReweight,
    MetaReweighting,
    MLPScorer,
    NetWeighting,
    PlainTrainer,
    TableWeighting,
    weighted_mean,
)
from metadial.estimators import Lookahead
from metadial.sampling import IMPORTANCE
from tests import tiny


def net_weighting():
    return NetWeighting(MLPScorer(hidden_sizes=(4,)), lambda b: b["x"])


def test_weighted_mean_normalisation():
    losses, w = jnp.array([1.0, 2.0, 4.0]), jnp.array([0.5, 0.25, 0.25])
    assert float(weighted_mean(losses, w, normalize=False)) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert float(weighted_mean(losses, w, normalize=True)) == pytest.approx(2.0)
    # normalised weights are invariant to a common scale
    assert float(weighted_mean(losses, 7 * w, normalize=True)) == pytest.approx(2.0)


def test_step_traces_once_over_many_calls():
    traces = []

    def counting_loss(params, batch):
        traces.append(1)
        return tiny.loss_fn(params, batch)

    learner = MetaReweighting(
        counting_loss, net_weighting(), optax.adam(0.1, eps_root=1e-8), optax.adam(0.01), estimator=Lookahead(2)
    )
    target, related, outer = tiny.make_batches()
    state = learner.init(tiny.make_params(jax.random.key(0)), learner.weighting.init(jax.random.key(1), related))
    step = learner.jit_step()
    state, _ = step(state, target, related, outer)
    after_first = len(traces)
    assert after_first > 0
    for seed in range(1, 6):
        state, metrics = step(state, *tiny.make_batches(seed))
    assert len(traces) == after_first
    assert int(state.step) == 6 and np.isfinite(float(metrics["outer_loss"]))


def test_meta_weights_learn_to_drop_examples_that_hurt_the_target():
    """Related examples whose labels contradict the target get their table weights pushed down."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (16, tiny.NUM_FEATURES))
    y = jnp.argmax(x @ jnp.eye(tiny.NUM_FEATURES, tiny.NUM_CLASSES), axis=-1)
    bad = jnp.arange(16) % 2 == 1
    related = {"x": x, "y": jnp.where(bad, (y + 1) % tiny.NUM_CLASSES, y), "id": jnp.arange(16)}
    target = {"x": x, "y": y}
    table = TableWeighting(16)
    learner = MetaReweighting(tiny.loss_fn, table, optax.sgd(0.5), optax.adam(0.1), normalize=True)
    state = learner.init(jax.tree.map(jnp.zeros_like, tiny.make_params(key)), table.init(None, related))
    step = learner.jit_step()
    for _ in range(100):
        state, _ = step(state, target, related, target)
    w = np.asarray(jax.nn.sigmoid(state.meta_params))
    assert w[~np.asarray(bad)].min() > w[np.asarray(bad)].max()


def test_plain_step_is_one_optax_update_on_the_sum_of_batch_means():
    target, related, _ = tiny.make_batches()
    params = tiny.make_params(jax.random.key(0))
    trainer = PlainTrainer(tiny.loss_fn, optax.sgd(0.3))
    new_state, metrics = trainer.jit_step()(trainer.init(params), target, related)
    total = lambda p: jnp.mean(tiny.loss_fn(p, target)) + jnp.mean(tiny.loss_fn(p, related))
    expected = jax.tree.map(lambda p, g: p - 0.3 * g, params, jax.grad(total)(params))
    tiny.assert_trees_close(new_state.params, expected)
    assert float(metrics["train_loss"]) == pytest.approx(float(total(params)), rel=1e-5)


def test_l2rw_weights_are_the_clipped_normalised_gradient_alignment():
    """With SGD, -d outer/d eps_i = lr * <grad target loss, grad l_i>: the known answer of Ren et al."""
    with jax.enable_x64(True):
        target, related, outer = tiny.make_batches()
        params = tiny.make_params(jax.random.key(0))
        l2rw = LearningToReweight(tiny.loss_fn, optax.adam(0.1), lookahead=optax.sgd(0.2))
        state = l2rw.init(params)
        w = np.asarray(l2rw.example_weights(state, target, related, outer))
        g_outer = jax.grad(lambda p: jnp.mean(tiny.loss_fn(p, outer)))(params)
        per_example = jax.jacobian(lambda p: tiny.loss_fn(p, related))(params)
        align = sum(np.asarray(per_example[k]).reshape(4, -1) @ np.asarray(g_outer[k]).ravel() for k in params)
        expected = np.maximum(0.2 * align, 0)
        assert expected.sum() > 0
        np.testing.assert_allclose(w, expected / expected.sum(), rtol=1e-8, atol=1e-12)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
        # the default look-ahead (SGD) gives the same weights: its learning rate cancels
        np.testing.assert_allclose(
            LearningToReweight(tiny.loss_fn, optax.adam(0.1)).example_weights(state, target, related, outer),
            w,
            rtol=1e-8,
            atol=1e-12,
        )
        # a clipped model optimizer does not turn the weights into NaN: the look-ahead never clips
        clipped = LearningToReweight(tiny.loss_fn, optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.1)))
        np.testing.assert_allclose(
            clipped.example_weights(clipped.init(params), target, related, outer), w, rtol=1e-8, atol=1e-12
        )
        new_state, metrics = jax.jit(l2rw.step)(state, target, related, outer)
        assert int(new_state.step) == 1 and np.isfinite(float(metrics["train_loss"]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="inner_steps"):
        Lookahead(inner_steps=0)
    with pytest.raises(ValueError, match="real_update must be one of joint, related, alternate, got 'both'"):
        MetaReweighting(tiny.loss_fn, net_weighting(), optax.sgd(0.1), optax.sgd(0.1), real_update="both")


def test_loss_fn_must_return_per_example_losses():
    learner = MetaReweighting(
        lambda p, b: jnp.mean(tiny.loss_fn(p, b)), net_weighting(), optax.sgd(0.1), optax.sgd(0.1)
    )
    target, related, outer = tiny.make_batches()
    state = learner.init(tiny.make_params(jax.random.key(0)), learner.weighting.init(jax.random.key(1), related))
    with pytest.raises(ValueError, match="per-example"):
        learner.step(state, target, related, outer)


def test_alternate_real_update_is_a_related_update_then_a_target_update():
    """The authors' scheme: the real update on the weighted related loss alone, then one on the target loss."""
    target, related, outer = tiny.make_batches()
    params = tiny.make_params(jax.random.key(0))
    optimizer = optax.adam(0.1)
    joint = MetaReweighting(tiny.loss_fn, net_weighting(), optimizer, optax.sgd(0.5), real_update="related")
    separate = MetaReweighting(tiny.loss_fn, net_weighting(), optimizer, optax.sgd(0.5), real_update="alternate")
    state = joint.init(params, joint.weighting.init(jax.random.key(1), related))
    after_related, _ = jax.jit(joint.step)(state, target, related, outer)
    new_state, _ = jax.jit(separate.step)(state, target, related, outer)
    grads = jax.grad(lambda p: jnp.mean(tiny.loss_fn(p, target)))(after_related.params)
    updates, opt_state = optimizer.update(grads, after_related.opt_state, after_related.params)
    expected = optax.apply_updates(after_related.params, updates)
    tiny.assert_trees_close((new_state.params, new_state.opt_state), (expected, opt_state))
    tiny.assert_trees_close(new_state.meta_params, after_related.meta_params, rtol=1e-6, atol=0)
    assert tiny.trees_differ(expected, after_related.params)


def test_logged_mean_weight_of_a_batch_drawn_by_weight_is_importance_corrected():
    """``mean_weight`` estimates the related pool's mean weight: a batch drawn by weight carries importance factors
    ``c``, and the meta step and the final-fit step both report ``mean(c w)``; without them, ``mean(w)``."""
    table = TableWeighting(tiny.NUM_RELATED)
    meta = MetaReweighting(tiny.loss_fn, table, optax.sgd(0.1), optax.sgd(0.5), normalize=True)
    frozen = FrozenWeighting.of(meta)
    target, related, outer = tiny.make_batches()
    importance = jnp.linspace(0.2, 3.0, related["y"].shape[0])
    logits = jnp.linspace(-2.0, 2.0, tiny.NUM_RELATED)
    params = tiny.make_params(jax.random.key(0))
    for batch, factors in ((related, 1.0), ({**related, IMPORTANCE: importance}, importance)):
        state, metrics = meta.jit_step()(meta.init(params, logits), target, batch, outer)
        w = jax.nn.sigmoid(state.meta_params[related["id"]])
        assert float(metrics["mean_weight"]) == pytest.approx(float(jnp.mean(factors * w)), rel=1e-6)
        _, metrics = frozen.jit_step()(frozen.init(params, logits), target, batch)
        w = jax.nn.sigmoid(logits[related["id"]])
        assert float(metrics["mean_weight"]) == pytest.approx(float(jnp.mean(factors * w)), rel=1e-6)
    assert float(jnp.mean(importance * w)) != pytest.approx(float(jnp.mean(w)), rel=0.05)


def test_frozen_weighting_trains_on_the_weighted_loss_and_leaves_the_weights_alone():
    """A final-fit step is one optax update on the mean target loss plus the related losses weighted by the fixed
    table weights, normalised (written out here); the weighting's parameters do not move; it traces once."""
    traces = []

    def counting_loss(params, batch):
        traces.append(1)
        return tiny.loss_fn(params, batch)

    optimizer = optax.adam(0.1)
    meta = MetaReweighting(counting_loss, TableWeighting(tiny.NUM_RELATED), optimizer, optax.sgd(0.5), normalize=True)
    frozen = FrozenWeighting.of(meta)
    target, related, _ = tiny.make_batches()
    logits = jnp.linspace(-2.0, 2.0, tiny.NUM_RELATED)
    params = tiny.make_params(jax.random.key(0))
    state = frozen.init(params, logits)
    step = frozen.jit_step()
    new_state, metrics = step(state, target, related)

    def expected_loss(p):
        w = jax.nn.sigmoid(logits[related["id"]])
        related_losses = tiny.loss_fn(p, related)
        return jnp.mean(tiny.loss_fn(p, target)) + jnp.sum(w * related_losses) / jnp.sum(w)

    loss, grads = jax.value_and_grad(expected_loss)(params)
    updates, opt_state = optimizer.update(grads, optimizer.init(params), params)
    tiny.assert_trees_close((new_state.params, new_state.opt_state), (optax.apply_updates(params, updates), opt_state))
    assert float(metrics["train_loss"]) == pytest.approx(float(loss), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(new_state.meta_params), np.asarray(logits))
    after_first = len(traces)
    for seed in range(1, 4):
        new_state, _ = step(new_state, *tiny.make_batches(seed)[:2])
    assert len(traces) == after_first and int(new_state.step) == 4
    with pytest.raises(TypeError, match="needs a MetaReweighting"):
        FrozenWeighting.of(PlainTrainer(tiny.loss_fn, optimizer))
