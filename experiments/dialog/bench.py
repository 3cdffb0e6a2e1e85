r"""Benchmark of the dialog experiment: step time of every method and the cost of one run and of the sweep.

    python -m experiments.dialog.bench --workdir=DIR [--config=experiments/dialog/configs/default.py] [--repeats=30]

For each method of the config, compiles its training step and times ``--repeats`` calls (median); times one
dev evaluation (the full dev set). From these it estimates one run (``train_steps`` steps plus one dev
evaluation every ``eval_every`` steps and the test and OOV evaluations) and the whole sweep (every method ×
size × seed), on this machine, one run at a time (the estimate leaves out the training loop's own work, such
as the weight statistics logged every ``eval_every`` steps). Writes ``DIR/dialog_bench.json`` and prints a table;
ratios are to the ``target_only`` step. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os
import platform
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from experiments.dialog.train import DEFAULT_CONFIG, validate_config
from experiments.shared.bench import median_ms
from experiments.shared.config import as_list
from metadial.io import atomic_write_json

FLAGS = flags.FLAGS


def bench(config, repeats: int) -> dict:
    methods, sizes = validate_config(config)
    data = load_data(config)
    pools = data.train_pools(data.target_train(min(sizes), 0))
    evals_per_run = -(-config.train_steps // config.eval_every)
    result = {
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "train_steps": config.train_steps,
        "methods": {},
    }
    eval_seconds = None
    for method in methods:
        program = DialogProgram(method, config, data)
        state = program.init(jax.random.key(0), pools)
        step_ms = median_ms(lambda s, k, p: program.train_step(s, k, p), state, pools, repeats)
        if program.method.finetune_batches:  # two phases: the related one, then the target one
            finetune_ms = median_ms(
                lambda s, k, p: program.train_step(s, k, p, phase="finetune"), state, pools, repeats
            )
            step_ms = config.pretrain_fraction * step_ms + (1 - config.pretrain_fraction) * finetune_ms
        if eval_seconds is None:
            program.evaluate(state.params, data.dev)  # compiles
            t0 = time.perf_counter()
            program.evaluate(state.params, data.dev)
            eval_seconds = time.perf_counter() - t0
            result["dev_eval_seconds"] = eval_seconds
        # test and OOV are about as large as dev: count them as two more evaluations
        run_seconds = config.train_steps * step_ms / 1e3 + (evals_per_run + 2) * eval_seconds
        result["methods"][method] = {"step_ms": step_ms, "run_seconds": run_seconds}
        logging.info("%s: %.1f ms/step, about %.0f s per run", method, step_ms, run_seconds)
    base = result["methods"].get("target_only", next(iter(result["methods"].values())))["step_ms"]
    for m in result["methods"].values():
        m["ratio_to_target_only"] = m["step_ms"] / base
    per_size_seed = sum(m["run_seconds"] for m in result["methods"].values())
    result["sweep_hours"] = per_size_seed * len(sizes) * config.num_seeds / 3600
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = bench(FLAGS.config, FLAGS.repeats)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    atomic_write_json(os.path.join(FLAGS.workdir, "dialog_bench.json"), result)
    print(f"{'method':<18} {'ms/step':>8} {'x target_only':>14} {'s/run':>7}")
    for name, m in result["methods"].items():
        print(f"{name:<18} {m['step_ms']:8.1f} {m['ratio_to_target_only']:14.2f} {m['run_seconds']:7.0f}")
    print(
        f"dev evaluation: {result['dev_eval_seconds']:.1f} s; whole sweep ({len(as_list(FLAGS.config.target_dialogs))} "
        f"sizes x {FLAGS.config.num_seeds} seeds), one run at a time: {result['sweep_hours']:.1f} h"
    )


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The dialog configuration.")
    flags.DEFINE_string("workdir", None, "Output folder for dialog_bench.json.", required=True)
    flags.DEFINE_integer("repeats", 30, "Timed calls per step (median).")
    app.run(main)
