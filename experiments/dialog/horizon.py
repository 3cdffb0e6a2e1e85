r"""Does a one-step look-ahead judge the related dialog turns the way a long training run does?

    python -m experiments.dialog.horizon [--config=experiments/dialog/configs/horizon.py] --workdir=DIR \
        [--config.target_dialogs=100] [--config.num_seeds=3] [--config.horizon.start_step=1000] ...

The settings are the config's ``horizon`` fields (see ``configs/horizon.py``). For each seed: trains ``union``
(the dialog config's model and optimizer), and

1. **one-step look-ahead** (what ``meta_net``'s outer loss sees): the exact gradient of the target loss on a
   fresh target batch, after one simulated optimizer step on the target batch plus the related batch with
   every related example of kind ``k`` weighted by ``m_k``, w.r.t. the per-kind multipliers ``m`` at
   ``m = 1`` (normalized weights, as in ``normalize_weights``), averaged over ``horizon.probe_batches`` draws, at
   the union run's steps ``horizon.probe_steps``. A positive value means "lower this kind's weight";
2. **long horizon**: from the state at ``start_step``, ``horizon`` more real steps for each arm (``union``;
   ``drop_<kind>``: that kind's related examples weighted 0; ``meta_net_kinds``: every kind weighted by
   ``meta_net``'s learned mean weight of that kind and seed, read from ``horizon.meta_weights``), all arms on the
   same batches. Reports the change of dev loss against ``union`` after 1, 10, 100, ... steps and the final dev
   and test accuracy (last parameters, no model selection).

Writes ``DIR/results.json`` (one record per seed; a rerun skips finished seeds) and ``DIR/summary.md``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from experiments.dialog.data import DialogData, load_data
from experiments.dialog.program import DialogProgram, accuracies
from experiments.dialog.train import mean_by_kind
from experiments.dialog.train import validate_config as dialog_validate
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import ConfigError, as_list, check_positive, seeds
from experiments.shared.store import RunStore
from experiments.shared.tables import format_mean_std
from metadial.data.dialog_batches import gather_batch
from metadial.io import read_json
from metadial.steps import TrainState, optimizer_steps

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "horizon.py")
REPORT_STEPS = (1, 10, 100, 500, 1000, 2000, 4000, 8000)


def kind_multiplier_weights(multipliers: jax.Array, kind_of: jax.Array, related: dict) -> jax.Array:
    """Each related example's weight ``m[kind]``, rescaled so the batch's weights sum to its size (the
    ``normalize_weights`` objective ``sum(w l) / sum(w)``; a batch whose weights are all 0 stays 0)."""
    w = multipliers[kind_of[related["id"]]]
    return w * w.shape[0] / jnp.maximum(jnp.sum(w), 1e-6)


def kind_lookahead_loss(
    loss_fn,
    optimizer: optax.GradientTransformation,
    multipliers: jax.Array,
    kind_of: jax.Array,
    state: TrainState,
    target: dict,
    related: dict,
    outer: dict,
) -> jax.Array:
    """Mean loss on ``outer`` after one simulated ``optimizer`` step on the target batch's mean loss plus the
    related batch's loss weighted by its kinds' ``multipliers`` (``kind_multiplier_weights``)."""
    w = kind_multiplier_weights(multipliers, kind_of, related)
    params, _ = optimizer_steps(
        loss_fn, optimizer, state.params, state.opt_state, w, target, related, include_target=True
    )
    return jnp.mean(loss_fn(params, outer))


class HorizonProbe:
    """Jitted steps of the diagnostic, over one ``DialogProgram("union", ...)``'s model and optimizer."""

    def __init__(self, program: DialogProgram, kind_of: np.ndarray):
        self.program, self.kind_of = program, jnp.asarray(kind_of, jnp.int32)
        self.optimizer = program.trainer.optimizer
        self.weighted_step = jax.jit(self._weighted_step)
        self.lookahead_grad = jax.jit(jax.grad(self._lookahead_loss))
        self.losses = jax.jit(
            lambda params, pool, idx: program.loss_fn(params, gather_batch(pool, idx, program.memory_size))
        )

    def _batches(self, pools, key):
        k_t, k_r, k_o = jax.random.split(key, 3)
        batch = self.program.batch
        return batch(pools, "target", k_t), batch(pools, "related", k_r), batch(pools, "target", k_o)

    def _weighted_step(self, state: TrainState, key, pools, multipliers):
        target, related, _ = self._batches(pools, key)
        w = kind_multiplier_weights(multipliers, self.kind_of, related)
        params, opt_state = optimizer_steps(
            self.program.loss_fn, self.optimizer, state.params, state.opt_state, w, target, related, include_target=True
        )
        return TrainState(state.step + 1, params, opt_state)

    def _lookahead_loss(self, multipliers, state: TrainState, key, pools):
        target, related, outer = self._batches(pools, key)
        return kind_lookahead_loss(
            self.program.loss_fn, self.optimizer, multipliers, self.kind_of, state, target, related, outer
        )

    def probe(self, state, key, pools, num_kinds: int, draws: int) -> np.ndarray:
        """(draws, num_kinds) look-ahead gradients w.r.t. the kind multipliers at 1."""
        ones = jnp.ones(num_kinds)
        return np.stack(
            [np.asarray(self.lookahead_grad(ones, state, jax.random.fold_in(key, i), pools)) for i in range(draws)]
        )

    def example_losses(self, params, pool, n: int) -> np.ndarray:
        return self.program.per_example(lambda idx: self.losses(params, pool, idx), n)


