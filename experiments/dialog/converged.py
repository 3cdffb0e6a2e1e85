r"""The converged dialog comparison: does meta-learned weighting of related dialog data beat multi-task training
when both are trained to convergence? One command, resumable.

    python -m experiments.dialog.converged --workdir=results/dialog_converged [--sweep=results/dialog_sweep] \
        [--related=babi,babi+profiles] [--profiles=female_elderly,...] [--cells=base,mwnet,...] \
        [--config.FIELD=VALUE ...] [--summarize_only]

On each of the six profiles at 100 target dialogs (one seed: the profiles are the replicates), under the default
budget rule (dev evaluation every 10 epochs, early stopping after 20 evaluations without improvement), with two
kinds of related data: ``babi`` (bAbI task 5) and ``babi+profiles`` (bAbI task 5 and 1000 dialogs of the other
five profiles; ``config.related_sources``). The rows:

* ``target_only``, ``union``, ``pretrain_finetune``, ``l2rw`` and ``meta_net (lookahead)``: with ``babi``, the
  converged sweep's runs (``--sweep``, same config); with ``babi+profiles``, run here (``target_only`` does not
  use related data: its ``babi`` runs serve both tables);
* ``mwnet`` (Meta-Weight-Net, the published one-step look-ahead);
* ``meta_net (implicit, Gauss-Newton, weighted, held out, final fit)``: the estimator and sampling that won on the
  ideal task, with the Gauss-Newton matrix for the Hessian (with the Hessian, ``v`` diverged on ``female_elderly``:
  the dialog model's Hessian is indefinite; ``experiments.dialog.estimators``);
* ``meta_net (trajectory, held out, final fit)``: segments of ``TRAJECTORY_STEPS`` real steps
  (``experiments.dialog.estimators``).

Both long-horizon rows take their outer loss on a quarter of the target dialogs held out (a fixed fold), then fit a
fresh model on all the target dialogs with the learned weighting held fixed (``meta_holdout_refit``;
``experiments.dialog.estimators``): over a horizon of hundreds of steps, an outer loss on the very examples the
model trains on rewards dropping the related data (the model then fits those examples best), and a fold that rotates
is fitted within the steps the model trains on it (its outer loss falls to about 1e-6 on ``female_elderly``).

Each cell is an ordinary launcher workdir ``DIR/<related>/<profile>/<cell>``. ``DIR/results.json`` holds every
record of the comparison (each with ``row`` and ``related_sources``); ``DIR/summary.md`` opens with the whole
comparison in one table (``headline``: each row's paired difference to ``union``, wins and time as a multiple of
``union``'s, per kind of related data; the README's copy: ``tools.publish --first_table``), then holds, per kind of
related data: test per-response accuracy per profile with mean ± std, the paired difference to ``union`` (mean,
std, wins out of 6), whether the goal (the best ``meta_net`` at least 3 points above ``union`` on average and on
every profile) is met, when the runs stopped, and the mean learned weight per kind of turn (and, with several
sources, per source and per source and kind). ``DIR/weights.json`` holds those weight means per run, from which
``python -m tools.plots --workdir=DIR`` draws the figures. ``python -m tools.publish --summary=DIR/summary.md
--name=dialog_converged --readme=results/dialog_converged.md`` copies the summary into the report.

``--related``, ``--profiles`` and ``--cells`` (names of ``CELLS``: ``base`` holds the rows the sweep gives for
``babi``) choose which cells this command runs, in that order (bAbI first on every profile by default; e.g.
``--related=babi+profiles --cells=base`` runs the second source's main rows on every profile first); whatever they
choose, the three files are rewritten from every finished run in ``DIR`` and the sweep, so
a command that runs part of the comparison never drops the rest from them.
"""

from __future__ import annotations

import copy
import os

import ml_collections
import numpy as np
from absl import flags

from experiments.dialog import train
from experiments.dialog.estimators import FIXED_FOLD_AND_REFIT, TRAJECTORY
from experiments.dialog.sweep import STOP_TABLE_COLUMNS, profile_tables, with_late_dev_gain
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import check_flag_choices
from experiments.shared.store import diverged_cells, run_cell
from experiments.shared.tables import format_mean_std, summary_table
from metadial.data.dialog_tasks import PROFILES, RELATED_SOURCES
from metadial.io import atomic_write_json, atomic_write_text, read_json
from tools.plots import GOAL  # the goal: the best meta_net this many points above union

