r"""The ideal noisy-label experiment: can meta-learned weights ignore the related task's wrong labels?

    python -m experiments.ideal --config=configs/ideal.py [--config.FIELD=VALUE ...] --workdir=DIR

Writes ``DIR/results.json`` (one record per (method, seed)) and ``DIR/summary.md`` (mean ± std table).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments.common import (RunStore, as_list, check_methods, check_positive, make_trainer, run_launcher,
                                summary_table, write_outputs)
from metadial.data.ideal import IdealTask, make_ideal_task
from metadial.io import atomic_write_json
from metadial.loop import train_loop
from metadial.metrics import roc_auc
from metadial.parallel import check_batch_size, data_mesh, replicate, shard_batch
from metadial.models.mlp import MLPClassifier, accuracy, classification_loss_fn
from metadial.weighting import MLPScorer, NetWeighting

METHODS = ("target_only", "union", "pretrain_finetune", "oracle", "l2rw", "meta_table", "meta_net")
WEIGHTED = ("l2rw", "meta_table", "meta_net")
NET_INPUTS = ("x", "flag", "label")
DEVICE_KEYS = ("x", "flag", "y", "id")



def validate_config(config: ml_collections.ConfigDict) -> list[str]:
    """Checks the config before any training; returns the list of methods."""
    methods = check_methods(config.methods, METHODS)
    check_positive(config, ["num_classes", "input_dim", "num_target", "num_related", "num_test", "num_seeds",
                            "train_steps", "batch_size", "related_batch_size", "learning_rate",
                            "meta_learning_rate", "table_meta_learning_rate", "inner_steps", "log_every", "checkpoint_every",
                            "keep_checkpoints"])
    inputs = as_list(config.weight_net_inputs)
    bad_inputs = [i for i in inputs if i not in NET_INPUTS]
    if bad_inputs or not inputs:
        raise ValueError(f"config.weight_net_inputs has {bad_inputs or 'nothing'}; allowed: {NET_INPUTS}")
    if not 0.0 <= config.corrupt_fraction < 1.0:
        raise ValueError(f"config.corrupt_fraction must be in [0, 1), got {config.corrupt_fraction}")
    return methods


def model_inputs(config) -> Callable[[dict], jax.Array]:
    if config.model_sees_flag:
        return lambda b: jnp.concatenate([b["x"], b["flag"][:, None]], axis=-1)
    return lambda b: b["x"]


def weight_net_inputs(config) -> Callable[[dict], jax.Array]:
    parts = {
        "x": lambda b: b["x"],
        "flag": lambda b: b["flag"][:, None],
        "label": lambda b: jax.nn.one_hot(b["y"], config.num_classes),
    }
    chosen = [parts[name] for name in as_list(config.weight_net_inputs)]
    return lambda b: jnp.concatenate([f(b) for f in chosen], axis=-1)


def sample(data: dict[str, jax.Array], key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """A batch drawn uniformly with replacement from ``data``."""
    n = data["y"].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {k: v[idx] for k, v in data.items()}


class MethodProgram:
    """The jit-compiled training step of one method, built once and reused for every seed."""

    def __init__(self, method: str, config: ml_collections.ConfigDict, remat: bool = False):
        self.method, self.config = method, config
        self.module = MLPClassifier(config.num_classes, tuple(config.hidden_sizes))
        self.inputs_fn = model_inputs(config)
        self.loss_fn = classification_loss_fn(self.module, self.inputs_fn)
        self.trainer, self.weighting = make_trainer(
            method, self.loss_fn, config, config.num_related,
            lambda: NetWeighting(MLPScorer(tuple(config.weight_net_hidden)), weight_net_inputs(config)), remat)
        self.mesh = data_mesh()
        check_batch_size(config.batch_size, self.mesh)
        check_batch_size(config.related_batch_size, self.mesh, "related_batch_size")
        self.train_step = jax.jit(self._train_step, static_argnames="phase")
        if method == "l2rw":  # built once: a jit made per call would recompile for every seed
            self.l2rw_weights = jax.jit(self.trainer.example_weights)

    def init(self, key: jax.Array, data: dict[str, dict[str, jax.Array]]):
        k_model, k_meta = jax.random.split(key)
        example = sample(data["target"], k_model, 1)
        params = self.module.init(k_model, self.inputs_fn(example))
        if self.weighting is None:
            return self.trainer.init(params)
        meta_params = self.weighting.init(k_meta, sample(data["related"], k_meta, 1))
        return self.trainer.init(params, meta_params)

    def _train_step(self, state, key, data, phase: str = "main"):
        c = self.config
        k_t, k_r, k_o = jax.random.split(key, 3)
        shard = lambda b: shard_batch(b, self.mesh)
        target = shard(sample(data["target"], k_t, c.batch_size))
        if self.method == "target_only" or (self.method == "pretrain_finetune" and phase == "finetune"):
            return self.trainer.step(state, target)
        related_pool = data["related_correct"] if self.method == "oracle" else data["related"]
        related = shard(sample(related_pool, k_r, c.related_batch_size))
        if self.method == "pretrain_finetune":
            return self.trainer.step(state, related)
        if self.method in ("union", "oracle"):
            return self.trainer.step(state, target, related)
        return self.trainer.step(state, target, related, shard(sample(data["target"], k_o, c.batch_size)))

    def weight_means(self, state, data) -> dict[str, float]:
        """Mean learned weight of the correct and the corrupted related examples (meta methods)."""
        w = np.asarray(self.weighting.weights(state.meta_params, data["related"]))
        correct = np.asarray(data["related"]["flag"]) > 0.5
        return {"weight_correct": float(w[correct].mean()) if correct.any() else float("nan"),
                "weight_corrupted": float(w[~correct].mean()) if (~correct).any() else float("nan")}

    def related_weights(self, state, key: jax.Array, data) -> np.ndarray | None:
        """The learned weight of every related example (None for unweighted methods).

        For l2rw the weights are recomputed at the final parameters over shuffled batches of the training
        batch size and scaled by that size (so a batch's weights average 1).
        """
        if self.method in ("meta_table", "meta_net"):
            return np.asarray(self.weighting.weights(state.meta_params, data["related"]))
        if self.method != "l2rw":
            return None
        b = self.config.related_batch_size
        n = data["related"]["y"].shape[0]
        k_perm, key = jax.random.split(key)
        order = np.asarray(jax.random.permutation(k_perm, n))
        order = np.concatenate([order, order[: (-n) % b]])  # pad to whole batches
        out = np.zeros(n, np.float32)
        for start in range(len(order) - b, -1, -b):  # backwards, so the padded copies are overwritten
            key, k_t, k_o = jax.random.split(key, 3)
            idx = order[start:start + b]
            batch = {k: v[idx] for k, v in data["related"].items()}
            w = self.l2rw_weights(state, sample(data["target"], k_t, self.config.batch_size), batch,
                           sample(data["target"], k_o, self.config.batch_size))
            out[idx] = np.asarray(w) * b
        return out


def device_data(task: IdealTask) -> dict[str, dict[str, jax.Array]]:
    pick = lambda split, mask=None: {k: jnp.asarray(split[k] if mask is None else split[k][mask]) for k in DEVICE_KEYS}
    return {
        "target": pick(task.target),
        "related": pick(task.related),
        "related_correct": pick(task.related, task.related["correct"]),
    }


def run_one(program: MethodProgram, task: IdealTask, seed: int,
            store: RunStore) -> tuple[dict[str, Any], np.ndarray | None]:
    """Trains one method on one seed's task (resuming from its checkpoint if any); returns its record and
    the learned weights of the related examples (None for unweighted methods)."""
    c = program.config
    data = replicate(device_data(task), program.mesh)
    k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    name = f"{program.method}-seed{seed}"
    half = c.train_steps // 2

    def step_fn(state, key, step):
        phase = "finetune" if program.method == "pretrain_finetune" and step >= half else "main"
        return program.train_step(state, key, data, phase=phase)

    result = train_loop(
        step_fn, replicate(program.init(k_init, data), program.mesh), k_train, num_steps=c.train_steps, name=name, log_every=c.log_every,
        checkpointer=store.checkpointer(name), checkpoint_every=c.checkpoint_every,
        metrics_log=store.metrics_log(name, {"method": program.method, "seed": seed}, c.tensorboard),
        log_metrics=(lambda state: program.weight_means(state, data)) if program.weighting is not None else None)
    state = result.state
    test = {k: jnp.asarray(task.test[k]) for k in DEVICE_KEYS}
    test_acc = float(accuracy(program.module, state.params, program.inputs_fn(test), test["y"]))
    record = {"method": program.method, "seed": seed, "test_accuracy": test_acc, "weight_auc": None,
              "mean_weight_correct": None, "mean_weight_corrupted": None, "resumed_from_step": result.resumed_from}
    weights = program.related_weights(state, k_eval, data)
    if weights is not None:
        correct = task.related["correct"]
        record["weight_auc"] = roc_auc(weights, correct)
        record["mean_weight_correct"] = float(weights[correct].mean()) if correct.any() else None
        record["mean_weight_corrupted"] = float(weights[~correct].mean()) if (~correct).any() else None
    return record, weights


SUMMARY_COLUMNS = [
    ("test_accuracy", "test accuracy (%)", 100.0, 1),
    ("weight_auc", "weight AUC", 1.0, 3),
    ("mean_weight_correct", "mean weight, correct", 1.0, 3),
    ("mean_weight_corrupted", "mean weight, corrupted", 1.0, 3),
]


def summarize(records: list[dict], config) -> str:
    head = (f"Ideal task: {config.num_classes} classes, {config.num_target} target / {config.num_related} related "
            f"({config.corrupt_fraction:.0%} {config.corruption} wrong labels) / {config.num_test} test examples, "
            f"{config.train_steps} steps; mean ± std over seeds.\n\n")
    return head + summary_table(records, ["method"], SUMMARY_COLUMNS)


def run(config: ml_collections.ConfigDict, workdir: str | None) -> list[dict]:
    """Runs every method × seed of the config; writes results after each run if ``workdir`` is set.

    Re-running with the same workdir skips finished runs and resumes the unfinished one."""
    methods = validate_config(config)
    store = RunStore(workdir, config, config.keep_checkpoints)
    records = store.records
    weights_path = os.path.join(workdir, "related_weights.json") if workdir else None
    weight_runs = store.finished_weight_runs(weights_path, ("method", "seed"))
    tasks = {}
    for method in methods:
        program = MethodProgram(method, config)
        for seed in range(config.seed, config.seed + config.num_seeds):
            if store.done(method=method, seed=seed):
                continue
            if seed not in tasks:
                tasks[seed] = make_ideal_task(
                    jax.random.PRNGKey(10_000 + seed), num_classes=config.num_classes, input_dim=config.input_dim,
                    num_target=config.num_target, num_related=config.num_related, num_test=config.num_test,
                    corrupt_fraction=config.corrupt_fraction, corruption=config.corruption)
            t0 = time.time()
            record, weights = run_one(program, tasks[seed], seed, store)
            record["wall_seconds"] = round(time.time() - t0, 2)
            records.append(record)
            logging.info("done %s", record)
            if weights is not None:
                weight_runs.append({"method": method, "seed": seed, "weights": [round(float(w), 5) for w in weights],
                                    "correct": tasks[seed].related["correct"].astype(int).tolist()})
            if workdir:
                if weights is not None:  # written before results.json, which marks the run as done
                    atomic_write_json(weights_path, {"runs": weight_runs})
                write_outputs(workdir, records, summarize(records, config))
    return records


if __name__ == "__main__":
    run_launcher(run, "configs/ideal.py", "results.json, summary.md, metrics, checkpoints")
