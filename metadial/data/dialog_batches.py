"""Device-side batches of the dialog experiment: gather fixed-shape memories inside the jitted step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metadial.data.dialog_tasks import EncodedSplit

Pool = dict[str, Any]  # arrays, and the flat candidate set (a dict of arrays)


def flat_candidates(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """A (C, L) padded candidate token matrix as its non-padding tokens: ``tokens`` and the ``segment``
    (candidate index) of each, plus ``length`` (C,) whose shape carries the number of candidates."""
    rows, cols = np.nonzero(matrix)
    return {
        "tokens": matrix[rows, cols].astype(np.int32),
        "segment": rows.astype(np.int32),
        "length": (matrix > 0).sum(axis=1).astype(np.int32),
    }


def device_pool(split: EncodedSplit, task: int, candidates: np.ndarray) -> Pool:
    """The split's arrays on the device, with its task id and its (C, L) candidate matrix in flat form."""
    return {
        "store": jnp.asarray(split.store),
        "dialog": jnp.asarray(split.dialog),
        "memory_len": jnp.asarray(split.memory_len),
        "query": jnp.asarray(split.query),
        "answer": jnp.asarray(split.answer),
        "task": jnp.full(len(split), task, jnp.int32),
        "candidates": {k: jnp.asarray(v) for k, v in flat_candidates(candidates).items()},
    }


def gather_batch(pool: Pool, idx: jax.Array, memory_size: int) -> dict[str, jax.Array]:
    """Examples ``idx`` of ``pool``; each memory holds the most recent ``memory_size`` sentences (left-padded)."""
    n = pool["memory_len"][idx]
    pos = n[:, None] - memory_size + jnp.arange(memory_size)[None, :]
    memory = pool["store"][pool["dialog"][idx][:, None], jnp.maximum(pos, 0)] * (pos >= 0)[..., None]
    return {
        "memory": memory,
        "query": pool["query"][idx],
        "answer": pool["answer"][idx],
        "task": pool["task"][idx],
        "id": idx,
        "candidates": pool["candidates"],
    }


def sample_batch(pool: Pool, key: jax.Array, batch_size: int, memory_size: int) -> dict[str, jax.Array]:
    """A batch drawn uniformly with replacement."""
    idx = jax.random.randint(key, (batch_size,), 0, pool["answer"].shape[0])
    return gather_batch(pool, idx, memory_size)