SWEEP_METHODS = ("target_only", "union", "pretrain_finetune", "l2rw", "meta_net")  # the sweep's, reused for babi
BASE_METHODS = ("union", "pretrain_finetune", "l2rw", "meta_net")  # run here with babi+profiles
LOOKAHEAD = dict(estimator="lookahead", related_sampling="uniform")
HELD_OUT = FIXED_FOLD_AND_REFIT  # the long-horizon rows: outer loss on a fixed held-out fold, then a final fit
CELLS: dict[str, tuple[tuple[str, ...], dict]] = {
    "base": (BASE_METHODS, LOOKAHEAD),
    "mwnet": (("mwnet",), LOOKAHEAD),
    "meta_net-implicit-gn-weighted-holdout-refit": (
        ("meta_net",),
        dict(estimator="implicit", implicit_gauss_newton=True, related_sampling="weighted", **HELD_OUT),
    ),
    "meta_net-trajectory-holdout-refit": (("meta_net",), dict(TRAJECTORY, related_sampling="uniform", **HELD_OUT)),
}
ROWS = [
    "target_only",
    "union",
    "pretrain_finetune",
    "l2rw",
    "mwnet",
    "meta_net (lookahead)",
    "meta_net (implicit, Gauss-Newton, weighted, held out, final fit)",
    "meta_net (trajectory, held out, final fit)",
]


def row_name(record: dict) -> str:
    """The table row of a record: the method, and for ``meta_net`` its estimator, weighted sampling and held-out
    outer loss where used (records written before they named an estimator were made with the look-ahead)."""
    if record["method"] != "meta_net":
        return record["method"]
    details = [record.get("estimator") or "lookahead"]
    details += ["Gauss-Newton"] if record.get("implicit_gauss_newton") else []
    details += ["weighted"] if record.get("related_sampling") == "weighted" else []
    details += ["held out"] if record.get("meta_holdout") else []
    details += ["final fit"] if "before_refit" in record else []
    return f"meta_net ({', '.join(details)})"


def cells(
    config: ml_collections.ConfigDict,
    related: list[str],
    profiles: list[str] | tuple[str, ...] = PROFILES,
    chosen: list[str] | tuple[str, ...] = tuple(CELLS),
) -> list[tuple[str, str, str, ml_collections.ConfigDict]]:
    """``(related, profile, cell, config)`` of every launcher run made here for the kinds of related data
    ``related``, the target ``profiles`` and the cells ``chosen`` (in ``PROFILES`` and ``CELLS`` order), each config
    checked."""
    related = check_flag_choices("related", related, RELATED_SOURCES)
    profiles = check_flag_choices("profiles", profiles, PROFILES)
    chosen = check_flag_choices("cells", chosen, tuple(CELLS))
    out = []
    for sources in related:
        for profile in (p for p in PROFILES if p in profiles):
            for name, (methods, changes) in CELLS.items():
                if name not in chosen:
                    continue
                if name == "base" and sources == "babi":
                    continue  # the converged sweep's runs
                c = copy.deepcopy(config)
                c.update(
                    dict(
                        changes,
                        methods=methods,
                        target_set=profile,
                        target_dialogs=(100,),
                        num_seeds=1,
                        related_sources=sources,
                    )
                )
                train.validate_config(c)
                out.append((sources, profile, name, c))
    return out


def _tagged(records: list[dict], sources: str, keep: tuple[str, ...] | None = None) -> list[dict]:
    """``records`` (those of the methods ``keep``, if given) with their ``row`` and ``related_sources``."""
    return [dict(r, row=row_name(r), related_sources=sources) for r in records if keep is None or r["method"] in keep]


