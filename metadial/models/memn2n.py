"""End-to-End Memory Network for response selection (Sukhbaatar et al., 2015; Bordes et al., 2017).

Sentences are bags of words (sum of word embeddings; token 0 is padding). The query embedding ``u`` attends
over the memory sentences for ``hops`` hops, ``u <- H u + o`` with ``o`` the attention-weighted memory; the
final ``u`` scores every candidate of the example's task by a dot product with the candidate's bag-of-words
embedding. One model serves both tasks: the encoder and candidate embedding are shared, and target-task
examples (``task == 0``) pass through an extra linear projection before scoring (as in the authors' code).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadial.losses import OutputLoss, cross_entropy
from metadial.models import apply_model

TARGET_TASK, RELATED_TASK = 0, 1
_init = nn.initializers.normal(stddev=0.1)


def bag_of_words(embed: nn.Embed, tokens: jax.Array) -> jax.Array:
    """Sum of the embeddings of the non-padding tokens over the last axis."""
    return jnp.sum(embed(tokens) * (tokens > 0)[..., None], axis=-2)


def text_bag_of_words(embed: nn.Embed, texts: dict[str, jax.Array]) -> jax.Array:
    """(U, d) bag-of-words embeddings of a text table in flat form (its real ``tokens``, the row ``segment`` of
    each, ``length`` per row)."""
    return jax.ops.segment_sum(
        embed(texts["tokens"]), texts["segment"], num_segments=texts["length"].shape[0], indices_are_sorted=True
    )


def candidate_bag_of_words(embed: nn.Embed, candidates: dict[str, jax.Array]) -> jax.Array:
    """(C, d) bag-of-words embeddings of flat candidates (``metadial.data.dialog_batches.flat_candidates``):
    each template's tokens are summed once, then each candidate adds its own rare tokens. Segment sums over the
    real tokens only; far cheaper (forward and backward) than summing a padded (C, L) matrix."""
    templates = jax.ops.segment_sum(
        embed(candidates["template_tokens"]),
        candidates["template_segment"],
        num_segments=candidates["template_length"].shape[0],
        indices_are_sorted=True,
    )
    rare = jax.ops.segment_sum(
        embed(candidates["tokens"]),
        candidates["segment"],
        num_segments=candidates["length"].shape[0],
        indices_are_sorted=True,
    )
    return templates[candidates["template"]] + rare


Memory = dict[str, jax.Array]  # "text": (B, M) rows of the text table, "tags": (B, M, 2) speaker and time tokens


def memory_bag_of_words(embed: nn.Embed, text_embeddings: jax.Array, memory: Memory) -> tuple[jax.Array, jax.Array]:
    """(B, M, d) memory sentence embeddings (text plus tags, see ``metadial.data.dialog_batches``) and the
    (B, M) mask of the non-empty slots."""
    m = text_embeddings[memory["text"]] + bag_of_words(embed, memory["tags"])
    return m, (memory["text"] > 0) | jnp.any(memory["tags"] > 0, axis=-1)


def attend(u: jax.Array, memory: jax.Array, mask: jax.Array) -> jax.Array:
    """Soft attention of ``u`` (B, d) over ``memory`` (B, M, d); masked slots get no weight."""
    scores = jnp.einsum("bd,bmd->bm", u, memory)
    p = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1) * mask  # an empty memory attends to nothing
    return jnp.einsum("bm,bmd->bd", p, memory)


class MemN2N(nn.Module):
    """Response selection: logits over a candidate set for each (memory, query) example.

    Parameters: ``A`` (memory and query embedding), ``W`` (candidate embedding), ``H`` (between hops) and
    ``target_projection``. ``__call__`` is the whole model; ``embed_texts``, ``embed_candidates`` and ``scores``
    are its parts, so an evaluation can embed a pool's texts and candidates once for all its batches.
    """

    vocab_size: int
    embedding_size: int = 20
    hops: int = 3
    target_projection: bool = True

    def setup(self):
        self.A = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init)
        self.W = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init)
        self.H = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init)
        if self.target_projection:
            self.projection = self.param("target_projection", lambda k, s: jnp.eye(s[0]), (self.embedding_size,) * 2)

    def embed_texts(self, texts: dict[str, jax.Array]) -> jax.Array:
        """(U, d) embeddings of the text table's rows (flat form, see ``metadial.data.dialog_batches``)."""
        return text_bag_of_words(self.A, texts)

    def embed_candidates(self, candidates: dict[str, jax.Array]) -> jax.Array:
        """(C, d) embeddings of a flat candidate set."""
        return candidate_bag_of_words(self.W, candidates)

    def query_state(self, text_embeddings: jax.Array, memory: Memory, query: jax.Array, task: jax.Array) -> jax.Array:
        """(B, d) final state ``u`` given the embedded text table: a candidate's logit is ``u`` dot its embedding."""
        m, mask = memory_bag_of_words(self.A, text_embeddings, memory)
        u = bag_of_words(self.A, query)
        for _ in range(self.hops):
            u = self.H(u) + attend(u, m, mask)
        if self.target_projection:
            u = jnp.where((task == TARGET_TASK)[:, None], u @ self.projection, u)
        return u

    def scores(
        self,
        text_embeddings: jax.Array,
        memory: Memory,
        query: jax.Array,
        candidate_embeddings: jax.Array,
        task: jax.Array,
    ) -> jax.Array:
        """Logits (B, C) given the embedded text table and candidates."""
        return self.query_state(text_embeddings, memory, query, task) @ candidate_embeddings.T

    def __call__(
        self,
        memory: Memory,
        texts: dict[str, jax.Array],
        query: jax.Array,
        candidates: dict[str, jax.Array],
        task: jax.Array,
    ) -> jax.Array:
        """Logits (B, C) of the flat ``candidates`` for memories (``memory`` rows of the text table ``texts`` and
        their tags), queries (B, L) and task ids (B,)."""
        return self.scores(self.embed_texts(texts), memory, query, self.embed_candidates(candidates), task)


