r"""The converged dialog sweep: every method on each profile's target data and on ``small/``, one command.

    python -m experiments.dialog.sweep --workdir=results/dialog_sweep [--config.FIELD=VALUE ...] \
        [--parts=profiles,small_100,small_1000] [--summarize_only]

Parts (each an ordinary, resumable launcher workdir under ``DIR/<part>/<target_set>``):

* ``profiles``: ``target_dialogs=100`` on each of the six profiles of ``split-by-profile`` (the authors'
  setting: the first 100 training dialogs of the profile, its dev and test sets and candidates), one seed each:
  the profiles are the replicates;
* ``small_100`` and ``small_1000``: 100 and 1000 dialogs of ``small/``, 3 seeds.

Every run uses the config's budget rule (default: dev evaluation every 10 epochs, early stopping after 20
evaluations without improvement, at most 1000 epochs), except that ``small_1000`` runs at most
``--small_1000_max_epochs`` epochs (default 200, the authors' budget; 0: the config's ``max_epochs``). At 1000
dialogs an epoch is ten times as many steps: 200 epochs are 127k steps, twice what a 100-dialog run gets at its
1000-epoch cap; ``target_only`` there reached 81.59 % dev per-response by epoch 190 and 81.66 % by epoch 410
(``results/dialog_converged_target_only_1000``); and the part's 18 runs take at most about 11 h on 2 CPU cores at
200 epochs (``experiments.dialog.bench`` step times), up to 54 h at 1000.

``DIR/summary.md`` holds: per profile, test per-response accuracy of every method; mean ± std over profiles; each
method's paired difference to ``union`` per profile (mean, std, wins out of 6); when each run stopped; and the
small-set tables, each with its part's budget where it differs, the paired difference to ``union`` with the same
seed, and accuracy per kind of target turn and learned weight per kind of related turn over seeds.
"""

from __future__ import annotations

import copy
import json
import os

import ml_collections
import numpy as np
from absl import flags

from experiments.dialog import train
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import ConfigError, as_list
from experiments.shared.tables import format_mean_std, summary_table
from metadial.data.dialog_tasks import PROFILES
from metadial.io import atomic_write_text, read_json

PARTS: dict[str, list[tuple[str, dict]]] = {
    "profiles": [(p, dict(target_set=p, target_dialogs=(100,), num_seeds=1)) for p in PROFILES],
    "small_100": [("small", dict(target_set="small", target_dialogs=(100,), num_seeds=3))],
    "small_1000": [("small", dict(target_set="small", target_dialogs=(1000,), num_seeds=3))],
}


SMALL_1000_MAX_EPOCHS = 200


