r"""Benchmark: time of the jit-compiled meta step relative to the plain (union) step, in one run.

    python -m experiments.ideal.bench --workdir=DIR [--config=experiments/ideal/configs/default.py] [--repeats=200]

Both steps use the ideal task's model, optimizer and batch sizes from the config; the meta step is
``meta_net`` with the config's weighting network and estimator (the memory table: the look-ahead with K steps).
Each is compiled first, then timed over ``--repeats`` calls (median, with ``block_until_ready``). Writes
``DIR/bench.json`` with ``meta_step_ms``, ``plain_step_ms`` and ``ratio`` (meta / plain) plus the device and
versions, and ``memory``: for K in
``--inner_steps`` with and without rematerialisation (``jax.checkpoint`` of each inner step), the compiled
meta step's temporary (peak working) memory from XLA's memory analysis and its median time; and
``estimators``: for each meta-gradient estimator (``config.estimator``, and ``implicit-gn``: ``implicit`` with the
Gauss-Newton matrix), ``meta_net``'s step time with the config's
related sampling (for ``trajectory``, per real step of a segment of ``TRAJECTORY_STEPS``), its ``ratio`` to the plain
step and its temporary memory.
"""

from __future__ import annotations

import itertools
import os
import platform

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.ideal.estimators import TRAJECTORY_STEPS
from experiments.ideal.train import IdealData, IdealProgram
from experiments.shared.bench import BENCH_ESTIMATORS, estimator_config, median_ms
from metadial.data.ideal import make_ideal_task
from metadial.io import atomic_write_json

FLAGS = flags.FLAGS


def bench(config, repeats: int, inner_steps: tuple[int, ...] = (1, 2, 4)) -> dict:
    task = make_ideal_task(
        jax.random.key(0),
        num_classes=config.num_classes,
        input_dim=config.input_dim,
        num_target=config.num_target,
        num_related=config.num_related,
        num_test=10,
        corrupt_fraction=config.corrupt_fraction,
        corruption=config.corruption,
    )
    data = IdealData.from_task(task).pools()
    result = {}
    for name, method in [("plain_step_ms", "union"), ("meta_step_ms", "meta_net")]:
        program = IdealProgram(method, config)
        state = program.init(jax.random.key(1), data)
        result[name] = median_ms(program.train_step, state, data, repeats)
        logging.info("%s (%s): %.3f ms", name, method, result[name])
    result["ratio"] = result["meta_step_ms"] / result["plain_step_ms"]
    result["memory"] = []
    for k in inner_steps:
        for remat in (False, True):
            cfg = config.copy_and_resolve_references()
            cfg.inner_steps, cfg.estimator, cfg.related_sampling = k, "lookahead", "uniform"
            program = IdealProgram("meta_net", cfg, remat=remat)
            state = program.init(jax.random.key(1), data)
            compiled = program.train_step.lower(state, jax.random.key(0), data).compile()
            stats = compiled.memory_analysis()
            entry = {
                "inner_steps": k,
                "remat": remat,
                "temp_bytes": int(stats.temp_size_in_bytes),
                "step_ms": median_ms(program.train_step, state, data, max(repeats // 4, 10)),
            }
            result["memory"].append(entry)
            logging.info("meta step K=%d remat=%s: %s", k, remat, entry)
    result["estimators"] = {}
    for name in BENCH_ESTIMATORS:
        cfg = estimator_config(config, name)
        cfg.trajectory_steps = TRAJECTORY_STEPS
        program = IdealProgram("meta_net", cfg)
        state = program.init(jax.random.key(1), data)
        compiled = program.train_step.lower(state, jax.random.key(0), data).compile()
        # the launcher's step function (related sampling as configured); per real step for a trajectory segment
        step, calls = program.step_fn(data, cfg.train_steps, 0), itertools.count(0, program.steps_per_call)
        step_ms = median_ms(lambda s, k, d: step(s, k, next(calls)), state, data, repeats) / program.steps_per_call
        result["estimators"][name] = {
            "step_ms": step_ms,
            "ratio": step_ms / result["plain_step_ms"],
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
        }
        logging.info("meta_net with the %s estimator: %s", name, result["estimators"][name])
    result.update(
        device=str(jax.devices()[0].device_kind),
        backend=jax.default_backend(),
        jax_version=jax.__version__,
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        repeats=repeats,
        inner_steps=config.inner_steps,
        batch_size=config.batch_size,
        related_batch_size=config.related_batch_size,
    )
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    result = bench(FLAGS.config, FLAGS.repeats, tuple(int(k) for k in FLAGS.inner_steps))
    atomic_write_json(os.path.join(FLAGS.workdir, "bench.json"), result)
    print(f"meta {result['meta_step_ms']:.3f} ms / plain {result['plain_step_ms']:.3f} ms = {result['ratio']:.2f}x")
    for name, e in result["estimators"].items():
        print(
            f"estimator {name}: {e['step_ms']:.3f} ms, {e['ratio']:.2f}x plain, temp {e['temp_bytes'] / 2**20:.2f} MiB"
        )
    for m in result["memory"]:
        print(f"K={m['inner_steps']} remat={m['remat']}: temp {m['temp_bytes'] / 2**20:.2f} MiB, {m['step_ms']:.3f} ms")


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        "config",
        os.path.join(os.path.dirname(__file__), "configs", "default.py"),
        "Configuration (model and batch sizes).",
    )
    flags.DEFINE_string("workdir", None, "Output folder for bench.json.")
    flags.DEFINE_integer("repeats", 200, "Timed calls per step after compilation.")
    flags.DEFINE_list("inner_steps", ["1", "2", "4"], "Inner steps K of the memory table.")
    app.run(main)
