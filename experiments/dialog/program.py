"""The dialog experiment's program: MemN2N's training step for one method, its evaluation and weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.dialog.data import DialogData, EvalSet
from experiments.shared import methods as m
from experiments.shared.methods import Method
from experiments.shared.program import Batch, Pools, Program
from metadial.data.dialog_batches import SHARED_KEYS, Pool, gather_batch
from metadial.models.memn2n import (
    CANDIDATE_CHUNK,
    MemN2N,
    MemoryGate,
    pool_embeddings,
    predict,
    response_loss_fn,
)
from metadial.parallel import check_batch_size, shard_batch
from metadial.weighting import NetWeighting, TableWeighting

METHODS: dict[str, m.Method] = {
    "target_only": m.TARGET_ONLY,
    "union": m.UNION,
    "pretrain_finetune": m.PRETRAIN_FINETUNE,
    "l2rw": m.L2RW,
    "meta_table": m.META_TABLE,
    "meta_net": m.META_NET,
    "mwnet": m.MWNET,
}


class DialogProgram(Program):
    """The jit-compiled training and evaluation functions of one method (reused across sizes and seeds)."""

    shared_keys = SHARED_KEYS

    def __init__(self, name: str, config: ml_collections.ConfigDict, data: DialogData, method: Method | None = None):
        self.data = data
        corpus = data.corpus
        self.memory_size = min(config.memory_size, corpus.max_sentences)
        self.model = MemN2N(len(corpus.vocab), config.embedding_size, config.hops, config.target_projection)
        weight_net = lambda: NetWeighting(
            MemoryGate(len(corpus.vocab), config.gate_embedding_size), lambda b: (b["memory"], b["texts"], b["query"])
        )
        method = method or METHODS[name]
        super().__init__(name, method, config, response_loss_fn(self.model), data.num_related, weight_net)
        check_batch_size(config.eval_batch_size, self.mesh, "eval_batch_size")
        self.batch_weights = jax.jit(self._batch_weights)  # built once: a jit made per call would recompile
        self.pool_embeddings = jax.jit(
            lambda params, pool: pool_embeddings(self.model, params, pool["texts"], pool["candidates"])
        )
        self.predict = jax.jit(  # compiled once per candidate chunk size (see ``best_candidate``)
            lambda params, pool, idx, embeddings, chunk: predict(
                self.model, params, self.gather(pool, idx), embeddings, chunk
            ),
            static_argnames="chunk",
        )

    def with_method(self, name: str, method: Method) -> DialogProgram:
        return DialogProgram(name, self.config, self.data, method)

    def gather(self, pool: Pool, idx: jax.Array) -> Batch:
        """Examples ``idx`` of ``pool``, sharded over the mesh (the candidate set replicated)."""
        return shard_batch(gather_batch(pool, idx, self.memory_size), self.mesh, unsharded=SHARED_KEYS)

    def pool_size(self, pools: Pools, pool: str) -> int:
        return pools[pool]["answer"].shape[0]

    def batch_at(self, pools: Pools, pool: str, idx: jax.Array) -> Batch:
        return shard_batch(gather_batch(pools[pool], idx, self.memory_size), self.mesh, unsharded=SHARED_KEYS)

    def target_groups(self, pools: Pools) -> np.ndarray:
        return np.asarray(pools["target"]["dialog"])  # held-out folds keep whole dialogs

    def all_related_weights(self, state, pools: Pools) -> jax.Array:
        n = self.pool_size(pools, "related")
        return jnp.asarray(self.related_weights(state, jax.random.key(0), pools, n))

    def init_params(self, key: jax.Array, batch: Batch) -> Any:
        return self.model.init(key, batch["memory"], batch["texts"], batch["query"], batch["candidates"], batch["task"])

    def per_example(self, fn: Callable[[jax.Array], jax.Array], n: int) -> np.ndarray:
        """``fn(idx)`` over examples ``0 .. n - 1`` in batches of ``eval_batch_size`` (the last batch wraps around,
        so every call has the same shape), concatenated along the first axis."""
        b = self.config.eval_batch_size
        out = [
            np.asarray(fn(jnp.asarray(np.arange(start, start + b) % n, jnp.int32)))[: n - start]
            for start in range(0, n, b)
        ]
        return np.concatenate(out)

    def correct(self, params, eval_set: EvalSet, chunk: int | None = CANDIDATE_CHUNK) -> np.ndarray:
        """Whether the model ranks the right candidate first, for every example of ``eval_set`` (bool (N,)).
        The pool's texts and candidates are embedded once for all its batches; ``chunk`` candidates are scored at a
        time (``metadial.models.memn2n.best_candidate``: the same answers for any ``chunk``)."""
        embeddings = self.pool_embeddings(params, eval_set.pool)
        correct = self.per_example(
            lambda idx: self.predict(params, eval_set.pool, idx, embeddings, chunk=chunk), len(eval_set)
        )
        return correct == eval_set.split.answer

    def evaluate(self, params, eval_set: EvalSet) -> tuple[float, float]:
        """(per-response accuracy, per-dialog accuracy) over every example of ``eval_set``."""
        return accuracies(self.correct(params, eval_set), eval_set)

    def related_weights(self, state, key: jax.Array, pools: Pools, num_related: int) -> np.ndarray | None:
        """Weight of every related example (l2rw: recomputed at the end over batches, scaled by batch size)."""
        if self.method.weights is None:
            return None
        if isinstance(self.weighting, TableWeighting):  # the table holds every example's logit
            return np.asarray(jax.nn.sigmoid(state.meta_params))
        b = self.config.batch_size if self.method.weights == "recomputed" else self.config.eval_batch_size
        out = np.zeros(num_related, np.float32)
        for i, start in enumerate(range(0, num_related, b)):
            idx = np.arange(start, start + b) % num_related
            w = np.asarray(self.batch_weights(state, jax.random.fold_in(key, i), pools, jnp.asarray(idx, jnp.int32)))
            out[idx[: num_related - start]] = w[: num_related - start]
        return out

    def kind_means(self, state, pools: Pools, data: DialogData) -> dict[str, float]:
        """Mean learned weight of each kind of related bot turn (meta methods), for the training log."""
        w = self.related_weights(state, jax.random.key(0), pools, data.num_related)
        ids, names = data.related_kind_ids, data.kind_names
        sums, counts = np.bincount(ids, w, len(names)), np.bincount(ids, minlength=len(names))
        return {f"weight_{k}": float(s / n) for k, s, n in zip(names, sums, counts) if n}

    def _batch_weights(self, state, key, pools: Pools, idx):
        related = gather_batch(pools["related"], idx, self.memory_size)
        if self.method.meta:
            return self.trainer.weights(state.params, state.meta_params, related)
        k_t, k_o = jax.random.split(key)
        target = self.batch(pools, "target", k_t)
        outer = target if self.config.outer_batch == "target" else self.batch(pools, "target", k_o)
        return self.trainer.example_weights(state, target, related, outer) * idx.shape[0]


def accuracies(correct: np.ndarray, eval_set: EvalSet) -> tuple[float, float]:
    """(per-response, per-dialog) accuracy; a dialog counts only if every one of its responses is right."""
    per_dialog = np.ones(eval_set.split.store.shape[0], bool)
    np.logical_and.at(per_dialog, eval_set.split.dialog, correct)
    return float(correct.mean()), float(per_dialog.mean())
