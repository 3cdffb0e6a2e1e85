"""End-to-End Memory Network for response selection (Sukhbaatar et al., 2015; Bordes et al., 2017).

Sentences are bags of words (sum of word embeddings; token 0 is padding). The query embedding ``u`` attends
over the memory sentences for ``hops`` hops, ``u <- H u + o`` with ``o`` the attention-weighted memory; the
final ``u`` scores every candidate of the example's task by a dot product with the candidate's bag-of-words
embedding. One model serves both tasks: the encoder and candidate embedding are shared, and target-task
examples (``task == 0``) pass through an extra linear projection before scoring (as in the authors' code).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metadial.models import apply_model

TARGET_TASK, RELATED_TASK = 0, 1
_init = nn.initializers.normal(stddev=0.1)


def bag_of_words(embed: nn.Embed, tokens: jax.Array) -> jax.Array:
    """Sum of the embeddings of the non-padding tokens over the last axis."""
    return jnp.sum(embed(tokens) * (tokens > 0)[..., None], axis=-2)


def candidate_bag_of_words(embed: nn.Embed, candidates: dict[str, jax.Array]) -> jax.Array:
    """(C, d) bag-of-words embeddings of flat candidates (``metadial.data.dialog_batches.flat_candidates``);
    a segment sum over only the real tokens is several times cheaper (forward and backward) than summing a
    padded (C, L) matrix."""
    return jax.ops.segment_sum(
        embed(candidates["tokens"]),
        candidates["segment"],
        num_segments=candidates["length"].shape[0],
        indices_are_sorted=True,
    )


def attend(u: jax.Array, memory: jax.Array, mask: jax.Array) -> jax.Array:
    """Soft attention of ``u`` (B, d) over ``memory`` (B, M, d); masked slots get no weight."""
    scores = jnp.einsum("bd,bmd->bm", u, memory)
    p = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1) * mask  # an empty memory attends to nothing
    return jnp.einsum("bm,bmd->bd", p, memory)


class MemN2N(nn.Module):
    vocab_size: int
    embedding_size: int = 20
    hops: int = 3
    target_projection: bool = True

    @nn.compact
    def __call__(
        self, memory: jax.Array, query: jax.Array, candidates: dict[str, jax.Array], task: jax.Array
    ) -> jax.Array:
        """Logits (B, C) of the flat ``candidates`` (see ``metadial.data.dialog_batches.flat_candidates``) for
        memories (B, M, L), queries (B, L) and task ids (B,)."""
        embed_a = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init, name="A")
        embed_w = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init, name="W")
        hop = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init, name="H")
        m = bag_of_words(embed_a, memory)
        mask = jnp.any(memory > 0, axis=-1)
        u = bag_of_words(embed_a, query)
        for _ in range(self.hops):
            u = hop(u) + attend(u, m, mask)
        if self.target_projection:
            proj = self.param("target_projection", lambda k, s: jnp.eye(s[0]), (self.embedding_size,) * 2)
            u = jnp.where((task == TARGET_TASK)[:, None], u @ proj, u)
        return u @ candidate_bag_of_words(embed_w, candidates).T


class MemoryGate(nn.Module):
    """The weighting network of the dialog experiment: a 1-hop memory network over (memory, query) with its
    own embeddings, giving one score per example (weight = sigmoid(score))."""

    vocab_size: int
    embedding_size: int = 20

    @nn.compact
    def __call__(self, memory: jax.Array, query: jax.Array) -> jax.Array:
        embed = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init)
        m = bag_of_words(embed, memory)
        u = bag_of_words(embed, query)
        h = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init)(u) + attend(u, m, jnp.any(memory > 0, -1))
        return nn.Dense(1)(h)[..., 0]


def response_loss_fn(model: MemN2N) -> Callable:
    """``loss_fn(params, batch) -> (B,)`` cross-entropy over the batch's own candidate set."""

    def loss_fn(params, batch):
        logits = apply_model(model, params, batch["memory"], batch["query"], batch["candidates"], batch["task"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["answer"])

    return loss_fn


def predict(model: MemN2N, params, batch) -> jax.Array:
    """Index of the best-scoring candidate per example."""
    logits = apply_model(model, params, batch["memory"], batch["query"], batch["candidates"], batch["task"])
    return jnp.argmax(logits, -1)
