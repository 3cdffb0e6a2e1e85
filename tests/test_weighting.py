"""The weighting schemes (metadial/weighting.py): weights in (0, 1), the table's per-row meta update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metadial import MetaReweighting, MLPScorer, NetWeighting, TableWeighting
from metadial.weighting import MetaWeightNet, Weighting
from tests import tiny


def net_weighting():
    return NetWeighting(MLPScorer(hidden_sizes=(4,)), lambda b: b["x"])


def test_weights_lie_strictly_between_zero_and_one():
    _, related, _ = tiny.make_batches()
    table = TableWeighting(tiny.NUM_RELATED)
    logits = jnp.linspace(-10.0, 10.0, tiny.NUM_RELATED)
    w = np.asarray(table.weights(logits, related))
    np.testing.assert_allclose(w, jax.nn.sigmoid(logits[related["id"]]))
    net = net_weighting()
    for seed in range(5):
        w_net = np.asarray(net.weights(net.init(jax.random.key(seed), related), related))
        assert w_net.shape == (4,)
        assert np.all((w_net > 0) & (w_net < 1))
    assert np.all((w > 0) & (w < 1))


def test_table_meta_update_matches_per_row_adam():
    """Each row follows its own Adam, counting only the steps in which it was in the batch."""
    table = TableWeighting(4)
    opt = optax.adam(0.1)
    params = jnp.zeros(4)
    state = table.init_meta_opt_state(opt, params)
    grads_seq = [jnp.array([1.0, 2.0, 0.0, 0.0]), jnp.array([0.5, 0.0, 0.0, -1.0])]
    ids_seq = [jnp.array([0, 1]), jnp.array([0, 3])]
    for g, ids in zip(grads_seq, ids_seq):
        params, state = table.apply_meta_update(opt, g, state, params, {"id": ids})
    # Adam's first step moves by -lr * sign(g); row 0 took two steps, rows 1 and 3 one each, row 2 none.
    row0, row0_state = jnp.zeros(()), opt.init(jnp.zeros(()))
    for g in (1.0, 0.5):
        u, row0_state = opt.update(jnp.asarray(g), row0_state, row0)
        row0 = row0 + u
    np.testing.assert_allclose(np.asarray(params), [float(row0), -0.1, 0.0, 0.1], rtol=1e-5)


class DenseTable(TableWeighting):
    """The table with the default (dense) meta update: what the row-sparse update protects against."""

    init_meta_opt_state = Weighting.init_meta_opt_state
    apply_meta_update = Weighting.apply_meta_update


@pytest.mark.parametrize("table_cls, expect_untouched", [(TableWeighting, True), (DenseTable, False)])
def test_table_rows_outside_the_batch_do_not_change(table_cls, expect_untouched):
    table = table_cls(tiny.NUM_RELATED)
    learner = MetaReweighting(tiny.loss_fn, table, optax.adam(0.1), optax.adam(0.5))
    target, related, outer = tiny.make_batches()
    state = learner.init(tiny.make_params(jax.random.key(0)), table.init(None, related))
    step = jax.jit(learner.step)
    other = dict(related, id=jnp.array([0, 2, 2, 5], jnp.int32))  # a batch with a repeated id
    state, _ = step(state, target, other, outer)
    before = np.asarray(state.meta_params)
    for _ in range(3):
        state, _ = step(state, target, related, outer)
    after = np.asarray(state.meta_params)
    in_batch = np.isin(np.arange(tiny.NUM_RELATED), np.asarray(related["id"]))
    assert np.all(after[in_batch] != before[in_batch])
    assert np.array_equal(after[~in_batch], before[~in_batch]) == expect_untouched
    assert after[7] == 0.0  # never in a batch, so never a gradient


def test_meta_weight_net_scores_each_example_by_its_current_loss_alone():
    """Meta-Weight-Net's weight is its MLP on the example's loss under the trainer's current parameters; the
    inner objective's gradient holds the weights constant (as published); two examples with equal losses get
    equal weights whatever else they hold."""
    _, related, _ = tiny.make_batches()
    weighting = MetaWeightNet((100,))
    meta_params = weighting.init(jax.random.key(0), related)
    assert meta_params["params"]["Dense_0"]["kernel"].shape == (1, 100)  # one hidden layer of 100, as published
    learner = MetaReweighting(tiny.loss_fn, weighting, optax.sgd(0.1), optax.sgd(0.1))
    params = tiny.make_params(jax.random.key(1))
    losses = tiny.loss_fn(params, related)
    expected = jax.nn.sigmoid(MLPScorer((100,)).apply(meta_params, losses[:, None]))
    np.testing.assert_allclose(learner.weights(params, meta_params, related), expected, rtol=1e-6)
    objective = lambda p: learner.problem.objective(p, meta_params, related, related, False)
    held_constant = lambda p: jnp.mean(expected * tiny.loss_fn(p, related))  # MetaReweighting's normalize=False
    tiny.assert_trees_close(jax.grad(objective)(params), jax.grad(held_constant)(params), rtol=1e-6, atol=1e-7)
    twin = {k: v for k, v in related.items()}
    twin["x"] = twin["x"].at[1].set(twin["x"][0])
    twin["y"] = twin["y"].at[1].set(twin["y"][0])
    w = learner.weights(params, meta_params, twin)
    assert float(w[0]) == float(w[1]) and not np.allclose(w, w[0])
    with pytest.raises(KeyError, match="reads each related example's current loss"):
        weighting.weights(meta_params, related)
