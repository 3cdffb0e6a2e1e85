"""Device-side batches of the dialog experiment: gather fixed-shape memories inside the jitted step.

A pool stores each dialog's memory sentences as a *text table*: every distinct sentence text (without its
speaker and time tokens) once, in ``texts``, and per dialog and position its text's row (``store_text``) and
its two tags (speaker and time tokens, ``store_tags``). A bag-of-words embedding is a sum, so a memory
sentence's embedding is its text's embedding plus its tags'; the model embeds each distinct text once per step
instead of every padded memory slot's tokens (``metadial.models.memn2n``). Candidates are kept the same way:
the tokens that many candidates share form a few *templates*, embedded once, plus each candidate's own rare
tokens (``flat_candidates``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metadial.data.dialog_tasks import EncodedSplit

Pool = dict[str, Any]  # arrays, the text table and the candidate set (dicts of arrays)
TEMPLATE_MIN_COUNT = 50  # a candidate token shared by at least this many candidates belongs to the templates


def flat_candidates(matrix: np.ndarray, min_count: int = TEMPLATE_MIN_COUNT) -> dict[str, np.ndarray]:
    """A (C, L) padded candidate token matrix as templates plus rare tokens (only non-padding tokens).

    A token in at least ``min_count`` candidates is *common*; a candidate's common tokens (with repeats, in
    sorted order) are its template. Returns ``template_tokens`` / ``template_segment`` (the templates' tokens and
    the template of each), ``template`` (C,) each candidate's template, ``tokens`` / ``segment`` (the rare
    tokens and the candidate of each), and ``length`` (C,) tokens per candidate (its shape carries C; the
    number of templates is the shape of ``template_length``)."""
    rows = [row[row > 0] for row in np.asarray(matrix)]
    count = Counter(t for row in rows for t in set(row.tolist()))
    template_ids: dict[tuple, int] = {}
    template_of, rare_tokens, rare_segment = [], [], []
    for c, row in enumerate(rows):
        common = tuple(sorted(t for t in row.tolist() if count[t] >= min_count))
        template_of.append(template_ids.setdefault(common, len(template_ids)))
        rare = [t for t in row.tolist() if count[t] < min_count]
        rare_tokens += rare
        rare_segment += [c] * len(rare)
    templates = list(template_ids)
    i32 = lambda x: np.asarray(x, np.int32)
    return {
        "template_tokens": i32([t for tpl in templates for t in tpl]),
        "template_segment": i32([i for i, tpl in enumerate(templates) for _ in tpl]),
        "template_length": i32([len(tpl) for tpl in templates]),
        "template": i32(template_of),
        "tokens": i32(rare_tokens),
        "segment": i32(rare_segment),
        "length": i32([len(row) for row in rows]),
    }


def text_table(store: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits a (D, S, L) store whose sentences end in a speaker and a time token into ``(texts, text, tags)``:
    the distinct texts (U, L - 2) (row 0 is the empty text), each slot's text row (D, S) and its two tags
    (D, S, 2); an empty slot has text 0 and tags 0."""
    store = np.asarray(store)
    length = (store > 0).sum(-1)  # tokens are left-aligned: the text, then speaker and time
    position = np.arange(store.shape[-1])
    text = np.where(position < (length - 2)[..., None], store, 0)[..., : store.shape[-1] - 2]
    tags = np.stack([np.take_along_axis(store, np.maximum(length - k, 0)[..., None], -1)[..., 0] for k in (2, 1)], -1)
    tags = np.where(length[..., None] > 0, tags, 0)
    flat = text.reshape(-1, text.shape[-1])
    texts, inverse = np.unique(np.concatenate([np.zeros_like(flat[:1]), flat]), axis=0, return_inverse=True)
    return texts.astype(np.int32), inverse[1:].reshape(text.shape[:2]).astype(np.int32), tags.astype(np.int32)


def device_pool(split: EncodedSplit, task: int, candidates: np.ndarray) -> Pool:
    """The split's arrays on the device, its memory sentences as a text table (the table's tokens in flat form:
    ``tokens``, their ``segment`` (row), ``length`` per row), its task id and its (C, L) candidate matrix in flat
    form."""
    texts, store_text, store_tags = text_table(split.store)
    rows, cols = np.nonzero(texts)
    return {
        # the text table's real tokens and the row of each (a segment sum embeds the table without padding)
        "texts": {
            "tokens": jnp.asarray(texts[rows, cols], jnp.int32),
            "segment": jnp.asarray(rows, jnp.int32),
            "length": jnp.asarray((texts > 0).sum(1), jnp.int32),
        },
        "store_text": jnp.asarray(store_text),
        "store_tags": jnp.asarray(store_tags),
        "dialog": jnp.asarray(split.dialog),
        "memory_len": jnp.asarray(split.memory_len),
        "query": jnp.asarray(split.query),
        "answer": jnp.asarray(split.answer),
        "task": jnp.full(len(split), task, jnp.int32),
        "candidates": {k: jnp.asarray(v) for k, v in flat_candidates(candidates).items()},
    }


SHARED_KEYS = ("texts", "candidates")  # batch entries every example shares (not split over devices)


def gather_batch(pool: Pool, idx: jax.Array, memory_size: int) -> dict[str, Any]:
    """Examples ``idx`` of ``pool``; each memory holds the most recent ``memory_size`` sentences (left-padded):
    ``memory`` is ``{"text": (B, M) text rows, "tags": (B, M, 2) tokens}``; the pool's ``texts`` and
    ``candidates`` come along (``SHARED_KEYS``)."""
    n = pool["memory_len"][idx]
    pos = n[:, None] - memory_size + jnp.arange(memory_size)[None, :]
    dialog, valid = pool["dialog"][idx][:, None], pos >= 0
    pos = jnp.maximum(pos, 0)
    return {
        "memory": {
            "text": pool["store_text"][dialog, pos] * valid,
            "tags": pool["store_tags"][dialog, pos] * valid[..., None],
        },
        "texts": pool["texts"],
        "query": pool["query"][idx],
        "answer": pool["answer"][idx],
        "task": pool["task"][idx],
        "id": idx,
        "candidates": pool["candidates"],
    }


def sample_batch(pool: Pool, key: jax.Array, batch_size: int, memory_size: int) -> dict[str, Any]:
    """A batch drawn uniformly with replacement."""
    idx = jax.random.randint(key, (batch_size,), 0, pool["answer"].shape[0])
    return gather_batch(pool, idx, memory_size)
