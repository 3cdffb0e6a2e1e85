r"""The ideal noisy-label experiment: every method x seed, written to a resumable workdir.

    python -m experiments.ideal [--config=experiments/ideal/configs/default.py] [--config.FIELD=VALUE ...] \
        --workdir=DIR

Writes ``DIR/results.json`` (one record per (method, seed)), ``DIR/summary.md`` (mean ± std table) and
``DIR/related_weights.json`` (the weighted methods' weight of every related example).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments.shared import methods as m
from experiments.shared.cli import report
from experiments.shared.config import ConfigError, as_list, check_choices, check_positive, check_shared, seeds
from experiments.shared.program import Batch, Pools, Program
from experiments.shared.store import RunStore
from experiments.shared.tables import summary_table
from metadial.data.ideal import CORRUPTIONS, IdealTask, make_ideal_task
from metadial.loop import LoopResult, train_loop
from metadial.metrics import roc_auc
from metadial.models.mlp import MLPClassifier, MLPScorer, accuracy, classification_loss_fn
from metadial.parallel import check_batch_size, replicate, shard_batch
from metadial.weighting import NetWeighting

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")

METHODS: dict[str, m.Method] = {
    "target_only": m.TARGET_ONLY,
    "union": m.UNION,
    "pretrain_finetune": m.PRETRAIN_FINETUNE,
    "oracle": m.ORACLE,  # the target plus only the related examples whose label is correct
    "l2rw": m.L2RW,
    "meta_table": m.META_TABLE,
    "meta_net": m.META_NET,
    "mwnet": m.MWNET,
}
NET_INPUTS = ("x", "flag", "label")
EXAMPLE_KEYS = ("x", "flag", "y", "id")


def validate_config(config: ml_collections.ConfigDict) -> list[str]:
    """Checks the config before any training; returns the list of methods."""
    check_positive(config, ["train_steps", "log_every"])  # the ideal task has no rule of its own for 0
    methods = check_shared(config, list(METHODS))
    check_positive(config, ["num_classes", "input_dim", "num_target", "num_related", "num_test", "related_batch_size"])
    check_choices("weight_net_inputs", config.weight_net_inputs, NET_INPUTS)
    check_choices("corruption", config.corruption, CORRUPTIONS)
    if config.estimator == "trajectory" and config.train_steps % config.trajectory_steps:
        raise ConfigError(
            f"config.train_steps={config.train_steps} must be a multiple of config.trajectory_steps="
            f"{config.trajectory_steps} with the trajectory estimator"
        )
    if not 0.0 <= config.corrupt_fraction < 1.0:
        raise ConfigError(f"config.corrupt_fraction must be in [0, 1), got {config.corrupt_fraction}")
    return methods


def model_inputs(config: ml_collections.ConfigDict) -> Callable[[Batch], jax.Array]:
    if config.model_sees_flag:
        return lambda b: jnp.concatenate([b["x"], b["flag"][:, None]], axis=-1)
    return lambda b: b["x"]


def weight_net_inputs(config: ml_collections.ConfigDict) -> Callable[[Batch], jax.Array]:
    parts = {
        "x": lambda b: b["x"],
        "flag": lambda b: b["flag"][:, None],
        "label": lambda b: jax.nn.one_hot(b["y"], config.num_classes),
    }
    chosen = [parts[name] for name in as_list(config.weight_net_inputs)]
    return lambda b: jnp.concatenate([f(b) for f in chosen], axis=-1)


def sample(examples: Batch, key: jax.Array, batch_size: int) -> Batch:
    """A batch drawn uniformly with replacement from ``examples``."""
    idx = jax.random.randint(key, (batch_size,), 0, examples["y"].shape[0])
    return {k: v[idx] for k, v in examples.items()}


@dataclasses.dataclass(frozen=True)
class IdealData:
    """One seed's task on the device: the pools training batches are drawn from, and the test set."""

    target: Batch
    related: Batch
    related_correct: Batch  # the related examples whose label is correct (the oracle's pool)
    test: Batch

    @classmethod
    def from_task(cls, task: IdealTask) -> IdealData:
        pick = lambda split, mask=None: {
            k: jnp.asarray(split[k] if mask is None else split[k][mask]) for k in EXAMPLE_KEYS
        }
        return cls(pick(task.target), pick(task.related), pick(task.related, task.related["correct"]), pick(task.test))

    def pools(self) -> Pools:
        return {"target": self.target, "related": self.related, "related_correct": self.related_correct}

    def replicated_pools(self, program: Program) -> Pools:
        """The training pools placed on every device of the program's mesh (the test set stays on the host)."""
        return replicate(self.pools(), program.mesh)


