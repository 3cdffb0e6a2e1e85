"""The memory network, its candidate embedding and the memory gate (metadial/models/memn2n.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metadial.data.dialog_batches import flat_candidates
from metadial.models.memn2n import MemN2N, MemoryGate, candidate_bag_of_words

VOCAB = 12


def random_tokens(key, shape, density=0.6):
    k1, k2 = jax.random.split(key)
    tokens = jax.random.randint(k1, shape, 1, VOCAB)
    return jnp.where(jax.random.uniform(k2, shape) < density, tokens, 0)


def test_flat_candidate_embedding_equals_padded_sum():
    cands = np.array(random_tokens(jax.random.key(0), (7, 5)))
    cands[3] = 0  # an empty candidate
    embed = nn.Embed(VOCAB, 4)
    params = embed.init(jax.random.key(1), jnp.zeros((1,), jnp.int32))
    flat = {k: jnp.asarray(v) for k, v in flat_candidates(cands).items()}
    got = embed.apply(params, flat, method=lambda m, c: candidate_bag_of_words(m, c))
    table = params["params"]["embedding"]
    expected = np.stack([table[row[row > 0]].sum(0) for row in cands])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def model_inputs(memory_slots=6):
    memory = random_tokens(jax.random.key(2), (3, memory_slots, 5)).at[:, :2].set(0)  # 2 empty slots
    memory = memory.at[2].set(0)  # example 2 has an empty memory
    query = random_tokens(jax.random.key(3), (3, 5))
    cands = {
        k: jnp.asarray(v) for k, v in flat_candidates(np.asarray(random_tokens(jax.random.key(4), (9, 4)))).items()
    }
    return memory, query, cands


def test_memn2n_ignores_padding_slots_and_handles_empty_memory():
    model = MemN2N(VOCAB, embedding_size=8, hops=3)
    memory, query, cands = model_inputs()
    task = jnp.array([0, 1, 0])
    params = model.init(jax.random.key(5), memory, query, cands, task)
    logits = model.apply(params, memory, query, cands, task)
    assert logits.shape == (3, 9) and np.isfinite(np.asarray(logits)).all()
    more_padding = jnp.concatenate([jnp.zeros((3, 4, 5), memory.dtype), memory], axis=1)
    np.testing.assert_allclose(model.apply(params, more_padding, query, cands, task), logits, rtol=1e-5, atol=1e-6)


def test_target_projection_starts_at_the_identity():
    """Both tasks score alike until the target projection is trained."""
    model = MemN2N(VOCAB, embedding_size=8, hops=3)
    memory, query, cands = model_inputs()
    params = model.init(jax.random.key(5), memory, query, cands, jnp.array([0, 1, 0]))
    np.testing.assert_allclose(
        model.apply(params, memory, query, cands, jnp.array([1, 1, 1])),
        model.apply(params, memory, query, cands, jnp.array([0, 0, 0])),
        rtol=1e-6,
    )


def test_memory_gate_scores_every_example_and_ignores_padding_slots():
    memory, query, _ = model_inputs()
    gate = MemoryGate(VOCAB, 8)
    params = gate.init(jax.random.key(6), memory, query)
    scores = gate.apply(params, memory, query)
    assert scores.shape == (3,) and np.isfinite(np.asarray(scores)).all()
    more_padding = jnp.concatenate([jnp.zeros((3, 4, 5), memory.dtype), memory], axis=1)
    np.testing.assert_allclose(gate.apply(params, more_padding, query), scores, rtol=1e-5, atol=1e-6)