def meta_net_kind_means(path: str, size: int, seed: int, kind_names: list[str]) -> np.ndarray | None:
    """``meta_net``'s mean learned weight per kind for (size, seed) in a ``related_weights.json``."""
    if not path:
        return None
    saved = read_json(path)
    kinds = [e["kind"] for e in saved["examples"]]
    for run in saved["runs"]:
        if (run["method"], run["target_dialogs"], run["seed"]) == ("meta_net", size, seed):
            means = mean_by_kind(run["weights"], kinds)
            return np.asarray([means[k] for k in kind_names], np.float32)
    raise ValueError(f"{path}: no meta_net run with target_dialogs={size}, seed={seed}")


def run_seed(probe: HorizonProbe, data: DialogData, seed: int, config: ml_collections.ConfigDict) -> dict:
    """Probes and arms of one seed (see the module docstring); returns its record."""
    program, h, size = probe.program, config.horizon, target_size(config)
    kind_names = data.kind_names
    pools = data.train_pools(data.target_train(size, seed))
    k_init, k_train, k_probe = jax.random.split(jax.random.key(seed), 3)
    probe_steps = sorted(h.probe_steps)
    num_kinds = len(kind_names)
    state = program.init(k_init, pools)
    record = {
        "seed": seed,
        "target_dialogs": size,
        "start_step": h.start_step,
        "horizon": h.steps,
        "kinds": kind_names,
        "probe": {},
        "arms": {},
    }
    ones = jnp.ones(num_kinds)
    start_state = None
    for step in range(max([*probe_steps, h.start_step]) + 1):
        if step in probe_steps:
            logging.info("seed %d: probing the one-step look-ahead at union step %d", seed, step)
            g = probe.probe(state, jax.random.fold_in(k_probe, step), pools, num_kinds, h.probe_batches)
            record["probe"][str(step)] = {
                "mean": g.mean(0).tolist(),
                "sem": (g.std(0, ddof=1) / np.sqrt(len(g))).tolist(),
            }
        if step == h.start_step:
            start_state = state
        state = probe.weighted_step(state, jax.random.fold_in(k_train, step), pools, ones)
    arms = {"union": np.ones(num_kinds, np.float32)}
    for k in h.kinds:
        arms[f"drop_{k}"] = np.where(np.asarray(kind_names) == k, 0.0, 1.0).astype(np.float32)
    meta = meta_net_kind_means(h.meta_weights, size, seed, kind_names)
    if meta is not None:
        arms["meta_net_kinds"] = meta
    report_steps = [s for s in REPORT_STEPS if s < h.steps] + [h.steps]
    for arm, m in arms.items():
        logging.info("seed %d: arm %s, %d steps from step %d", seed, arm, h.steps, h.start_step)
        state, curve = start_state, {}
        for step in range(1, h.steps + 1):
            key = jax.random.fold_in(k_train, h.start_step + step - 1)
            state = probe.weighted_step(state, key, pools, jnp.asarray(m))
            if step in report_steps:
                losses = probe.example_losses(state.params, data.dev.pool, len(data.dev))
                curve[str(step)] = {
                    "dev_loss": float(losses.mean()),
                    **{f"dev_loss_{k}": v for k, v in mean_by_kind(losses, data.dev.kinds).items() if k in kind_names},
                }
        test_correct = program.correct(state.params, data.test)
        record["arms"][arm] = {
            "multipliers": [float(x) for x in m],
            "curve": curve,
            "dev_response_accuracy": program.evaluate(state.params, data.dev)[0],
            "test_response_accuracy": accuracies(test_correct, data.test)[0],
            "test_accuracy_by_kind": mean_by_kind(test_correct, data.test.kinds),
        }
        logging.info(
            "seed %d arm %s: dev loss %.4f test %.4f",
            seed,
            arm,
            curve[str(h.steps)]["dev_loss"],
            record["arms"][arm]["test_response_accuracy"],
        )
    return record