class IdealProgram(Program):
    """The MLP classifier's training step for one method."""

    def __init__(
        self, name: str, config: ml_collections.ConfigDict, remat: bool = False, method: m.Method | None = None
    ):
        self.remat = remat
        self.module = MLPClassifier(config.num_classes, tuple(config.hidden_sizes))
        self.inputs_fn = model_inputs(config)
        weight_net = lambda: NetWeighting(MLPScorer(tuple(config.weight_net_hidden)), weight_net_inputs(config))
        super().__init__(
            name,
            method or METHODS[name],
            config,
            classification_loss_fn(self.module, self.inputs_fn),
            config.num_related,
            weight_net,
            remat,
        )
        check_batch_size(config.related_batch_size, self.mesh, "related_batch_size")
        if self.method.weights == "recomputed":  # built once: a jit made per call would recompile per seed
            self.l2rw_weights = jax.jit(self.trainer.example_weights)

    def with_method(self, name: str, method: m.Method) -> IdealProgram:
        return IdealProgram(name, self.config, self.remat, method)

    def batch_size(self, pool: str) -> int:
        return self.config.batch_size if pool == "target" else self.config.related_batch_size

    def pool_size(self, pools: Pools, pool: str) -> int:
        return pools[pool]["y"].shape[0]

    def batch_at(self, pools: Pools, pool: str, idx: jax.Array) -> Batch:
        return shard_batch({k: v[idx] for k, v in pools[pool].items()}, self.mesh)

    def all_related_weights(self, state, pools: Pools) -> jax.Array:
        return self.trainer.weights(state.params, state.meta_params, pools["related"])

    def init_params(self, key: jax.Array, batch: Batch) -> Any:
        return self.module.init(key, self.inputs_fn(batch))

    def weight_means(self, state, pools: Pools) -> dict[str, float]:
        """Mean learned weight of the correct and the corrupted related examples (meta methods)."""
        w = np.asarray(self.all_related_weights(state, pools))
        correct = np.asarray(pools["related"]["flag"]) > 0.5
        return {
            "weight_correct": float(w[correct].mean()) if correct.any() else float("nan"),
            "weight_corrupted": float(w[~correct].mean()) if (~correct).any() else float("nan"),
        }

    def related_weights(self, state, key: jax.Array, pools: Pools) -> np.ndarray | None:
        """The learned weight of every related example (None for unweighted methods).

        For l2rw the weights are recomputed at the final parameters over shuffled batches of the training
        batch size and scaled by that size (so a batch's weights average 1).
        """
        if self.method.meta:
            return np.asarray(self.all_related_weights(state, pools))
        if self.method.weights != "recomputed":
            return None
        b = self.config.related_batch_size
        n = pools["related"]["y"].shape[0]
        k_perm, key = jax.random.split(key)
        order = np.asarray(jax.random.permutation(k_perm, n))
        order = np.concatenate([order, order[: (-n) % b]])  # pad to whole batches
        out = np.zeros(n, np.float32)
        for start in range(len(order) - b, -1, -b):  # backwards, so the padded copies are overwritten
            key, k_t, k_o = jax.random.split(key, 3)
            idx = order[start : start + b]
            batch = {k: v[idx] for k, v in pools["related"].items()}
            w = self.l2rw_weights(
                state,
                sample(pools["target"], k_t, self.config.batch_size),
                batch,
                sample(pools["target"], k_o, self.config.batch_size),
            )
            out[idx] = np.asarray(w) * b
        return out


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def _fit(program: IdealProgram, pools: Pools, state: Any, key: jax.Array, seed: int, store: RunStore) -> LoopResult:
    """``program``'s training loop from ``state`` with batch key ``key`` (``config.train_steps`` steps), resuming
    from its checkpoint."""
    c = program.config
    name = run_name(program.name, seed)
    return train_loop(
        program.step_fn(pools, c.train_steps, seed),
        state,
        key,
        num_steps=c.train_steps,
        name=name,
        log_every=c.log_every,
        checkpointer=store.checkpointer(name),
        checkpoint_every=c.checkpoint_every,
        metrics_log=store.metrics_log(name, {"method": program.name, "seed": seed}, c.tensorboard),
        log_metrics=(lambda state: program.weight_means(state, pools)) if program.method.meta else None,
        steps_per_call=program.steps_per_call,
    )


