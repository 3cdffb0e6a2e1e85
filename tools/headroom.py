r"""Where a dialog method's test errors are: the points of test per-response accuracy it loses on each kind of bot
turn, per profile, and so how much any reweighting of the related data could still gain on the kinds it already
answers.

    python -m tools.headroom --workdir=results/dialog_sweep [--methods=union,meta_net] \
        [--parts=profiles,small_100,small_1000] [--out=FILE]

For every run of each method in the parts of a converged sweep (``DIR/profiles/<profile>/results.json``,
``DIR/small_100/small/results.json``, ...), the points lost
on kind ``k`` are ``100 * share of k among the test turns * (1 - accuracy on k)``; they add up to ``100 - test
per-response accuracy``. The test turns' kinds come from the run's test set (the package's data). Prints a
table per part (each method's mean over its runs last) and writes them to ``--out`` (markdown) if given.
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


def kind_counts_of_test_set(target_set: str) -> dict[str, int]:
    """How many test bot turns of each kind the target set's (a profile's, or ``small``'s) test set has."""
    config = get_config()
    config.target_set, config.target_dialogs = target_set, (100,)
    return dict(collections.Counter(load_data(config).test.kinds))


# part of a sweep -> (target set of each of its folders, folder relative to the sweep's workdir)
PARTS = {
    "profiles": [(p, os.path.join("profiles", p)) for p in PROFILES],
    "small_100": [("small", os.path.join("small_100", "small"))],
    "small_1000": [("small", os.path.join("small_1000", "small"))],
}


def headroom_rows(workdir: str, part: str, methods: list[str]) -> list[tuple[str, str, str, dict]]:
    """``(method, row label, target set, record)`` of every finished run of ``methods`` in a part of the sweep
    (rows labelled by profile, or by seed on ``small/``)."""
    rows = []
    for target_set, folder in PARTS[part]:
        path = os.path.join(workdir, folder, "results.json")
        records = read_json(path) if os.path.exists(path) else []
        for method in methods:
            for r in (r for r in records if r["method"] == method):
                label = target_set if part == "profiles" else f"{target_set}, seed {r['seed']}"
                rows.append((method, label, target_set, r))
    return rows


def headroom_table(rows: list[tuple[str, str, str, dict]], counts: dict[str, dict[str, int]]) -> str:
    """Markdown: per ``headroom_rows`` row the points lost on each kind and in all, then each method's mean
    (``counts``: test turns per kind, per target set)."""
    lost = [
        (method, label, lost_points(r["test_accuracy_by_kind"], counts[target]), 100 * r["test_response_accuracy"])
        for method, label, target, r in rows
    ]
    if not lost:
        return "No finished runs of those methods.\n"
    kinds = sorted({k for _, _, by_kind, _ in lost for k in by_kind})
    text = "| method | run | test per-response (%) | " + " | ".join(kinds) + " | all kinds |\n"
    text += "|---" * (len(kinds) + 4) + "|\n"
    for method in dict.fromkeys(m for m, *_ in lost):
        mine = [row for row in lost if row[0] == method]
        for _, label, by_kind, accuracy in mine:
            cells = " | ".join(f"{by_kind.get(k, 0.0):.2f}" for k in kinds)  # no turn of k: nothing lost
            text += f"| {method} | {label} | {accuracy:.1f} | {cells} | {sum(by_kind.values()):.2f} |\n"
        mean = {k: float(np.mean([by_kind.get(k, 0.0) for _, _, by_kind, _ in mine])) for k in kinds}
        accuracy = float(np.mean([a for *_, a in mine]))
        cells = " | ".join(f"{mean[k]:.2f}" for k in kinds)
        text += f"| {method} | mean | {accuracy:.1f} | {cells} | {sum(mean.values()):.2f} |\n"
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [p for p in FLAGS.parts if p not in PARTS]
    if unknown:
        raise app.UsageError(f"--parts: {', '.join(unknown)} not known; parts: {', '.join(PARTS)}")
    text = (
        "Points of test per-response accuracy lost on each kind of bot turn (share of the test turns times the "
        f"error on them, %), from `python -m tools.headroom --workdir={FLAGS.workdir} "
        f"--methods={','.join(FLAGS.methods)} --parts={','.join(FLAGS.parts)}`.\n"
    )
    counts: dict[str, dict[str, int]] = {}
    for part in FLAGS.parts:
        rows = headroom_rows(FLAGS.workdir, part, FLAGS.methods)
        for target in {target for _, _, target, _ in rows} - set(counts):
            counts[target] = kind_counts_of_test_set(target)
        text += f"\n`{part}`:\n\n" + headroom_table(rows, counts)
    if FLAGS.out:
        atomic_write_text(FLAGS.out, text)
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", "results/dialog_sweep", "A converged sweep's workdir (profiles/<profile>/).")
    flags.DEFINE_list("methods", ["union", "meta_net"], "Methods of the sweep's records.")
    flags.DEFINE_list("parts", ["profiles"], f"Parts of the sweep, from: {', '.join(PARTS)}.")
    flags.DEFINE_string("out", None, "Markdown file to write the table to (optional).")
    app.run(main)
