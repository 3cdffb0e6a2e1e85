"""The straightforward dense MemN2N and memory gate (as the dialog model was first written), the reference the
fast implementation in ``metadial.models.memn2n`` is tested against: every memory slot embeds its whole padded
(L,) token row, every candidate its padded row."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

TARGET_TASK = 0
_init = nn.initializers.normal(stddev=0.1)


def bag_of_words(embed: nn.Embed, tokens: jax.Array) -> jax.Array:
    return jnp.sum(embed(tokens) * (tokens > 0)[..., None], axis=-2)


def attend(u: jax.Array, memory: jax.Array, mask: jax.Array) -> jax.Array:
    scores = jnp.einsum("bd,bmd->bm", u, memory)
    p = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1) * mask
    return jnp.einsum("bm,bmd->bd", p, memory)


class DenseMemN2N(nn.Module):
    vocab_size: int
    embedding_size: int = 20
    hops: int = 3
    target_projection: bool = True

    @nn.compact
    def __call__(self, memory, query, candidates, task):
        """memory (B, M, L) tokens, query (B, L), candidates (C, L) padded token rows, task (B,)."""
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
        return u @ bag_of_words(embed_w, candidates).T


class DenseMemoryGate(nn.Module):
    vocab_size: int
    embedding_size: int = 20

    @nn.compact
    def __call__(self, memory, query):
        embed = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init)
        m = bag_of_words(embed, memory)
        u = bag_of_words(embed, query)
        h = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init)(u) + attend(u, m, jnp.any(memory > 0, -1))
        return nn.Dense(1)(h)[..., 0]


def dense_memory(split, idx, memory_size: int) -> jax.Array:
    """The (B, M, L) memories of examples ``idx`` of an ``EncodedSplit``, the most recent ``memory_size``
    sentences left-padded, gathered from its dense store."""
    n = jnp.asarray(split.memory_len)[idx]
    pos = n[:, None] - memory_size + jnp.arange(memory_size)[None, :]
    store, dialog = jnp.asarray(split.store), jnp.asarray(split.dialog)
    return store[dialog[idx][:, None], jnp.maximum(pos, 0)] * (pos >= 0)[..., None]