def collect(workdir: str, sweep: str, related: list[str], late_evaluations: int = 0) -> list[dict]:
    """Every finished record of the comparison (with ``row`` and ``related_sources``); ``target_only``'s babi runs
    also serve the babi+profiles table. With ``late_evaluations``, each also carries its ``late_dev_gain`` over
    that many last evaluations (``sweep.with_late_dev_gain``)."""

    def finished(folder: str) -> list[dict]:
        path = os.path.join(folder, "results.json")
        found = read_json(path) if os.path.exists(path) else []
        return with_late_dev_gain(found, folder, late_evaluations) if found and late_evaluations else found

    records: list[dict] = []
    for profile in PROFILES:
        sweep_records = finished(os.path.join(sweep, "profiles", profile))  # read once, for every kind of related data
        for sources in related:
            records += _tagged(sweep_records, sources, SWEEP_METHODS if sources == "babi" else ("target_only",))
            for name in CELLS:
                records += _tagged(finished(os.path.join(workdir, sources, profile, name)), sources)
    return records


def weight_rows(workdir: str, sweep: str, sources: str) -> list[dict]:
    """Per weighted run (``mwnet``, ``meta_net``) on every profile: its ``row``, ``target_set``, the mean learned
    weight per kind of related bot turn (``by_kind``) and, with several sources, per source (``by_source``) and
    per source and kind (``by_source_kind``: source -> kind -> mean)."""
    out = []
    for profile in PROFILES:
        folders = [os.path.join(workdir, sources, profile, name) for name in CELLS]
        if sources == "babi":
            folders.insert(0, os.path.join(sweep, "profiles", profile))
        for folder in folders:
            path = os.path.join(folder, "related_weights.json")
            if not os.path.exists(path):
                continue
            weights = read_json(path)
            kinds = np.asarray([e["kind"] for e in weights["examples"]])
            source = np.asarray([e.get("source", "babi") for e in weights["examples"]])
            names = sorted(set(source.tolist()))
            results = {(r["method"], r["seed"]): r for r in read_json(os.path.join(folder, "results.json"))}
            for run in weights["runs"]:
                record = results.get((run["method"], run["seed"]))
                if run["method"] not in ("mwnet", "meta_net") or record is None:
                    continue
                w = np.asarray(run["weights"])
                entry = dict(row=row_name(record), target_set=profile, by_kind=train.mean_by_kind(w, kinds))
                if len(names) > 1:
                    entry["by_source"] = train.mean_by_kind(w, source)
                    entry["by_source_kind"] = {s: train.mean_by_kind(w[source == s], kinds[source == s]) for s in names}
                out.append(entry)
    return out


def weight_tables(entries: list[dict]) -> str:
    """The mean learned weight by kind of turn, by source and by source and kind (mean ± std over profiles)."""
    if not entries:
        return ""
    kinds = sorted({k for e in entries for k in e["by_kind"]})
    text = "\nMean learned weight of the related examples by kind of bot turn (mean ± std over profiles):\n\n"
    text += summary_table(
        [dict(row=e["row"], **e["by_kind"]) for e in entries], ["row"], [(k, k, 1.0, 2) for k in kinds]
    )
    several = [e for e in entries if "by_source" in e]
    if several:
        names = sorted({s for e in several for s in e["by_source"]})
        text += "\nMean learned weight of the related examples by source (mean ± std over profiles):\n\n"
        rows = [dict(row=e["row"], **e["by_source"]) for e in several]
        text += summary_table(rows, ["row"], [(s, s, 1.0, 2) for s in names])
        text += "\nMean learned weight of the related examples by source and kind of bot turn (mean ± std over "
        text += "profiles):\n\n"
        rows = [dict(row=e["row"], source=s, **by) for e in several for s, by in e["by_source_kind"].items()]
        text += summary_table(rows, ["row", "source"], [(k, k, 1.0, 2) for k in kinds])
    return text


def goal_text(records: list[dict]) -> str:
    """Whether the best meta_net (by mean over profiles) beats union by GOAL on average and on every profile."""
    acc = {(r["row"], r["target_set"]): 100 * r["test_response_accuracy"] for r in records}
    union = {p: acc[("union", p)] for p in PROFILES if ("union", p) in acc}
    best, best_mean, best_diffs = None, -np.inf, []
    for row in ROWS:
        if not row.startswith("meta_net"):
            continue
        diffs = [acc[(row, p)] - union[p] for p in union if (row, p) in acc]
        if diffs and np.mean(diffs) > best_mean:
            best, best_mean, best_diffs = row, float(np.mean(diffs)), diffs
    if best is None:
        return "Goal: not yet measurable (no meta_net run paired with union).\n"
    met = len(best_diffs) == len(PROFILES) and best_mean >= GOAL and min(best_diffs) >= GOAL
    where = f"{len(best_diffs)} of {len(PROFILES)} profiles"
    return (
        f"Goal (best `meta_net` ≥ {GOAL:.0f} points above `union` on average and on every profile): "
        f"{'met' if met else 'not met'}. Best: `{best}`, {best_mean:+.2f} points on average over {where} "
        f"(worst profile {min(best_diffs):+.2f}).\n"
    )