def summarize(records: list[dict]) -> str:
    """Markdown tables: look-ahead gradients per kind; per arm, dev-loss changes and final accuracies."""
    kinds, r0 = records[0]["kinds"], records[0]
    text = (
        f"`union` at {r0['target_dialogs']} target dialogs, {len(records)} seed(s) (mean ± std over seeds). "
        f"Arms split at step {r0['start_step']} and run {r0['horizon']} more steps on the same batches.\n\n"
        "One-step look-ahead: d(target loss after one simulated step) / d(weight multiplier of a kind), at "
        "multipliers 1 (x 1e3; > 0: the look-ahead says lower the kind's weight):\n\n"
    )
    text += "| union step | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds) + "\n"
    for step in r0["probe"]:
        cells = [format_mean_std([r["probe"][step]["mean"][i] for r in records], 1e3, 2) for i in range(len(kinds))]
        text += f"| {step} | " + " | ".join(cells) + " |\n"
    dropped = [a[len("drop_") :] for a in r0["arms"] if a.startswith("drop_")]
    text += (
        "\nThe same per seed, for the kinds with a drop arm (x 1e3, mean ± standard error over the batch "
        "draws):\n\n| seed | union step | " + " | ".join(dropped) + " |\n|---|---|" + "---|" * len(dropped) + "\n"
    )
    for r in records:
        for step, p in r["probe"].items():
            cells = [f"{1e3 * p['mean'][kinds.index(k)]:.2f} ± {1e3 * p['sem'][kinds.index(k)]:.2f}" for k in dropped]
            text += f"| {r['seed']} | {step} | " + " | ".join(cells) + " |\n"
    steps = list(r0["arms"]["union"]["curve"])
    text += (
        "\nDev loss of each arm minus `union`'s, after N steps from the split (overall; `own kind`: on the "
        "dev turns of the dropped kind; > 0: the arm is worse):\n\n"
    )
    text += "| arm | " + " | ".join(f"N={s}" for s in steps) + " | own kind, N=" + steps[-1] + " |\n"
    text += "|---|" + "---|" * (len(steps) + 1) + "\n"
    for arm in r0["arms"]:
        if arm == "union":
            continue
        cells = [
            format_mean_std(
                [r["arms"][arm]["curve"][s]["dev_loss"] - r["arms"]["union"]["curve"][s]["dev_loss"] for r in records],
                1.0,
                4,
            )
            for s in steps
        ]
        kind = arm[len("drop_") :] if arm.startswith("drop_") else None
        key = f"dev_loss_{kind}"
        own = (
            format_mean_std(
                [
                    r["arms"][arm]["curve"][steps[-1]][key] - r["arms"]["union"]["curve"][steps[-1]][key]
                    for r in records
                ],
                1.0,
                4,
            )
            if kind and key in r0["arms"]["union"]["curve"][steps[-1]]
            else "–"
        )
        text += f"| {arm} | " + " | ".join(cells) + f" | {own} |\n"
    shown = sorted({k for r in records for k in r["arms"]["union"]["test_accuracy_by_kind"]})
    text += (
        "\nAt the end (last parameters, no model selection): test and dev per-response accuracy (%), and test "
        "accuracy (%) by kind of target turn:\n\n"
    )
    text += "| arm | test | dev | " + " | ".join(shown) + " |\n|---|---|---|" + "---|" * len(shown) + "\n"
    for arm in r0["arms"]:
        cells = [
            format_mean_std([r["arms"][arm]["test_response_accuracy"] for r in records], 100, 1),
            format_mean_std([r["arms"][arm]["dev_response_accuracy"] for r in records], 100, 1),
        ]
        cells += [format_mean_std([r["arms"][arm]["test_accuracy_by_kind"][k] for r in records], 100, 1) for k in shown]
        text += f"| {arm} | " + " | ".join(cells) + " |\n"
    if "meta_net_kinds" in r0["arms"]:
        text += (
            "\n`meta_net_kinds` multipliers (meta_net's mean learned weight per kind, mean over seeds): "
            + ", ".join(
                f"{k} {np.mean([r['arms']['meta_net_kinds']['multipliers'][i] for r in records]):.2f}"
                for i, k in enumerate(kinds)
            )
            + "\n"
        )
    return text


