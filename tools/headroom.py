r"""Where a dialog method's test errors are: the points of test per-response accuracy it loses on each kind of bot
turn, per profile, and so how much any reweighting of the related data could still gain on the kinds it already
answers.

    python -m tools.headroom --workdir=results/dialog_sweep [--methods=union,meta_net] [--out=FILE]

For every profile of a converged sweep (``DIR/profiles/<profile>/results.json``) and each method, the points lost
on kind ``k`` are ``100 * share of k among the test turns * (1 - accuracy on k)``; they add up to ``100 - test
per-response accuracy``. The test turns' kinds come from the profile's test set (the package's data). Prints the
table (mean over profiles last) and writes it to ``--out`` (markdown) if given.
"""

from __future__ import annotations

import collections
import os

import numpy as np
from absl import app, flags

from experiments.dialog.configs.default import get_config
from experiments.dialog.data import load_data
from metadial.data.dialog_tasks import PROFILES
from metadial.io import atomic_write_text, read_json

FLAGS = flags.FLAGS


def lost_points(accuracy_by_kind: dict[str, float], kind_counts: dict[str, int]) -> dict[str, float]:
    """Points of per-response accuracy lost on each kind: its share of the turns times the error on it (%)."""
    missing = sorted(set(kind_counts) - set(accuracy_by_kind))
    if missing:
        raise ValueError(f"no accuracy for the kinds {missing} (record's test_accuracy_by_kind)")
    total = sum(kind_counts.values())
    return {k: 100.0 * n / total * (1.0 - accuracy_by_kind[k]) for k, n in sorted(kind_counts.items())}


def kind_counts_of_test_set(profile: str) -> dict[str, int]:
    """How many test bot turns of each kind the profile's test set has."""
    config = get_config()
    config.target_set, config.target_dialogs = profile, (100,)
    return dict(collections.Counter(load_data(config).test.kinds))


def headroom_table(workdir: str, methods: list[str], counts: dict[str, dict[str, int]]) -> str:
    """Markdown: per (method, profile) the points lost on each kind and in all, then each method's mean."""
    rows: list[tuple[str, str, dict[str, float], float]] = []
    for profile in PROFILES:
        path = os.path.join(workdir, "profiles", profile, "results.json")
        records = {r["method"]: r for r in read_json(path)} if os.path.exists(path) else {}
        for method in methods:
            if method in records:
                r = records[method]
                lost = lost_points(r["test_accuracy_by_kind"], counts[profile])
                rows.append((method, profile, lost, 100.0 * r["test_response_accuracy"]))
    if not rows:
        return "No finished runs of those methods.\n"
    kinds = sorted({k for _, _, lost, _ in rows for k in lost})
    header = "| method | profile | test per-response (%) | " + " | ".join(kinds) + " | all kinds |\n"
    text = header + "|---" * (len(kinds) + 4) + "|\n"
    for method in methods:
        mine = [row for row in rows if row[0] == method]
        for _, profile, lost, accuracy in mine:
            cells = " | ".join(f"{lost.get(k, 0.0):.2f}" for k in kinds)  # no turn of k: nothing lost
            text += f"| {method} | {profile} | {accuracy:.1f} | {cells} | {sum(lost.values()):.2f} |\n"
        if mine:
            mean = {k: float(np.mean([lost.get(k, 0.0) for _, _, lost, _ in mine])) for k in kinds}
            accuracy = float(np.mean([a for *_, a in mine]))
            cells = " | ".join(f"{mean[k]:.2f}" for k in kinds)
            text += f"| {method} | mean | {accuracy:.1f} | {cells} | {sum(mean.values()):.2f} |\n"
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    counts = {profile: kind_counts_of_test_set(profile) for profile in PROFILES}
    text = (
        "Points of test per-response accuracy lost on each kind of bot turn (share of the test turns times the "
        f"error on them, %), from `python -m tools.headroom --workdir={FLAGS.workdir} "
        f"--methods={','.join(FLAGS.methods)}`:\n\n" + headroom_table(FLAGS.workdir, FLAGS.methods, counts)
    )
    if FLAGS.out:
        atomic_write_text(FLAGS.out, text)
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", "results/dialog_sweep", "A converged sweep's workdir (profiles/<profile>/).")
    flags.DEFINE_list("methods", ["union", "meta_net"], "Methods of the sweep's records.")
    flags.DEFINE_string("out", None, "Markdown file to write the table to (optional).")
    app.run(main)
