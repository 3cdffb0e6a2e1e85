r"""Benchmark of the dialog experiment: step time of every method and the cost of one run and of the sweep.

    python -m experiments.dialog.bench --workdir=DIR [--config=experiments/dialog/configs/default.py] [--repeats=30]

For each method of the config, compiles its training step and times ``--repeats`` calls (median); times one
dev evaluation (the full dev set; median of 3, alternating with one that scores all candidates at once, the
ratio of the two printed). From these it estimates one run at the full budget (its steps plus one dev
evaluation every ``eval_every`` steps and the test and OOV evaluations; early stopping only shortens it) and
the whole sweep (every method × size × seed), on this machine, one run at a time (leaving out the loop's own
work, such as the logged weight statistics). Writes ``DIR/dialog_bench.json`` (``small/``;
``DIR/dialog_bench_<profile>.json`` for a profile's target set) and prints a table; ratios are to the
``target_only`` and the ``union`` step. Run it on an otherwise idle machine.

Under ``estimators``, ``meta_net`` with each estimator of ``--estimators`` (``implicit-gn``: ``implicit`` with the
Gauss-Newton matrix; ``trajectory`` once per segment
length of ``--trajectory_steps``): its step time (per real step for a trajectory segment, through the
launcher's step function), its ratio to the ``union`` step, the compiled step's temporary memory and how long
it took to compile.
"""

from __future__ import annotations

import itertools
import os
import platform
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from experiments.dialog.train import DEFAULT_CONFIG, Budget, validate_config
from experiments.shared.bench import BENCH_ESTIMATORS, estimator_config, median_ms
from metadial.io import atomic_write_json
from metadial.models.memn2n import CANDIDATE_CHUNK

FLAGS = flags.FLAGS