def run_one(
    program: IdealProgram, task: IdealTask, seed: int, store: RunStore
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Trains one method on one seed's task (resuming from its checkpoint if any); returns its record and
    the learned weights of the related examples (None for unweighted methods). With
    ``config.meta_holdout_refit``, a final fit follows (``<method>-refit``): a fresh model (same initial
    parameters) on all the target data and the related data, weighted by the learned weighting held fixed; the
    record's test accuracy is then the final fit's, ``before_refit`` the meta run's."""
    data = IdealData.from_task(task)
    pools = data.replicated_pools(program)
    k_init, k_train, k_eval = jax.random.split(jax.random.key(seed), 3)
    test_accuracy = lambda p, state: float(accuracy(p.module, state.params, p.inputs_fn(data.test), data.test["y"]))
    result = _fit(program, pools, program.init(k_init, pools), k_train, seed, store)
    state = result.state
    weights = program.related_weights(state, k_eval, pools)
    test_acc = test_accuracy(program, state)
    before_refit = None
    if program.refits:
        refit = program.refit_program()
        fresh = refit.init(k_init, pools).replace(meta_params=state.meta_params)
        before_refit = {"test_accuracy": test_acc}
        test_acc = test_accuracy(refit, _fit(refit, pools, fresh, k_train, seed, store).state)
    record = {
        "method": program.name,
        "seed": seed,
        **program.meta_fields(),
        "test_accuracy": test_acc,
        "weight_auc": None,
        "mean_weight_correct": None,
        "mean_weight_corrupted": None,
        "resumed_from_step": result.resumed_from,
    }
    program.add_optional_fields(record, before_refit)
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


def summarize(records: list[dict], config: ml_collections.ConfigDict) -> str:
    """The summary table (mean ± std over seeds per method) with a header describing the task."""
    head = (
        f"Ideal task: {config.num_classes} classes, {config.num_target} target / {config.num_related} related "
        f"({config.corrupt_fraction:.0%} {config.corruption} wrong labels) / {config.num_test} test examples, "
        f"{config.train_steps} steps; mean ± std over seeds.\n\n"
    )
    return head + summary_table(records, ["method"], SUMMARY_COLUMNS)


def make_task(config: ml_collections.ConfigDict, seed: int) -> IdealTask:
    return make_ideal_task(
        jax.random.key(10_000 + seed),
        num_classes=config.num_classes,
        input_dim=config.input_dim,
        num_target=config.num_target,
        num_related=config.num_related,
        num_test=config.num_test,
        corrupt_fraction=config.corrupt_fraction,
        corruption=config.corruption,
    )


def run(config: ml_collections.ConfigDict, workdir: str | None) -> list[dict]:
    """Runs every method × seed of the config; writes results after each run if ``workdir`` is set.

    Re-running with the same workdir skips finished runs and resumes the unfinished one."""
    methods = validate_config(config)
    store = RunStore(workdir, config)
    records = store.records
    weight_runs = store.finished_weight_runs(("method", "seed"))
    todo = [(method, seed) for method in methods for seed in seeds(config) if not store.done(method=method, seed=seed)]
    logging.info(
        "ideal task: %d runs to make (%d of the config's %d already finished in %s)",
        len(todo),
        len(methods) * config.num_seeds - len(todo),
        len(methods) * config.num_seeds,
        workdir,
    )
    tasks: dict[int, IdealTask] = {}
    written: dict[str, None] = {}  # paths, in the order first written
    program: IdealProgram | None = None
    for i, (method, seed) in enumerate(todo, 1):
        if program is None or program.name != method:
            program = IdealProgram(method, config)  # built once per method, reused for its seeds
        if seed not in tasks:
            logging.info("generating the task of seed %d", seed)
            tasks[seed] = make_task(config, seed)
        logging.info("run %d/%d: %s", i, len(todo), run_name(method, seed))
        t0 = time.time()
        record, weights = run_one(program, tasks[seed], seed, store)
        record["wall_seconds"] = round(time.time() - t0, 2)
        records.append(record)
        logging.info(
            "%s: test accuracy %.4f (%.1fs)", run_name(method, seed), record["test_accuracy"], record["wall_seconds"]
        )
        if weights is not None:
            weight_runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "weights": [round(float(w), 5) for w in weights],
                    "correct": tasks[seed].related["correct"].astype(int).tolist(),
                }
            )
        written.update(
            dict.fromkeys(
                store.save(summarize(records, config), {"runs": weight_runs} if weights is not None else None)
            )
        )
    if not todo and records:  # nothing new: rewrite the summary from results.json
        written.update(dict.fromkeys(store.save(summarize(records, config))))
    if records:
        report(list(written), summarize(records, config))
    return records