def cap_text(records: list[dict], evaluations: int = 0) -> str:
    """One sentence: per row, how many runs ran to the end of their step budget (the epoch cap) instead of being
    stopped early, so are not shown to have converged, and how much those runs' best dev score still rose over
    their last ``evaluations`` evaluations (records' ``late_dev_gain``, mean); for the rows with a final fit, all
    this is that fit's, and their meta phase (``before_refit``) is counted apart."""
    counts = []
    for row in ROWS:
        runs = [r for r in records if r["row"] == row]
        if not runs:
            continue
        capped = [r for r in runs if r["stopped_step"] >= r["train_steps"]]
        text = f"`{row}` {len(capped)} of {len(runs)}"
        gains = [100 * r["late_dev_gain"] for r in capped if r.get("late_dev_gain") is not None]
        if evaluations and gains:
            text += f", dev {np.mean(gains):+.2f}"
        phases = [r["before_refit"]["stopped_step"] >= r["train_steps"] for r in runs if r.get("before_refit")]
        if phases:
            text += f", meta phase {sum(phases)} of {len(phases)}"
        counts.append(text)
    if not counts:
        return ""
    gain = (
        f"; with how much their best dev per-response accuracy rose over their last {evaluations} evaluations "
        "(points, mean)"
        if evaluations
        else ""
    )
    return (
        f"Runs that reached the end of the budget instead of stopping early (not shown to have converged){gain}: "
        + "; ".join(counts)
        + ".\n"
    )


def _against_union(pairs: list[tuple[dict, dict]]) -> list[str]:
    """Paired difference to ``union`` (mean ± std, points), wins, and time as a multiple of ``union``'s
    (lowest–highest) over ``pairs`` of (record, ``union``'s record on the same profile)."""
    if not pairs:
        return ["–"] * 3
    diffs = [100 * a["test_response_accuracy"] - 100 * u["test_response_accuracy"] for a, u in pairs]
    ratios = [a["wall_seconds"] / u["wall_seconds"] for a, u in pairs]
    time = f"{min(ratios):.1f}–{max(ratios):.1f}" if len(ratios) > 1 else f"{ratios[0]:.1f}"
    return [f"{np.mean(diffs):+.2f} ± {np.std(diffs):.2f}", f"{sum(d > 0 for d in diffs)} / {len(diffs)}", time]


def headline(records: list[dict], related: list[str]) -> str:
    """The comparison in one table: per row and kind of related data, its paired difference to ``union`` (mean ±
    std over the profiles where both ran), its wins, and its wall time as a multiple of ``union``'s (lowest–highest
    over those profiles); ``union``'s own accuracy above it. "" before any ``union`` run."""
    by = {(r["related_sources"], r["row"], r["target_set"]): r for r in records}
    union_accuracy = {s: [r["test_response_accuracy"] for k, r in by.items() if k[:2] == (s, "union")] for s in related}
    union = [f"{format_mean_std(acc, 100, 1)} % with `{s}`" for s, acc in union_accuracy.items() if acc]
    if not union:
        return ""
    text = (
        "Each row against `union` on the same profile: paired difference in test per-response accuracy (points; "
        "mean ± std over the profiles where both ran), wins (profiles where it beats `union`) and wall time as a "
        f"multiple of `union`'s (lowest–highest over those profiles). `union`: {', '.join(union)}.\n\n"
    )
    header = ["row"] + [f"{h} (`{s}`)" for s in related for h in ("Δ to union", "wins", "time × union")]
    text += "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    for row in [r for r in ROWS if r != "union"]:
        cells = [row]
        for s in related:
            ran = [p for p in PROFILES if (s, row, p) in by and (s, "union", p) in by]
            cells += _against_union([(by[(s, row, p)], by[(s, "union", p)]) for p in ran])
        if any(c != "–" for c in cells[1:]):
            text += "| " + " | ".join(cells) + " |\n"
    return text


