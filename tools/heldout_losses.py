r"""Where a dialog meta run's held-out outer loss comes from: the mean loss per kind of target bot turn on the
held-out fold and on the folds the model trains on, at the run's selected (best-dev) parameters.

    python -m tools.heldout_losses --workdir=DIR [--run=meta_net-100-seed0]

``DIR`` is a dialog launcher workdir whose config holds a fold out (``meta_holdout > 0``; fold 0, as with
``meta_holdout_rotation=0``), with the run's checkpoints. Prints a table and writes ``DIR/heldout_losses.json``.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import app, flags

from experiments.dialog.configs.default import get_config
from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from experiments.shared.methods import TARGET
from metadial.checkpoint import Checkpointer
from metadial.data.dialog_tasks import turn_kinds
from metadial.holdout import target_folds
from metadial.io import atomic_write_json, read_json
from metadial.loop import restore_latest

FLAGS = flags.FLAGS


def saved_config(workdir: str):
    """The workdir's config (``config.json`` over the default config's types)."""
    config = get_config()
    for key, value in read_json(os.path.join(workdir, "config.json")).items():
        if key in config:
            config[key] = tuple(value) if isinstance(config[key], tuple) else value
    if not config.meta_holdout:
        raise app.UsageError(f"{workdir}/config.json: meta_holdout is 0, so no fold was held out")
    return config


def heldout_losses(workdir: str, run: str) -> dict:
    """Per kind of target turn: held-out and training examples, their mean loss, and the kind's share of the
    held-out fold's total loss."""
    config = saved_config(workdir)
    method, size, seed = run.rsplit("-", 2)[0], int(run.rsplit("-", 2)[1]), int(run.rsplit("seed", 1)[1])
    data = load_data(config)
    program = DialogProgram(method, config, data)
    pools = data.train_pools(data.target_train(size, seed))
    step, _, best = restore_latest(
        Checkpointer(os.path.join(workdir, "checkpoints", run)), program.init(jax.random.key(0), pools)
    )
    params = best["state"].params
    n = program.pool_size(pools, TARGET)
    loss = jax.jit(lambda p, idx: program.loss_fn(p, program.batch_at(pools, TARGET, idx)))
    losses = program.per_example(lambda idx: loss(params, idx), n)
    folds = target_folds(program.target_groups(pools), config.meta_holdout, seed)
    held = np.zeros(n, bool)
    held[np.asarray(folds.outer[0])[: int(folds.outer_size[0])]] = True
    kinds = np.asarray(turn_kinds(data.target_train_split(size, seed)))
    total = float(losses[held].sum())
    rows = {
        k: {
            "held_out": int((held & (kinds == k)).sum()),
            "held_out_loss": float(losses[held & (kinds == k)].mean()),
            "share_of_held_out_loss": float(losses[held & (kinds == k)].sum()) / total,
            "training_loss": float(losses[~held & (kinds == k)].mean()),
        }
        for k in sorted(set(kinds.tolist()))
    }
    return {
        "run": run,
        "best_step": int(best["step"]),
        "checkpoint_step": int(step),
        "examples": n,
        "held_out": int(held.sum()),
        "kinds": rows,
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = heldout_losses(FLAGS.workdir, FLAGS.run)
    atomic_write_json(os.path.join(FLAGS.workdir, "heldout_losses.json"), out)
    print(f"{out['run']} at its best step {out['best_step']}:")
    print("| kind | held out | held-out loss | share of the held-out loss | training loss |\n|---|---|---|---|---|")
    for kind, r in out["kinds"].items():
        print(
            f"| {kind} | {r['held_out']} | {r['held_out_loss']:.2f} | {r['share_of_held_out_loss']:.2f} | "
            f"{r['training_loss']:.1e} |"
        )


if __name__ == "__main__":
    flags.DEFINE_string(
        "workdir", None, "A dialog launcher workdir with a held-out fold and checkpoints.", required=True
    )
    flags.DEFINE_string("run", "meta_net-100-seed0", "The run (its checkpoint folder's name).")
    app.run(main)
