r"""Continues dialog runs that early stopping ended under a more patient rule, without redoing their steps.

    python -m tools.continue_runs --source=OLD_DIR --workdir=NEW_DIR --patience=P

Runs are deterministic, so a run under patience ``P`` follows the same steps as the same run under a smaller
patience up to where the impatient one stopped. For every launcher workdir under ``OLD_DIR`` (a folder with
``config.json`` and ``results.json``; e.g. each part of a sweep), this writes the same relative workdir under
``NEW_DIR`` with:

* ``config.json``: the old config with ``patience=P`` (the only field allowed to change);
* each finished run's last checkpoint in today's layout (normally the step where it stopped, with the best
  state so far; an older one is as good, the run then redoes the steps after it), the wall-clock the run had
  spent up to it (from its record, prorated by steps if the checkpoint is older, so that its new record counts
  the whole run), and its ``metrics.jsonl`` lines (the resumed run drops those past its checkpoint); no records.

Re-running the launcher (or the sweep) on ``NEW_DIR`` with ``--config.patience=P`` then resumes every run
where it stopped and trains it on until ``P`` evaluations pass without improvement; records say where each
run resumed (``resumed_from_step``). A run without a checkpoint at or before its stopping step is left out (it
starts afresh). ``NEW_DIR``'s workdirs must not hold runs yet.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from experiments.dialog.train import run_key, run_name
from experiments.shared.cli import USER_ERRORS
from experiments.shared.config import ConfigError
from metadial.checkpoint import Checkpointer
from metadial.io import atomic_write_text, read_json

FLAGS = flags.FLAGS


def launcher_workdirs(source: str, finished_runs: bool = True) -> list[str]:
    """The folders under ``source`` (itself included) that hold a launcher's ``config.json`` and, with
    ``finished_runs``, its ``results.json``, relative to ``source``, sorted."""
    found = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "tensorboard", "plots"))
        if "config.json" in files and ("results.json" in files or not finished_runs):
            found.append(os.path.relpath(folder, source))
    return sorted(found)


def upgrade_layout(tree: dict) -> dict:
    """A checkpoint tree (``{"state", "best": {"state", ...}}``, as restored without a target) in today's layout:
    states written before ``MetaState`` carried a ``WeightingState`` (commit b0f6bd2) kept ``meta_params`` and
    ``meta_opt_state`` on the state itself; the look-ahead estimator's state is empty."""

    def upgrade(state: dict) -> dict:
        if "meta_params" not in state:
            return state
        state = dict(state)
        weighting = {k: state.pop(k) for k in ("meta_params", "meta_opt_state")}
        return dict(state, weighting=dict(weighting, estimator_state=()))

    return dict(tree, state=upgrade(tree["state"]), best=dict(tree["best"], state=upgrade(tree["best"]["state"])))


def copy_checkpoint(src: Checkpointer, dest: str, step: int, info: dict) -> None:
    """Copies the checkpoint of ``step`` from ``src`` to the checkpoint directory ``dest``, in today's layout,
    with ``info`` saved beside it (see ``Checkpointer.save``)."""
    Checkpointer(dest).save(step, upgrade_layout(src.restore(step)), info)


def continue_workdir(source: str, dest: str, patience: int) -> list[str]:
    """Prepares ``dest`` to continue the runs of the launcher workdir ``source`` under ``patience``; returns
    the names of the runs prepared."""
    config = read_json(os.path.join(source, "config.json"))
    old = int(config.get("patience", 0))
    if not 0 < old < patience:
        raise ConfigError(
            f"{source}/config.json: patience {old}; --patience={patience} must be larger, and the old runs must "
            "have stopped early (patience > 0)"
        )
    if os.path.exists(os.path.join(dest, "results.json")) or os.path.isdir(os.path.join(dest, "checkpoints")):
        raise ConfigError(f"{dest}: already holds runs; use a new --workdir")
    os.makedirs(dest, exist_ok=True)
    atomic_write_text(
        os.path.join(dest, "config.json"), json.dumps(dict(config, patience=patience), sort_keys=True, indent=1) + "\n"
    )
    prepared, metrics_keys = [], []
    for record in read_json(os.path.join(source, "results.json")):
        name = run_name(record["method"], record["target_dialogs"], record["seed"])
        src_run = os.path.join(source, "checkpoints", name)
        src = Checkpointer(src_run) if os.path.isdir(src_run) else None
        step = src.latest_step() if src is not None else None
        if src is None or step is None or step > record["stopped_step"]:
            logging.warning(
                "%s: no checkpoint at or before its stopping step %d; left out", name, record["stopped_step"]
            )
            continue
        # the run's wall-clock up to the checkpoint: its record's, prorated when it stopped after the checkpoint
        seconds = round(record["wall_seconds"] * step / record["stopped_step"], 1)
        copy_checkpoint(src, os.path.join(dest, "checkpoints", name), step, {"seconds": seconds})
        prepared.append(name)
        metrics_keys.append(run_key(record))
    metrics_path = os.path.join(source, "metrics.jsonl")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            kept = [line for line in f if run_key(json.loads(line)) in metrics_keys]
        atomic_write_text(os.path.join(dest, "metrics.jsonl"), "".join(kept))
    return prepared


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        found = launcher_workdirs(FLAGS.source)
        if not found:
            raise ConfigError(f"--source: no launcher workdir (config.json and results.json) under {FLAGS.source}")
        for rel in found:
            dest = os.path.normpath(os.path.join(FLAGS.workdir, rel))
            names = continue_workdir(os.path.join(FLAGS.source, rel), dest, FLAGS.patience)
            print(f"{dest}: {len(names)} runs to continue ({', '.join(names)})")
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.DEFINE_string("source", None, "A launcher workdir, or a folder of them (e.g. a sweep's).", required=True)
    flags.DEFINE_string("workdir", None, "Where the continued runs go (same relative layout).", required=True)
    flags.DEFINE_integer("patience", None, "The new, larger patience.", required=True)
    app.run(main)