def target_size(config: ml_collections.ConfigDict) -> int:
    """The one target training size the diagnostic runs at (``config.target_dialogs``)."""
    sizes = as_list(config.target_dialogs)
    if len(sizes) != 1 or int(sizes[0]) <= 0:
        raise ConfigError(f"config.target_dialogs must be one positive dialog count, got {config.target_dialogs}")
    return int(sizes[0])


def validate_config(config: ml_collections.ConfigDict) -> int:
    """Checks the config (the dialog fields and ``horizon.*``) before any data is read; returns the target size."""
    dialog_validate(config)
    h = config.horizon
    check_positive(h, ["steps", "probe_batches"], prefix="config.horizon.")
    if h.start_step < 0 or any(s < 0 for s in h.probe_steps):
        raise ConfigError(
            f"config.horizon.start_step and probe_steps must be >= 0, got {h.start_step}, {h.probe_steps}"
        )
    if h.probe_batches < 2:
        raise ConfigError(
            f"config.horizon.probe_batches must be >= 2 (a standard error needs two), got {h.probe_batches}"
        )
    if h.meta_weights and not os.path.exists(h.meta_weights):
        raise ConfigError(f"config.horizon.meta_weights={h.meta_weights!r}: no such file ('' skips that arm)")
    return target_size(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Runs the config's seeds not yet in ``workdir/results.json``; writes results and summary after each."""
    h = config.horizon
    size = validate_config(config)
    data = load_data(config)
    unknown = [k for k in h.kinds if k not in data.kind_names]
    if unknown:
        raise ConfigError(f"config.horizon.kinds: {unknown} are not kinds of related turns; known: {data.kind_names}")
    probe = HorizonProbe(DialogProgram("union", config, data), data.related_kind_ids)
    store = RunStore(workdir, config)
    records = store.records
    path = os.path.join(workdir, "results.json")
    settings = {
        "target_dialogs": size,
        "start_step": h.start_step,
        "horizon": h.steps,
        "kinds": data.kind_names,
    }
    for r in records:
        if any(r.get(k) != v for k, v in settings.items()) or sorted(r["arms"]) != sorted(records[0]["arms"]):
            raise ConfigError(
                f"{path}: holds seed {r['seed']} of different settings than {settings}; use a new --workdir"
            )
    for seed in seeds(config):
        if any(r["seed"] == seed for r in records):
            continue
        start = time.time()
        record = run_seed(probe, data, seed, config)
        record["wall_seconds"] = round(time.time() - start, 1)
        records.append(record)
        store.save(summarize(records))
    if records:  # a rerun with every seed done rewrites the summary from results.json
        report(store.save(summarize(records)), summarize(records))
    return records


if __name__ == "__main__":
    run_launcher(run, DEFAULT_CONFIG, "results.json, summary.md")
