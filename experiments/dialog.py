r"""Personalized restaurant reservation from little data plus the related bAbI dialog task 5.

    python -m experiments.dialog --config=configs/dialog.py [--config.FIELD=VALUE ...] --workdir=DIR

Target: personalized bAbI dialog task 5 (small set; training subsets of ``target_dialogs`` dialogs). Related:
the original bAbI dialog task 5 training set. Model: MemN2N. Writes ``DIR/results.json`` (one record per
(method, target_dialogs, seed)), ``DIR/summary.md`` and, for weighted methods, ``DIR/related_weights.json``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments.common import (RunStore, added_field, as_list, check_methods, check_positive, make_trainer,
                                run_launcher, summary_table, write_outputs)
from metadial.data.dialog_batches import Pool, device_pool, gather_batch, sample_batch
from metadial.data.dialog_tasks import Corpus, EncodedSplit, encode, load_corpus, target_subset, turn_kinds
from metadial.io import atomic_write_json
from metadial.loop import train_loop
from metadial.parallel import check_batch_size, data_mesh, replicate, shard_batch
from metadial.steps import stack_batches
from metadial.models.memn2n import RELATED_TASK, TARGET_TASK, MemN2N, MemoryGate, predict, response_loss_fn
from metadial.weighting import NetWeighting

METHODS = ("target_only", "union", "pretrain_finetune", "l2rw", "meta_table", "meta_net")
WEIGHTED = ("l2rw", "meta_table", "meta_net")
OUTER_BATCHES = ("fresh", "target")  # the outer loss's target batch: a second draw, or the inner step's own



def validate_config(config: ml_collections.ConfigDict) -> tuple[list[str], list[int]]:
    """Checks the config before any data is read or model trained; returns (methods, target sizes)."""
    methods = check_methods(config.methods, METHODS)
    sizes = [int(s) for s in as_list(config.target_dialogs)]
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"config.target_dialogs must be positive dialog counts, got {config.target_dialogs}")
    check_positive(config, ["num_seeds", "train_steps", "eval_every", "eval_batch_size", "hops", "embedding_size",
                            "memory_size", "batch_size", "learning_rate", "meta_learning_rate",
                            "table_meta_learning_rate", "gate_embedding_size", "inner_steps", "checkpoint_every",
                            "keep_checkpoints"])
    if not 0.0 < config.pretrain_fraction < 1.0:
        raise ValueError(f"config.pretrain_fraction must be in (0, 1), got {config.pretrain_fraction}")
    if config.max_dialogs < 0:
        raise ValueError(f"config.max_dialogs must be >= 0 (0 = all), got {config.max_dialogs}")
    if added_field(config, "outer_batch") not in OUTER_BATCHES:
        raise ValueError(f"config.outer_batch must be one of {OUTER_BATCHES}, got {config.outer_batch!r}")
    return methods, sizes


class DialogProgram:
    """The jit-compiled training and evaluation functions of one method (reused across sizes and seeds)."""

    def __init__(self, method: str, config: ml_collections.ConfigDict, corpus: Corpus):
        self.method, self.config = method, config
        self.memory_size = min(config.memory_size, corpus.max_sentences)
        self.model = MemN2N(len(corpus.vocab), config.embedding_size, config.hops, config.target_projection)
        self.loss_fn = response_loss_fn(self.model)
        self.trainer, self.weighting = make_trainer(
            method, self.loss_fn, config, sum(len(a) for a in corpus.answers["related_trn"]),
            lambda: NetWeighting(MemoryGate(len(corpus.vocab), config.gate_embedding_size),
                                 lambda b: (b["memory"], b["query"])))
        self.mesh = data_mesh()
        check_batch_size(config.batch_size, self.mesh)
        check_batch_size(config.eval_batch_size, self.mesh, "eval_batch_size")
        self.train_step = jax.jit(self._train_step, static_argnames="phase")
        self.batch_weights = jax.jit(self._batch_weights)  # built once: a jit made per call would recompile
        self.predict = jax.jit(lambda params, pool, idx: predict(self.model, params, shard_batch(
            gather_batch(pool, idx, self.memory_size), self.mesh, unsharded=("candidates",))))

    def _batch(self, pool: Pool, key: jax.Array) -> dict:
        batch = sample_batch(pool, key, self.config.batch_size, self.memory_size)
        return shard_batch(batch, self.mesh, unsharded=("candidates",))

    def init(self, key: jax.Array, pools: dict[str, Pool]):
        k_model, k_meta = jax.random.split(key)
        b = self._batch(pools["target"], k_model)
        params = self.model.init(k_model, b["memory"], b["query"], b["candidates"], b["task"])
        if self.weighting is None:
            return self.trainer.init(params)
        return self.trainer.init(params, self.weighting.init(k_meta, self._batch(pools["related"], k_meta)))

    def _train_step(self, state, key, pools, phase: str = "main"):
        k_t, k_r, k_o = jax.random.split(key, 3)
        target = self._batch(pools["target"], k_t)
        if self.method == "target_only" or (self.method == "pretrain_finetune" and phase == "finetune"):
            return self.trainer.step(state, target)
        related = self._batch(pools["related"], k_r)
        if self.method == "pretrain_finetune":
            return self.trainer.step(state, related)
        if self.method == "union":
            return self.trainer.step(state, target, related)
        outer = self._outer_batch(pools, target, k_o)
        # fresh_inner_batches: the look-ahead's later steps draw batches of their own; the real update uses batch 0
        if added_field(self.config, "fresh_inner_batches") and self.method in ("meta_table", "meta_net"):
            k_more = jax.random.split(jax.random.fold_in(key, 1), 2 * (self.config.inner_steps - 1))
            target = stack_batches([target] + [self._batch(pools["target"], k) for k in k_more[0::2]])
            related = stack_batches([related] + [self._batch(pools["related"], k) for k in k_more[1::2]])
        return self.trainer.step(state, target, related, outer)

    def _outer_batch(self, pools, target: dict, key: jax.Array) -> dict:
        return target if added_field(self.config, "outer_batch") == "target" else self._batch(pools["target"], key)

    def correct(self, params, pool: Pool, split: EncodedSplit) -> np.ndarray:
        """Whether the model ranks the right candidate first, for every example of ``split`` (bool (N,))."""
        return self.per_example(lambda idx: self.predict(params, pool, idx), len(split)) == split.answer

    def per_example(self, fn, n: int) -> np.ndarray:
        """``fn(idx)`` over examples ``0 .. n - 1`` in batches of ``eval_batch_size`` (the last batch wraps around,
        so every call has the same shape), concatenated along the first axis."""
        b = self.config.eval_batch_size
        out = [np.asarray(fn(jnp.asarray(np.arange(start, start + b) % n, jnp.int32)))[: n - start]
               for start in range(0, n, b)]
        return np.concatenate(out)

    def evaluate(self, params, pool: Pool, split: EncodedSplit) -> tuple[float, float]:
        """(per-response accuracy, per-dialog accuracy) over every example of ``split``."""
        return accuracies(self.correct(params, pool, split), split)

    def related_weights(self, state, key: jax.Array, pools: dict[str, Pool], num_related: int) -> np.ndarray | None:
        """Weight of every related example (l2rw: recomputed at the end over batches, scaled by batch size)."""
        if self.method == "meta_table":
            return np.asarray(jax.nn.sigmoid(state.meta_params))
        if self.method not in ("meta_net", "l2rw"):
            return None
        b = self.config.batch_size if self.method == "l2rw" else self.config.eval_batch_size
        out = np.zeros(num_related, np.float32)
        for i, start in enumerate(range(0, num_related, b)):
            idx = np.arange(start, start + b) % num_related
            w = np.asarray(self.batch_weights(state, jax.random.fold_in(key, i), pools, jnp.asarray(idx, jnp.int32)))
            out[idx[: num_related - start]] = w[: num_related - start]
        return out

    def kind_means(self, state, pools, kind_ids: np.ndarray, kind_names: list[str]) -> dict[str, float]:
        """Mean learned weight of each kind of related bot turn (meta methods), for the training log."""
        w = self.related_weights(state, jax.random.PRNGKey(0), pools, len(kind_ids))
        sums, counts = np.bincount(kind_ids, w, len(kind_names)), np.bincount(kind_ids, minlength=len(kind_names))
        return {f"weight_{k}": float(s / n) for k, s, n in zip(kind_names, sums, counts) if n}

    def _batch_weights(self, state, key, pools, idx):
        related = gather_batch(pools["related"], idx, self.memory_size)
        if self.method == "meta_net":
            return self.weighting.weights(state.meta_params, related)
        k_t, k_o = jax.random.split(key)
        target = self._batch(pools["target"], k_t)
        w = self.trainer.example_weights(state, target, related, self._outer_batch(pools, target, k_o))
        return w * idx.shape[0]


def accuracies(correct: np.ndarray, split: EncodedSplit) -> tuple[float, float]:
    """(per-response, per-dialog) accuracy; a dialog counts only if every one of its responses is right."""
    per_dialog = np.ones(split.store.shape[0], bool)
    np.logical_and.at(per_dialog, split.dialog, correct)
    return float(correct.mean()), float(per_dialog.mean())


def kind_ids(kinds: list[str]) -> tuple[np.ndarray, list[str]]:
    """(index of each example's kind in the sorted kind names, those names)."""
    names = sorted(set(kinds))
    return np.asarray([names.index(k) for k in kinds]), names


def mean_by_kind(values: np.ndarray, kinds) -> dict[str, float]:
    """Mean of ``values`` over the examples of each kind of bot turn (greeting, api_call, ...), sorted by kind."""
    kinds_arr = np.asarray(kinds)
    return {k: float(np.asarray(values)[kinds_arr == k].mean()) for k in sorted(set(kinds_arr.tolist()))}


def accuracy_by_kind(correct: np.ndarray, kinds: list[str]) -> dict[str, float]:
    """Per-response accuracy of each kind of bot turn."""
    return mean_by_kind(correct, kinds)


def run_name(method: str, size: int, seed: int) -> str:
    """The name of one run: its checkpoint folder, metrics tag and log prefix."""
    return f"{method}-{size}-seed{seed}"


def target_train_pool(corpus: Corpus, size: int, seed: int) -> Pool:
    """The device pool of the ``size`` target training dialogs drawn for ``seed`` (nested across sizes)."""
    subset = target_subset(len(corpus.dialogs["target_trn"]), size, seed)
    return device_pool(encode(corpus, "target_trn", subset), TARGET_TASK, corpus.target_candidates)


def run_one(program: DialogProgram, data: dict[str, Any], seed: int, size: int,
            store: RunStore) -> tuple[dict, np.ndarray | None]:
    """Trains one (method, size, seed) with dev model selection (resuming from its checkpoint if any);
    returns its record and the related examples' weights."""
    c = program.config
    data = {k: replicate(v, program.mesh) if k.endswith("_pool") or k == "target_train" else v for k, v in data.items()}
    pools = {"target": data["target_train"], "related": data["related_pool"]}
    k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    pretrain_steps = int(c.train_steps * c.pretrain_fraction)
    name = run_name(program.method, size, seed)

    def step_fn(state, key, step):
        phase = "finetune" if program.method == "pretrain_finetune" and step >= pretrain_steps else "main"
        return program.train_step(state, key, pools, phase=phase)

    start = time.time()
    result = train_loop(
        step_fn, replicate(program.init(k_init, pools), program.mesh), k_train, num_steps=c.train_steps, name=name, log_every=c.eval_every,
        evaluate=lambda state: program.evaluate(state.params, data["dev_pool"], data["dev"])[0],
        eval_every=c.eval_every, checkpointer=store.checkpointer(name), checkpoint_every=c.checkpoint_every,
        metrics_log=store.metrics_log(name, {"method": program.method, "target_dialogs": size, "seed": seed},
                                      c.tensorboard),
        log_metrics=((lambda state: program.kind_means(state, pools, *data["related_kind_ids"]))
                     if program.method in ("meta_table", "meta_net") else None))
    best_state = result.best_state
    test_correct = program.correct(best_state.params, data["test_pool"], data["test"])
    test = accuracies(test_correct, data["test"])
    oov = program.evaluate(best_state.params, data["oov_pool"], data["oov"])
    record = {
        "method": program.method, "seed": seed, "target_dialogs": size,
        "test_response_accuracy": test[0], "test_dialog_accuracy": test[1],
        "oov_response_accuracy": oov[0], "oov_dialog_accuracy": oov[1],
        "dev_response_accuracy": result.best_score, "train_steps": c.train_steps, "best_step": result.best_step,
        "resumed_from_step": result.resumed_from,
        "test_accuracy_by_kind": accuracy_by_kind(test_correct, data["test_kinds"]),
    }
    weights = program.related_weights(best_state, k_eval, pools, len(data["related"]))
    record["wall_seconds"] = round(time.time() - start, 1)
    return record, weights


SUMMARY_COLUMNS = [
    ("test_response_accuracy", "test per-response (%)", 100.0, 1),
    ("test_dialog_accuracy", "test per-dialog (%)", 100.0, 1),
    ("oov_response_accuracy", "OOV per-response (%)", 100.0, 1),
    ("oov_dialog_accuracy", "OOV per-dialog (%)", 100.0, 1),
    ("dev_response_accuracy", "dev per-response (%)", 100.0, 1),
    ("wall_seconds", "seconds per run", 1.0, 0),
]


def kind_table(weight_runs: list[dict], kinds: list[str]) -> str:
    """Mean weight of each kind of related bot turn, mean ± std over seeds, per (method, target_dialogs)."""
    kind_names = sorted(set(kinds))
    rows = [dict(method=run["method"], target_dialogs=run["target_dialogs"], **mean_by_kind(run["weights"], kinds))
            for run in weight_runs]
    return summary_table(rows, ["method", "target_dialogs"], [(k, k, 1.0, 2) for k in kind_names])


def summarize(records: list[dict], weight_runs: list[dict], kinds: list[str], config) -> str:
    text = (f"Personalized bAbI dialog task 5 (regenerated, small set) with bAbI dialog task 5 as related data; "
            f"{config.train_steps} steps of batch {config.batch_size}, model selected on dev every "
            f"{config.eval_every} steps; mean ± std over seeds.\n\n")
    text += summary_table(records, ["method", "target_dialogs"], SUMMARY_COLUMNS)
    if weight_runs:
        text += ("\nMean learned weight of the related examples by kind of bot turn (l2rw: recomputed at the "
                 "selected parameters, scaled so that a batch averages 1):\n\n")
        text += kind_table(weight_runs, kinds)
    by_kind = kind_accuracy_table(records, ["method", "target_dialogs"])
    if by_kind:
        text += ("\nTest per-response accuracy (%) by kind of target bot turn (the kinds of the weight table, "
                 "matched to their personalized rewordings):\n\n") + by_kind
    return text


def kind_accuracy_table(records: list[dict], group_keys: list[str]) -> str:
    """Per-kind test accuracy (%), mean ± std per group, over the records that have it ("" if none does)."""
    rows = [dict(r, **{f"kind_{k}": v for k, v in r["test_accuracy_by_kind"].items()})
            for r in records if "test_accuracy_by_kind" in r]
    if not rows:
        return ""
    names = sorted({k for r in records for k in r.get("test_accuracy_by_kind", {})})
    return summary_table(rows, group_keys, [(f"kind_{k}", k, 100.0, 1) for k in names])


def load_data(config) -> tuple[Corpus, dict[str, Any]]:
    corpus = load_corpus(config.data_dir, config.max_dialogs or None)
    related = encode(corpus, "related_trn")
    data = {"related": related, "related_pool": device_pool(related, RELATED_TASK, corpus.related_candidates)}
    for name, split in [("dev", "target_dev"), ("test", "target_tst"), ("oov", "target_tst-OOV")]:
        data[name] = encode(corpus, split)
        data[f"{name}_pool"] = device_pool(data[name], TARGET_TASK, corpus.target_candidates)
    data["test_kinds"] = turn_kinds(data["test"])
    data["related_kinds"] = turn_kinds(related)
    data["related_kind_ids"] = kind_ids(data["related_kinds"])
    return corpus, data


def run(config: ml_collections.ConfigDict, workdir: str | None,
        loaded: tuple[Corpus, dict[str, Any]] | None = None) -> list[dict]:
    """Runs every method × target size × seed; writes outputs after each run if ``workdir`` is set.

    Re-running with the same workdir skips finished runs and resumes the unfinished one. ``loaded`` is
    ``load_data(config)``, if the caller already has it."""
    methods, sizes = validate_config(config)
    corpus, data = loaded or load_data(config)
    num_train = len(corpus.dialogs["target_trn"])
    for size in sizes:
        if size > num_train:
            raise ValueError(f"config.target_dialogs={size} exceeds the {num_train} training dialogs available")
    store = RunStore(workdir, config, config.keep_checkpoints)
    records = store.records
    weights_path = os.path.join(workdir, "related_weights.json") if workdir else None
    weight_runs = store.finished_weight_runs(weights_path, ("method", "target_dialogs", "seed"))
    related = data["related"]
    kinds = data["related_kinds"]
    examples = [{"example_id": i, "dialog_id": int(related.dialog_id[i]), "turn": int(related.turn[i]),
                 "bot": related.bot[i], "kind": kinds[i]} for i in range(len(related))]
    for method in methods:
        program = DialogProgram(method, config, corpus)
        for size in sizes:
            for seed in range(config.seed, config.seed + config.num_seeds):
                if store.done(method=method, target_dialogs=size, seed=seed):
                    continue
                run_data = dict(data, target_train=target_train_pool(corpus, size, seed))
                record, weights = run_one(program, run_data, seed, size, store)
                records.append(record)
                logging.info("done %s", record)
                if weights is not None:
                    weight_runs.append({"method": method, "target_dialogs": size, "seed": seed,
                                        "weights": [round(float(w), 5) for w in weights]})
                if workdir:
                    if weights is not None:  # written before results.json, which marks the run as done
                        atomic_write_json(weights_path, {"examples": examples, "runs": weight_runs})
                    write_outputs(workdir, records, summarize(records, weight_runs, kinds, config))
    return records


if __name__ == "__main__":
    run_launcher(run, "configs/dialog.py", "results.json, summary.md, related_weights.json, metrics, checkpoints")
