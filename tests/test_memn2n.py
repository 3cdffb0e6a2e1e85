"""The memory network and the memory gate (metadial/models/memn2n.py): the fast model (text table, candidate
templates, pool embeddings computed once) against the straightforward dense one (tests/memn2n_reference.py) on
real batches, forward and gradient, and their invariants."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadial.data.dialog_batches import device_pool, flat_candidates, gather_batch
from metadial.data.dialog_tasks import encode, load_corpus
from metadial.models.memn2n import (
    TARGET_TASK,
    MemN2N,
    MemoryGate,
    best_candidate,
    candidate_bag_of_words,
    pool_embeddings,
    predict,
    response_loss_fn,
)
from tests import tiny
from tests.memn2n_reference import DenseMemN2N, DenseMemoryGate, dense_memory


def test_candidate_embedding_equals_the_padded_sum():
    rng = np.random.default_rng(0)
    cands = np.where(rng.random((60, 5)) < 0.6, rng.integers(1, 12, (60, 5)), 0)
    cands[3] = 0  # an empty candidate
    embed = nn.Embed(12, 4)
    params = embed.init(jax.random.key(1), jnp.zeros((1,), jnp.int32))
    flat = {k: jnp.asarray(v) for k, v in flat_candidates(cands, min_count=10).items()}
    got = embed.apply(params, flat, method=lambda m, c: candidate_bag_of_words(m, c))
    table = np.asarray(params["params"]["embedding"])
    np.testing.assert_allclose(got, np.stack([table[row[row > 0]].sum(0) for row in cands]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def real_batches():
    """Batches of real dialogs of both tasks, with their dense memories and padded candidate matrices."""
    corpus = load_corpus(max_dialogs=12)
    out = []
    for name, task in [("target_trn", 0), ("related_trn", 1)]:
        split = encode(corpus, name)
        cands = corpus.related_candidates  # 4212, not the target's 43863: a fast test; any set serves it
        idx = jnp.asarray(np.random.default_rng(task).integers(0, len(split), 16))
        batch = gather_batch(device_pool(split, task, cands), idx, corpus.max_sentences)
        batch["answer"] = batch["answer"] % len(cands)
        out.append((batch, dense_memory(split, idx, corpus.max_sentences), jnp.asarray(cands)))
    return len(corpus.vocab), out


def test_memn2n_equals_the_dense_reference_forward_and_gradient(real_batches):
    vocab, batches = real_batches
    model, reference = MemN2N(vocab, 8, hops=3), DenseMemN2N(vocab, 8, hops=3)
    batch, _, _ = batches[0]
    params = model.init(
        jax.random.key(0), batch["memory"], batch["texts"], batch["query"], batch["candidates"], batch["task"]
    )
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)  # H, proj != 0, I
    loss = response_loss_fn(model)

    def reference_loss(p, batch, memory, cands):
        logits = reference.apply(p, memory, batch["query"], cands, batch["task"])
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["answer"][:, None], -1)[:, 0]

    for batch, memory, cands in batches:
        logits = model.apply(
            params, batch["memory"], batch["texts"], batch["query"], batch["candidates"], batch["task"]
        )
        expected = reference.apply(params, memory, batch["query"], cands, batch["task"])
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
        grad = jax.grad(lambda p, b=batch: loss(p, b).mean())(params)
        ref_grad = jax.grad(lambda p, b=batch, m=memory, c=cands: reference_loss(p, b, m, c).mean())(params)
        tiny.assert_trees_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
        # the evaluation path: the pool's embeddings once, then each batch's scores
        embeddings = pool_embeddings(model, params, batch["texts"], batch["candidates"])
        for chunk in (None, 1000, 4096):  # 4212 candidates: one matrix product, 5 chunks of 843, 2 of 2106
            np.testing.assert_array_equal(predict(model, params, batch, embeddings, chunk), jnp.argmax(logits, -1))


@pytest.mark.parametrize("chunk", [1, 7, 16, 49, 50, 64, None])
def test_best_candidate_is_the_first_argmax_of_the_full_logits(chunk):
    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
    cands = rng.normal(size=(50, 5))
    unit = np.asarray(u) / np.linalg.norm(np.asarray(u), axis=1, keepdims=True)
    cands[[3, 40]] = 100 * unit[0]  # a tie across chunks for row 0: the first (3) must win
    cands[[20, 21]] = 100 * unit[1]  # a tie within a chunk for row 1
    cands = jnp.asarray(cands, jnp.float32)
    expected = np.argmax(np.asarray(u @ cands.T), -1)
    assert expected[0] == 3 and expected[1] == 20
    np.testing.assert_array_equal(best_candidate(u, cands, chunk), expected)
    np.testing.assert_array_equal(jax.jit(best_candidate, static_argnums=2)(u, cands, chunk), expected)


def test_best_candidate_rejects_a_chunk_that_is_not_positive():
    with pytest.raises(ValueError, match="chunk must be a positive"):
        best_candidate(jnp.zeros((2, 3)), jnp.zeros((10, 3)), 0)


def test_memory_gate_equals_the_dense_reference(real_batches):
    vocab, batches = real_batches
    gate, reference = MemoryGate(vocab, 8), DenseMemoryGate(vocab, 8)
    batch, memory, _ = batches[1]
    params = gate.init(jax.random.key(2), batch["memory"], batch["texts"], batch["query"])
    scores = gate.apply(params, batch["memory"], batch["texts"], batch["query"])
    np.testing.assert_allclose(scores, reference.apply(params, memory, batch["query"]), rtol=1e-4, atol=1e-5)
    grad = jax.grad(lambda p: gate.apply(p, batch["memory"], batch["texts"], batch["query"]).sum())(params)
    tiny.assert_trees_close(
        grad, jax.grad(lambda p: reference.apply(p, memory, batch["query"]).sum())(params), rtol=1e-4, atol=1e-6
    )


def test_memn2n_ignores_padding_slots_and_handles_an_empty_memory(real_batches):
    vocab, batches = real_batches
    batch, _, _ = batches[1]
    model = MemN2N(vocab, 8, hops=3)
    args = lambda memory: (memory, batch["texts"], batch["query"], batch["candidates"], batch["task"])
    params = model.init(jax.random.key(5), *args(batch["memory"]))
    logits = model.apply(params, *args(batch["memory"]))
    assert np.isfinite(np.asarray(logits)).all()
    pad = lambda x: jnp.concatenate([jnp.zeros((x.shape[0], 4, *x.shape[2:]), x.dtype), x], axis=1)
    np.testing.assert_allclose(
        model.apply(params, *args(jax.tree.map(pad, batch["memory"]))), logits, rtol=1e-5, atol=1e-6
    )
    empty = jax.tree.map(jnp.zeros_like, batch["memory"])
    assert np.isfinite(np.asarray(model.apply(params, *args(empty)))).all()


def test_target_projection_starts_at_the_identity(real_batches):
    """Both tasks score alike until the target projection is trained."""
    vocab, batches = real_batches
    batch, _, _ = batches[0]
    model = MemN2N(vocab, 8, hops=3)
    args = lambda task: (batch["memory"], batch["texts"], batch["query"], batch["candidates"], task)
    params = model.init(jax.random.key(5), *args(batch["task"]))
    same = jnp.full_like(batch["task"], TARGET_TASK)
    np.testing.assert_allclose(model.apply(params, *args(same)), model.apply(params, *args(1 - same)), rtol=1e-6)