def summarize(
    config: ml_collections.ConfigDict, workdir: str, sweep: str, related: list[str], weights: dict[str, list[dict]]
) -> str:
    """The comparison's tables from every finished run (``weights``: ``weight_rows`` per kind of related data)."""
    records = collect(workdir, sweep, related, late_evaluations=int(config.patience))
    text = (
        "Converged dialog comparison at 100 target dialogs per profile (one seed; the profiles are the replicates): "
        f"{train.budget_text(config)}.\n"
    )
    summary = headline(records, related)
    text += f"\n{summary}" if summary else ""
    for sources in related:
        part = [dict(r, method=r["row"]) for r in records if r["related_sources"] == sources]
        title = "bAbI task 5" if sources == "babi" else "bAbI task 5 and 1000 dialogs of the other five profiles"
        text += f"\n## Related data: {title} (`{sources}`)\n\n"
        if not part:
            text += "No finished runs yet.\n"
            continue
        rows = [row for row in ROWS if any(r["method"] == row for r in part)]
        text += profile_tables(part, rows)
        for profile in PROFILES:
            for name, step in diverged_cells(os.path.join(workdir, sources, profile), CELLS):
                text += f"\n`{name}` on `{profile}` diverged: non-finite values at step {step} (no record).\n"
        text += "\n" + goal_text(part)  # part's records carry their row as both row and method
        text += "\nWhen each run stopped (steps; mean ± std over profiles):\n\n"
        text += summary_table(part, ["method"], STOP_TABLE_COLUMNS)
        text += "\n" + cap_text(part, int(config.patience))
        by_kind = train.kind_accuracy_table(part, ["method"])
        if by_kind:
            text += "\nTest per-response accuracy (%) by kind of target bot turn (mean ± std over profiles):\n\n"
            text += by_kind
        text += weight_tables(weights[sources])
    return text


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    sweep: str,
    related,
    summarize_only: bool = False,
    profiles=PROFILES,
    chosen=tuple(CELLS),
) -> str:
    """Runs the cells ``chosen`` of ``related`` on ``profiles`` (resumable; the summary, results.json and
    weights.json are rewritten after each, from every finished run of both kinds of related data), or only rewrites
    those files."""
    todo = cells(config, related, profiles, chosen)  # every cell's config is checked before any data is read
    every: list[str] = list(RELATED_SOURCES)

    def write() -> str:
        weights = {sources: weight_rows(workdir, sweep, sources) for sources in every}
        text = summarize(config, workdir, sweep, every, weights)
        os.makedirs(workdir, exist_ok=True)
        atomic_write_text(os.path.join(workdir, "summary.md"), text)
        atomic_write_json(os.path.join(workdir, "results.json"), collect(workdir, sweep, every))
        atomic_write_json(os.path.join(workdir, "weights.json"), weights)  # for tools.plots
        return text

    if not summarize_only:
        # bAbI first on every profile, then the second source (several times slower per step)
        for sources, profile, name, c in todo:
            run_cell(train.run, c, os.path.join(workdir, sources, profile, name))  # a diverging cell is recorded
            write()
    text = write()
    report([os.path.join(workdir, "summary.md"), os.path.join(workdir, "results.json")], text)
    return text


if __name__ == "__main__":
    flags.DEFINE_string("sweep", "results/dialog_sweep", "The converged sweep's workdir (the babi rows it has).")
    flags.DEFINE_list("related", list(RELATED_SOURCES), f"Kinds of related data, from: {', '.join(RELATED_SOURCES)}.")
    flags.DEFINE_list("profiles", list(PROFILES), f"Target profiles to run, from: {', '.join(PROFILES)}.")
    flags.DEFINE_list("cells", list(CELLS), f"Cells to run on each profile, from: {', '.join(CELLS)}.")
    flags.DEFINE_bool("summarize_only", False, "Only rewrite the summary and results.json from the finished runs.")
    run_launcher(
        lambda config, workdir: run(
            config,
            workdir,
            flags.FLAGS.sweep,
            flags.FLAGS.related,
            flags.FLAGS.summarize_only,
            flags.FLAGS.profiles,
            flags.FLAGS.cells,
        ),
        train.DEFAULT_CONFIG,
        "one launcher workdir per kind of related data, profile and cell; results.json and summary.md",
    )
