r"""Adds the per-kind test accuracy to finished dialog runs made before the launcher recorded it.

    python -m tools.rescore [--config=experiments/dialog/configs/default.py] --workdir=DIR [--rerun=METHOD,...]

For every record of ``DIR/results.json`` without ``test_accuracy_by_kind``, restores the run's selected
(best-dev) parameters from its last checkpoint under ``DIR/checkpoints`` (or, for the methods in
``--rerun``, trains the run again when its checkpoint is gone), re-evaluates the test set, checks that this
reproduces the recorded test per-response accuracy exactly, and adds the field; records that can be neither
restored nor rerun are left as they are. Then rewrites ``results.json`` and ``summary.md``. ``--config``
must be the config the workdir was run with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import ml_collections
from absl import flags, logging

from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram, accuracies
from experiments.dialog.train import DEFAULT_CONFIG, mean_by_kind, run_name, run_one, summarize, validate_config
from experiments.shared.cli import run_launcher
from experiments.shared.config import ConfigError, as_list
from experiments.shared.store import RunStore, write_outputs
from metadial.data.babi_dialog import bot_turn_kind
from metadial.io import read_json
from metadial.loop import restore_latest


def rescore(config: ml_collections.ConfigDict, workdir: str, rerun: Sequence[str] = ()) -> list[dict]:
    """Adds ``test_accuracy_by_kind`` to the records of ``workdir`` that lack it (see the module docstring);
    returns the records."""
    validate_config(config)
    results = os.path.join(workdir, "results.json")
    if not os.path.exists(results):
        raise ConfigError(f"--workdir={workdir}: no {results} (not a dialog launcher workdir with finished runs)")
    store = RunStore(workdir, config)
    if not store.records:
        raise ConfigError(f"{results}: no finished runs to rescore")
    data = load_data(config)
    placed = None
    programs: dict[str, DialogProgram] = {}
    for record in store.records:
        if "test_accuracy_by_kind" in record:
            continue
        method, size, seed = record["method"], record["target_dialogs"], record["seed"]
        name = run_name(method, size, seed)
        has_checkpoint = os.path.isdir(store.checkpoint_dir(name))
        if not has_checkpoint and method not in rerun:
            logging.warning("%s: no checkpoint (and not in --rerun); left without per-kind accuracy", name)
            continue
        if method not in programs:  # built once per method
            programs[method] = DialogProgram(method, config, data)
        program = programs[method]
        placed = placed or data.on_mesh(program.mesh)
        pools = data.train_pools(data.target_train(size, seed))
        if has_checkpoint:
            checkpointer = store.checkpointer(name)
            if checkpointer.latest_step() != record["train_steps"]:
                raise ValueError(
                    f"{checkpointer.directory}: expected the final checkpoint (step "
                    f"{record['train_steps']}), found {checkpointer.latest_step()}"
                )
            like = program.init(jax.random.key(0), pools)  # gives the structure only
            _, _, best = restore_latest(checkpointer, like)
            correct = program.correct(best["state"].params, data.test)
            test_response = accuracies(correct, data.test)[0]
            by_kind = mean_by_kind(correct, data.test.kinds)
        else:
            again, _ = run_one(program, placed, seed, size, store)
            test_response, by_kind = again["test_response_accuracy"], again["test_accuracy_by_kind"]
        if test_response != record["test_response_accuracy"]:
            raise ValueError(
                f"{name}: {'the checkpoint' if has_checkpoint else 'the rerun'} gives test accuracy "
                f"{test_response}, the record {record['test_response_accuracy']}; not the same run"
            )
        record["test_accuracy_by_kind"] = by_kind
        logging.info("%s: %s", name, by_kind)
    weights_path = os.path.join(workdir, "related_weights.json")
    runs, kinds = [], []
    if os.path.exists(weights_path):
        weights = read_json(weights_path)
        runs, kinds = weights["runs"], [bot_turn_kind(e["bot"]) for e in weights["examples"]]
    write_outputs(workdir, store.records, summarize(store.records, runs, kinds, config))
    return store.records


if __name__ == "__main__":
    flags.DEFINE_string(
        "rerun", "", "Comma-separated methods whose runs are trained again when their checkpoint is gone."
    )
    run_launcher(
        lambda config, workdir: rescore(config, workdir, as_list(flags.FLAGS.rerun)),
        DEFAULT_CONFIG,
        "a dialog launcher workdir: results.json and summary.md are rewritten",
    )