class MemoryGate(nn.Module):
    """The weighting network of the dialog experiment: a 1-hop memory network over (memory, query) with its
    own embeddings, giving one score per example (weight = sigmoid(score))."""

    vocab_size: int
    embedding_size: int = 20

    @nn.compact
    def __call__(self, memory: Memory, texts: dict[str, jax.Array], query: jax.Array) -> jax.Array:
        embed = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=_init)
        m, mask = memory_bag_of_words(embed, text_bag_of_words(embed, texts), memory)
        u = bag_of_words(embed, query)
        h = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init)(u) + attend(u, m, mask)
        return nn.Dense(1)(h)[..., 0]


def response_loss_fn(model: MemN2N) -> OutputLoss:
    """``loss_fn(params, batch) -> (B,)`` cross-entropy over the batch's own candidate set (an ``OutputLoss``:
    the candidates' scores, then the cross-entropy)."""

    def logits(params, batch):
        return apply_model(
            model, params, batch["memory"], batch["texts"], batch["query"], batch["candidates"], batch["task"]
        )

    return OutputLoss(logits, cross_entropy("answer"))


def pool_embeddings(model: MemN2N, params, texts: dict[str, jax.Array], candidates: dict[str, jax.Array]) -> tuple:
    """(text table embeddings, candidate embeddings) of a pool, computed once for all of an evaluation's batches."""
    return (
        apply_model(model, params, texts, method=MemN2N.embed_texts),
        apply_model(model, params, candidates, method=MemN2N.embed_candidates),
    )


CANDIDATE_CHUNK = 4096  # candidates scored at a time by ``predict``; its (B, chunk) logits stay in cache on CPU


def best_candidate(u: jax.Array, candidate_embeddings: jax.Array, chunk: int | None = CANDIDATE_CHUNK) -> jax.Array:
    """Index of the highest logit ``u @ candidate_embeddings.T`` per row (the first of ties), without materialising
    the (B, C) logits: the candidates are scored in ``ceil(C / chunk)`` equal chunks under ``lax.scan``, keeping
    the running best. Each logit is the same dot product as in the full matrix, so the answer is the full
    argmax's (``tests/test_memn2n.py``); on 2 CPU cores and 43863 candidates an evaluation takes about half the
    time. ``chunk=None`` scores all candidates at once (one matrix product; likely better on an accelerator)."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"best_candidate: chunk must be a positive number of candidates or None, got {chunk}")
    num = candidate_embeddings.shape[0]
    if chunk is None or chunk >= num:
        return jax.lax.top_k(u @ candidate_embeddings.T, 1)[1][:, 0]  # the argmax (first of ties), faster on CPU
    n = -(-num // chunk)
    size = -(-num // n)  # equal chunks, the last padded by fewer than n rows
    padded = jnp.pad(candidate_embeddings, ((0, n * size - num), (0, 0))).reshape(n, size, -1)

    def scan_chunk(carry, xs):
        best, arg = carry
        i, block = xs
        logits = u @ block.T
        logits = jnp.where(i * size + jnp.arange(size) < num, logits, -jnp.inf)  # the padding rows never win
        value, index = logits.max(-1), jnp.argmax(logits, -1).astype(jnp.int32) + i * size
        better = value > best  # strictly: an earlier chunk keeps a tie
        return (jnp.where(better, value, best), jnp.where(better, index, arg)), None

    init = (jnp.full(u.shape[:1], -jnp.inf, u.dtype), jnp.zeros(u.shape[:1], jnp.int32))
    (_, arg), _ = jax.lax.scan(scan_chunk, init, (jnp.arange(n), padded))
    return arg


def predict(
    model: MemN2N, params, batch, embeddings: tuple | None = None, chunk: int | None = CANDIDATE_CHUNK
) -> jax.Array:
    """Index of the best-scoring candidate per example (``embeddings``: ``pool_embeddings`` of the batch's
    pool, if already computed; ``chunk``: see ``best_candidate``)."""
    text_emb, cand_emb = embeddings or pool_embeddings(model, params, batch["texts"], batch["candidates"])
    u = apply_model(model, params, text_emb, batch["memory"], batch["query"], batch["task"], method=MemN2N.query_state)
    return best_candidate(u, cand_emb, chunk)
