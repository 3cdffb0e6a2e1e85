r"""Adds the per-kind test accuracy to finished dialog runs made before the launcher recorded it.

    python -m experiments.dialog_rescore --config=configs/dialog.py --workdir=DIR [--rerun=METHOD,...]

For every record of ``DIR/results.json`` without ``test_accuracy_by_kind``, restores the run's selected
(best-dev) parameters from its last checkpoint under ``DIR/checkpoints`` (or, for the methods in
``--rerun``, trains the run again when its checkpoint is gone), re-evaluates the test set, checks that this
reproduces the recorded test per-response accuracy exactly, and adds the field; records that can be neither
restored nor rerun are left as they are. Then rewrites ``results.json`` and ``summary.md``. ``--config``
must be the config the workdir was run with.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.common import RunStore, as_list, write_outputs
from experiments.dialog import (DialogProgram, accuracies, accuracy_by_kind, load_data, run_name, run_one,
                                summarize, target_train_pool, validate_config)
from metadial.data.babi_dialog import bot_turn_kind
from metadial.io import read_json
from metadial.loop import restore_latest

FLAGS = flags.FLAGS


def rescore(config, workdir: str, rerun: Sequence[str] = ()) -> list[dict]:
    validate_config(config)
    store = RunStore(workdir, config, config.keep_checkpoints)
    if not store.records:
        raise ValueError(f"{os.path.join(workdir, 'results.json')}: no finished runs to rescore")
    corpus, data = load_data(config)
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
        program = programs.setdefault(method, DialogProgram(method, config, corpus))
        pools = {"target": target_train_pool(corpus, size, seed), "related": data["related_pool"]}
        if has_checkpoint:
            checkpointer = store.checkpointer(name)
            if checkpointer.latest_step() != record["train_steps"]:
                raise ValueError(f"{checkpointer.directory}: expected the final checkpoint (step "
                                 f"{record['train_steps']}), found {checkpointer.latest_step()}")
            like = program.init(jax.random.PRNGKey(0), pools)  # gives the structure only
            _, _, best = restore_latest(checkpointer, like)
            correct = program.correct(best["state"].params, data["test_pool"], data["test"])
            test_response = accuracies(correct, data["test"])[0]
            by_kind = accuracy_by_kind(correct, data["test_kinds"])
        else:
            run_data = dict(data, target_train=pools["target"])
            again, _ = run_one(program, run_data, seed, size, store)
            test_response, by_kind = again["test_response_accuracy"], again["test_accuracy_by_kind"]
        if test_response != record["test_response_accuracy"]:
            raise ValueError(f"{name}: {'the checkpoint' if has_checkpoint else 'the rerun'} gives test accuracy "
                             f"{test_response}, the record {record['test_response_accuracy']}; not the same run")
        record["test_accuracy_by_kind"] = by_kind
        logging.info("%s: %s", name, by_kind)
    weights_path = os.path.join(workdir, "related_weights.json")
    runs, kinds = [], []
    if os.path.exists(weights_path):
        weights = read_json(weights_path)
        runs, kinds = weights["runs"], [bot_turn_kind(e["bot"]) for e in weights["examples"]]
    write_outputs(workdir, store.records, summarize(store.records, runs, kinds, config))
    return store.records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rescore(FLAGS.config, FLAGS.workdir, as_list(FLAGS.rerun))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", "configs/dialog.py", "The config the workdir was run with.")
    flags.DEFINE_string("workdir", None, "A dialog launcher workdir.", required=True)
    flags.DEFINE_string("rerun", "", "Comma-separated methods whose runs are trained again when their "
                        "checkpoint is gone.")
    app.run(main)