def part_configs(
    config: ml_collections.ConfigDict, parts: list[str], small_1000_max_epochs: int = SMALL_1000_MAX_EPOCHS
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """``(workdir relative to DIR, config)`` of every launcher run of ``parts``, each config checked
    (``small_1000`` at most ``small_1000_max_epochs`` epochs; 0: the config's ``max_epochs``)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"--parts: {', '.join(unknown) or 'nothing'} not known; parts: {', '.join(PARTS)}")
    out = []
    for part in parts:
        for name, changes in PARTS[part]:
            c = copy.deepcopy(config)
            c.update(changes)
            if part == "small_1000" and small_1000_max_epochs:
                c.max_epochs = small_1000_max_epochs
            train.validate_config(c)
            out.append((os.path.join(part, name), c))
    return out


def profile_tables(records: list[dict], methods: list[str]) -> str:
    """Per profile test accuracy, mean ± std over profiles, and the paired difference to ``union``."""
    acc = {(r["method"], r["target_set"]): 100 * r["test_response_accuracy"] for r in records}
    profiles = [p for p in PROFILES if any((m, p) in acc for m in methods)]
    text = "Test per-response accuracy (%) per profile (100 target dialogs, one seed):\n\n"
    text += "| method | " + " | ".join(profiles) + " | mean ± std |\n|---|" + "---|" * (len(profiles) + 1) + "\n"
    for m in methods:
        values = [acc.get((m, p)) for p in profiles]
        cells = [f"{v:.1f}" if v is not None else "–" for v in values]
        text += (
            f"| {m} | "
            + " | ".join(cells)
            + f" | {format_mean_std([v / 100 if v is not None else None for v in values], 100, 1)} |\n"
        )
    return text + paired_to_union(acc, methods, profiles, "profiles", "over the profiles where both ran")


def paired_to_union(
    acc: dict[tuple[str, object], float], methods: list[str], units: list, unit_name: str, pairing: str
) -> str:
    """Each method's paired difference to ``union`` in test accuracy (``acc``: (method, unit) -> %), over the
    ``units`` (profiles, or seeds of one target set) where both ran: mean, std, wins ("" before a ``union`` run
    has finished)."""
    if "union" not in methods or not any(("union", u) in acc for u in units):
        return ""
    text = (
        f"\nPaired difference to `union` (percentage points; > 0: better than `union`), {pairing}:\n\n"
        f"| method | mean | std | wins / {unit_name} |\n|---|---|---|---|\n"
    )
    for m in methods:
        if m == "union":
            continue
        diffs = [acc[(m, u)] - acc[("union", u)] for u in units if (m, u) in acc and ("union", u) in acc]
        if diffs:
            text += (
                f"| {m} | {np.mean(diffs):+.2f} | {np.std(diffs):.2f} | {sum(d > 0 for d in diffs)} / {len(diffs)} |\n"
            )
    return text


STOP_TABLE_COLUMNS = [
    ("best_step", "best step", 1.0, 0),
    ("stopped_step", "stopped at step", 1.0, 0),
    ("train_steps", "budget (steps)", 1.0, 0),
    ("wall_seconds", "seconds", 1.0, 0),
]


def late_dev_gain(metrics: list[dict], record: dict, evaluations: int) -> float | None:
    """How much a run's best dev score rose over its last ``evaluations`` evaluations (accuracy, a fraction),
    from its ``metrics.jsonl`` lines; ``None`` if it had no evaluation before those."""
    key = train.run_key(record)
    scores = [(e["step"], e["dev_accuracy"]) for e in metrics if train.run_key(e) == key and "dev_accuracy" in e]
    cut = record["stopped_step"] - evaluations * record["eval_every"]
    before = [score for step, score in scores if step <= cut]
    return max(score for _, score in scores) - max(before) if before else None


def late_evaluations(records: list[dict], patience: int) -> int:
    """How many last evaluations ``late_dev_gain`` looks back over for these runs: the ``patience``, or a quarter
    of a budget's evaluations where that is fewer (``small_1000``: 20 evaluations in all, so its last 5, 50
    epochs)."""
    return min([patience] + [r["train_steps"] // r["eval_every"] // 4 for r in records])


def budget_hits(records: list[dict], evaluations: int = 0) -> str:
    """One sentence: how many runs early stopping ended, and which ran to the end of the budget (not shown to
    have converged); with ``evaluations``, how much those runs' best dev score still rose over their last
    ``evaluations`` evaluations (records' ``late_dev_gain``)."""
    if not records:
        return ""
    full = [r for r in records if r["stopped_step"] >= r["train_steps"]]
    text = f"Early stopping ended {len(records) - len(full)} of {len(records)} runs"
    if not full:
        return text + ".\n"
    if len(full) == len(records):
        text = (
            f"Early stopping ended none of the {len(records)} runs: each ran to the end of the budget, so none "
            "is shown to have converged"
        )
    else:
        names = ", ".join(f"{r['method']} ({r['target_set']}, seed {r['seed']})" for r in full)
        text += (
            f"; the other {len(full)} ran to the end of the budget, so they are not shown to have converged: {names}"
        )
    gains = [100 * r["late_dev_gain"] for r in full if r.get("late_dev_gain") is not None]
    if evaluations and gains:
        text += (
            f". Over their last {evaluations} evaluations their best dev per-response accuracy rose by "
            f"{np.mean(gains):.2f} points on average (at most {max(gains):.2f})"
        )
    return text + ".\n"


def wall_clock(records: list[dict]) -> str:
    """One sentence: the runs' total wall-clock (one run at a time on this machine; a resumed run counts the
    time it spent up to its checkpoint, as saved beside it)."""
    seconds = sum(r.get("wall_seconds", 0.0) for r in records)
    return f"Wall-clock of these {len(records)} runs, one at a time: {seconds / 3600:.1f} h.\n" if records else ""


def summarize(
    results: dict[str, list[dict]],
    config: ml_collections.ConfigDict,
    weights: dict[str, tuple[list[dict], list[str]]] | None = None,
    part_config: dict[str, ml_collections.ConfigDict] | None = None,
) -> str:
    """The sweep's tables from each part's records (``results``: part -> records) and learned weights
    (``weights``: part -> (weight runs, kind of every related example)); ``part_config``: a part's own config
    where its budget differs from ``config``'s (said in its heading)."""
    weights, part_config = weights or {}, part_config or {}
    methods = as_list(config.methods)
    text = f"Converged dialog sweep: {train.budget_text(config)}; related data bAbI dialog task 5.\n\n"
    if results.get("profiles"):
        text += profile_tables(results["profiles"], methods)
        text += "\nWhen each run stopped (steps; mean ± std over profiles):\n\n"
        text += summary_table(results["profiles"], ["method"], STOP_TABLE_COLUMNS)
        window = late_evaluations(results["profiles"], config.patience)
        text += "\n" + budget_hits(results["profiles"], window) + wall_clock(results["profiles"])
        by_kind = train.kind_accuracy_table(results["profiles"], ["method"])
        if by_kind:
            text += "\nTest per-response accuracy (%) by kind of target bot turn, mean ± std over profiles:\n\n"
            text += by_kind
        weight_runs, kinds = weights.get("profiles", ([], []))
        if weight_runs:
            text += "\nMean learned weight of each kind of related bot turn, mean ± std over profiles:\n\n"
            text += train.kind_table(weight_runs, kinds)
    for part in ("small_100", "small_1000"):
        if results.get(part):
            own = part_config.get(part, config)
            budget = train.budget_text(own)
            budget = f" ({budget})" if budget != train.budget_text(config) else ""
            text += f"\n`small/`, {part.split('_')[1]} target dialogs{budget}, mean ± std over seeds:\n\n"
            text += summary_table(
                results[part],
                ["method", "target_dialogs"],
                [c for c in train.SUMMARY_COLUMNS if not c[0].endswith("dialog_accuracy")] + train.STOP_COLUMNS,
            )
            acc = {(r["method"], r["seed"]): 100 * r["test_response_accuracy"] for r in results[part]}
            seeds = sorted({r["seed"] for r in results[part]})
            text += paired_to_union(acc, methods, seeds, "seeds", "same seed")
            window = late_evaluations(results[part], own.patience)
            text += "\n" + budget_hits(results[part], window) + wall_clock(results[part])
            by_kind = train.kind_accuracy_table(results[part], ["method"])
            if by_kind:
                text += "\nTest per-response accuracy (%) by kind of target bot turn, mean ± std over seeds:\n\n"
                text += by_kind
            weight_runs, kinds = weights.get(part, ([], []))
            if weight_runs:
                text += "\nMean learned weight of each kind of related bot turn, mean ± std over seeds:\n\n"
                text += train.kind_table(weight_runs, kinds)
    return text


def with_late_dev_gain(records: list[dict], folder: str, evaluations: int) -> list[dict]:
    """``records`` with their ``late_dev_gain`` over their last ``evaluations`` evaluations, from ``folder``'s
    ``metrics.jsonl`` (unchanged without one); a record with a final fit (``before_refit``) is measured on that
    fit's evaluations (its lines' method is the record's with ``-refit``)."""
    metrics_path = os.path.join(folder, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        return records
    with open(metrics_path) as f:
        metrics = [json.loads(line) for line in f]
    out = []
    for r in records:
        measured = dict(r, method=r["method"] + "-refit") if "before_refit" in r else r
        out.append(dict(r, late_dev_gain=late_dev_gain(metrics, measured, evaluations)))
    return out


def finished_records(workdir: str, runs: list[tuple[str, ml_collections.ConfigDict]]) -> dict[str, list[dict]]:
    """The finished records of every part under ``workdir`` (part -> records), as far as they have run; each
    with ``late_dev_gain`` (see ``late_dev_gain``; over its ``late_evaluations``), not saved."""
    results: dict[str, list[dict]] = {}
    for sub, c in runs:
        path = os.path.join(workdir, sub, "results.json")
        records = read_json(path) if os.path.exists(path) else []
        if records:
            records = with_late_dev_gain(records, os.path.join(workdir, sub), late_evaluations(records, c.patience))
        results.setdefault(sub.split(os.sep)[0], []).extend(records)
    return results


def finished_weights(workdir: str, runs: list[tuple[str, ml_collections.ConfigDict]]) -> dict[str, tuple[list, list]]:
    """Per part: the weight runs (``related_weights.json``) of its finished runs, and the kind of every related
    example (the same related data in every folder of a part)."""
    out: dict[str, tuple[list, list]] = {}
    for sub, _ in runs:
        path = os.path.join(workdir, sub, "related_weights.json")
        results_path = os.path.join(workdir, sub, "results.json")
        if not (os.path.exists(path) and os.path.exists(results_path)):
            continue
        done = {train.run_key(r) for r in read_json(results_path)}
        saved = read_json(path)
        part_runs, kinds = out.setdefault(sub.split(os.sep)[0], ([], []))
        part_runs += [r for r in saved["runs"] if train.run_key(r) in done]
        kinds[:] = kinds or [e["kind"] for e in saved["examples"]]
    return out


def write_summary(
    config: ml_collections.ConfigDict, workdir: str, small_1000_max_epochs: int = SMALL_1000_MAX_EPOCHS
) -> tuple[str, str]:
    """Writes ``workdir/summary.md`` from the finished runs of every part; returns its path and text."""
    runs = part_configs(config, list(PARTS), small_1000_max_epochs)
    part_config = {sub.split(os.sep)[0]: c for sub, c in runs}
    text = summarize(finished_records(workdir, runs), config, finished_weights(workdir, runs), part_config)
    path = os.path.join(workdir, "summary.md")
    atomic_write_text(path, text)
    return path, text


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    parts: list[str],
    summarize_only: bool = False,
    small_1000_max_epochs: int = SMALL_1000_MAX_EPOCHS,
) -> str:
    """Runs the launcher for every target set of ``parts`` (resumable; the summary is rewritten after each),
    or, with ``summarize_only``, only rewrites the summary from the runs finished so far."""
    runs = part_configs(config, parts, small_1000_max_epochs)  # every config is checked before any data is read
    if not summarize_only:
        for sub, c in runs:
            train.run(c, os.path.join(workdir, sub))
            write_summary(config, workdir, small_1000_max_epochs)
    path, text = write_summary(config, workdir, small_1000_max_epochs)
    report([path], text)
    return text


if __name__ == "__main__":
    flags.DEFINE_list("parts", list(PARTS), f"Parts of the sweep to run, from: {', '.join(PARTS)}.")
    flags.DEFINE_bool("summarize_only", False, "Only rewrite DIR/summary.md from the runs finished so far.")
    flags.DEFINE_integer(
        "small_1000_max_epochs",
        SMALL_1000_MAX_EPOCHS,
        "At most this many epochs for the small_1000 part (0: the config's max_epochs).",
    )
    run_launcher(
        lambda config, workdir: run(
            config, workdir, flags.FLAGS.parts, flags.FLAGS.summarize_only, flags.FLAGS.small_1000_max_epochs
        ),
        train.DEFAULT_CONFIG,
        "one launcher workdir per part and target set, and summary.md",
    )