def bench(config: ml_collections.ConfigDict, repeats: int) -> dict:
    """Median step time of every method of the config, one dev evaluation's time, and the estimated cost of a
    run (at the full step budget: early stopping can only shorten it) and of the sweep."""
    methods, sizes = validate_config(config)
    data = load_data(config)
    pools = data.train_pools(data.target_train(min(sizes), 0))
    budgets = {size: Budget.of(config, int(data.target_train(size, 0)["answer"].shape[0])) for size in sizes}
    result = {
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "target_set": config.target_set,
        "target_candidates": int(data.corpus.target_candidates.shape[0]),
        "train_steps": {str(size): b.train_steps for size, b in budgets.items()},
        "methods": {},
    }
    eval_seconds = 0.0
    for method in methods:
        program = DialogProgram(method, config, data)
        state = program.init(jax.random.key(0), pools)
        step_ms = median_ms(lambda s, k, p: program.train_step(s, k, p), state, pools, repeats)
        if program.method.finetune_batches:  # two phases: the related one, then the target one
            finetune_ms = median_ms(
                lambda s, k, p: program.train_step(s, k, p, phase="finetune"), state, pools, repeats
            )
            step_ms = config.pretrain_fraction * step_ms + (1 - config.pretrain_fraction) * finetune_ms
        if "dev_eval_seconds" not in result:
            result.update(eval_seconds_by_chunk(program, state.params, data.dev))
            eval_seconds = result["dev_eval_seconds"]
        # test and OOV are about as large as dev: count them as two more evaluations
        run_seconds = {
            str(size): b.train_steps * step_ms / 1e3 + (-(-b.train_steps // b.eval_every) + 2) * eval_seconds
            for size, b in budgets.items()
        }
        result["methods"][method] = {"step_ms": step_ms, "run_seconds": run_seconds}
        logging.info(
            "%s: %.1f ms/step, at most %s s per run",
            method,
            step_ms,
            ", ".join(f"{v:.0f} ({k} dialogs)" for k, v in run_seconds.items()),
        )
    base = result["methods"].get("target_only", next(iter(result["methods"].values())))["step_ms"]
    union = result["methods"].get("union", {}).get("step_ms")
    for m in result["methods"].values():
        m["ratio_to_target_only"] = m["step_ms"] / base
        if union:
            m["ratio_to_union"] = m["step_ms"] / union
    total = sum(v for m in result["methods"].values() for v in m["run_seconds"].values())
    result["sweep_hours"] = total * config.num_seeds / 3600
    return result


def eval_seconds_by_chunk(program: DialogProgram, params, eval_set, repeats: int = 3) -> dict:
    """Seconds of one evaluation of ``eval_set`` (median of ``repeats``, the two kinds alternating): scoring the
    candidates in chunks (``dev_eval_seconds``, what runs use) and all at once (``dev_eval_seconds_unchunked``),
    with their ratio (``dev_eval_speedup_from_chunks``); both give the same answers."""
    chunks = {"dev_eval_seconds": CANDIDATE_CHUNK, "dev_eval_seconds_unchunked": None}
    times: dict[str, list[float]] = {name: [] for name in chunks}
    for chunk in chunks.values():
        program.correct(params, eval_set, chunk)  # compiles
    for _ in range(repeats):
        for name, chunk in chunks.items():
            t0 = time.perf_counter()
            program.correct(params, eval_set, chunk)
            times[name].append(time.perf_counter() - t0)
    out = {name: float(np.median(t)) for name, t in times.items()}
    out["dev_eval_speedup_from_chunks"] = out["dev_eval_seconds_unchunked"] / out["dev_eval_seconds"]
    return out


def bench_estimators(
    config: ml_collections.ConfigDict,
    estimators: list[str],
    trajectory_steps: list[int],
    union_ms: float | None,
    repeats: int,
) -> dict:
    """``meta_net``'s step with each estimator: time per real step, ratio to ``union``, memory, compile time."""
    _, sizes = validate_config(config)
    data = load_data(config)
    pools = data.train_pools(data.target_train(min(sizes), 0))
    settings = [(e, t) for e in estimators for t in (trajectory_steps if e == "trajectory" else [0])]
    out = {}
    for name, steps in settings:
        cfg = estimator_config(config, name)
        if steps:
            cfg.trajectory_steps = steps
        program = DialogProgram("meta_net", cfg, data)
        state = program.init(jax.random.key(0), pools)
        t0 = time.perf_counter()
        compiled = program.train_step.lower(state, jax.random.key(0), pools).compile()
        compile_seconds = time.perf_counter() - t0
        step, calls = program.step_fn(pools, 10**9, 0), itertools.count(0, program.steps_per_call)
        calls_timed = max(3, repeats // program.steps_per_call)
        step_ms = median_ms(lambda s, k, p: step(s, k, next(calls)), state, pools, calls_timed) / program.steps_per_call
        key = f"trajectory_{steps}" if steps else name
        out[key] = {
            "step_ms": step_ms,
            "ratio_to_union": step_ms / union_ms if union_ms else None,
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "compile_seconds": compile_seconds,
        }
        logging.info("meta_net with %s: %s", key, out[key])
    return out


def output_name(target_set: str) -> str:
    """``dialog_bench.json`` for ``small/``, ``dialog_bench_<profile>.json`` for a profile."""
    return "dialog_bench.json" if target_set == "small" else f"dialog_bench_{target_set}.json"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = bench(FLAGS.config, FLAGS.repeats)
    union_ms = result["methods"].get("union", {}).get("step_ms")
    trajectory_steps = [int(t) for t in FLAGS.trajectory_steps]
    result["estimators"] = bench_estimators(FLAGS.config, FLAGS.estimators, trajectory_steps, union_ms, FLAGS.repeats)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    atomic_write_json(os.path.join(FLAGS.workdir, output_name(FLAGS.config.target_set)), result)
    sizes = list(result["train_steps"])
    print(
        f"target set {result['target_set']} ({result['target_candidates']} candidates), {result['device']}, "
        f"{result['cpu_count']} cores"
    )
    header = f"{'method':<18} {'ms/step':>8} {'x target_only':>14} {'x union':>8}"
    print(f"{header}  at most s/run ({', '.join(sizes)} dialogs)")
    for name, m in result["methods"].items():
        runs = ", ".join(f"{m['run_seconds'][s]:.0f}" for s in sizes)
        ratios = f"{m['ratio_to_target_only']:14.2f} {m.get('ratio_to_union', 0):8.2f}"
        print(f"{name:<18} {m['step_ms']:8.1f} {ratios}  {runs}")
    print(
        f"dev evaluation: {result['dev_eval_seconds']:.2f} s (all candidates at once: "
        f"{result['dev_eval_seconds_unchunked']:.2f} s, {result['dev_eval_speedup_from_chunks']:.2f}x); "
        f"whole sweep ({len(sizes)} sizes x "
        f"{FLAGS.config.num_seeds} seeds) at the full budget, one run at a time: {result['sweep_hours']:.1f} h"
    )
    for name, e in result["estimators"].items():
        ratio = f"{e['ratio_to_union']:.2f}x union" if e["ratio_to_union"] else ""
        print(
            f"meta_net, {name}: {e['step_ms']:.1f} ms per real step {ratio}, "
            f"{e['temp_bytes'] / 2**20:.0f} MiB temporary memory, compiled in {e['compile_seconds']:.1f} s"
        )


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The dialog configuration.")
    flags.DEFINE_string("workdir", None, "Output folder for dialog_bench[_<profile>].json.", required=True)
    flags.DEFINE_integer("repeats", 30, "Timed calls per step (median); real steps for a trajectory segment.")
    flags.DEFINE_list(
        "estimators",
        list(BENCH_ESTIMATORS),
        "meta_net's estimators to time (implicit-gn: implicit with the Gauss-Newton matrix).",
    )
    flags.DEFINE_list("trajectory_steps", ["50", "200"], "Segment lengths (real steps) of the trajectory estimator.")
    app.run(main)
