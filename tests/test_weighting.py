"""The weighting schemes (metadial/weighting.py): weights in (0, 1), the table's per-row meta update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metadial import MLPScorer, NetWeighting, TableWeighting
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
