r"""The estimator comparison on the converged dialog runs: ``meta_net`` with each meta-gradient estimator, with
and without an outer loss on held-out target dialogs, against the converged sweep's ``union`` and look-ahead
``meta_net`` (same budget rule, seed and target data), one command.

    python -m experiments.dialog.estimators --workdir=results/dialog_estimators \
        [--sweep=results/dialog_sweep] [--targets=female_elderly,small] [--config.FIELD=VALUE ...] [--summarize_only]

Each cell is an ordinary, resumable launcher workdir ``DIR/<target>/<cell>`` running ``meta_net`` at 100 target
dialogs, seed 0: ``implicit`` (SOBA, the config's ``implicit_*`` settings), ``trajectory`` (segments of
``TRAJECTORY_STEPS`` real steps, meta learning rate ``TRAJECTORY_META_LR``: one meta update per segment, so a larger
rate than the look-ahead's, as on the ideal task), ``lookahead-holdout`` / ``implicit-holdout`` /
``trajectory-holdout`` (outer loss on a quarter of the target dialogs held out in folds that rotate every
``HOLDOUT_ROTATION`` steps, so the model trains on every dialog in turn), and ``<estimator>-holdout-refit`` (a fixed
held-out fold, then a final fit of a fresh model on all the target dialogs with the learned weighting held fixed;
``meta_holdout_refit``), and ``implicit-gn-holdout-refit`` (the same with the Gauss-Newton matrix for the
Hessian, ``implicit_gauss_newton``, which keeps ``v`` bounded; on ``small/`` it replaces ``implicit-holdout-refit``,
and the rotating folds are left out: on ``female_elderly`` they proved no hold-out). The reference
rows come from the sweep's workdir (``profiles/<profile>`` and ``small_100/small``). ``DIR/summary.md`` holds,
per target set: test per-response accuracy, the difference to ``union`` (same seed), when each run stopped and its
wall-clock; the mean learned weight of each kind of related bot turn; and test accuracy per kind of target turn.
``DIR/plots/<target>_by_kind.png`` shows the per-kind weights and each row's per-kind accuracy minus ``union``'s.
"""

from __future__ import annotations

import copy
import os

import ml_collections
from absl import flags

from experiments.dialog import train
from experiments.shared import store
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import ConfigError, as_list
from experiments.shared.store import DIVERGED, run_cell
from experiments.shared.tables import summary_table
from metadial.data.dialog_tasks import PROFILES
from metadial.io import atomic_write_text, read_json
from tools import plots

TRAJECTORY_STEPS = 50
TRAJECTORY_META_LR = 0.02  # 20x the look-ahead's 1e-3: one meta update per 50 real steps
# a segment's meta-gradient through 50 real Adam steps can overflow to NaN with finite parameters and outer loss
# (female_elderly, step 33700: results/dialog_trajectory_nan); such an update is skipped, up to 10 in a row
TRAJECTORY_MAX_NONFINITE = 10
TRAJECTORY = dict(
    estimator="trajectory",
    trajectory_steps=TRAJECTORY_STEPS,
    meta_learning_rate=TRAJECTORY_META_LR,
    meta_max_nonfinite=TRAJECTORY_MAX_NONFINITE,
)
HOLDOUT, HOLDOUT_ROTATION = 0.25, 100
FIXED_FOLD_AND_REFIT = dict(meta_holdout=HOLDOUT, meta_holdout_rotation=0, meta_holdout_refit=True)
SEED, TARGET_DIALOGS = 0, 100

CELLS: dict[str, dict] = {
    "implicit": dict(estimator="implicit"),
    "trajectory": TRAJECTORY,
    "lookahead-holdout": dict(estimator="lookahead", meta_holdout=HOLDOUT, meta_holdout_rotation=HOLDOUT_ROTATION),
    "implicit-holdout": dict(estimator="implicit", meta_holdout=HOLDOUT, meta_holdout_rotation=HOLDOUT_ROTATION),
    "trajectory-holdout": dict(TRAJECTORY, meta_holdout=HOLDOUT, meta_holdout_rotation=HOLDOUT_ROTATION),
    # a fixed fold that the meta run's model never sees, then a final fit on all the target dialogs with the learned
    # weighting held fixed: late in a run the model fits a rotating fold within the steps it trains on it
    "lookahead-holdout-refit": dict(estimator="lookahead", **FIXED_FOLD_AND_REFIT),
    "implicit-holdout-refit": dict(estimator="implicit", **FIXED_FOLD_AND_REFIT),
    "trajectory-holdout-refit": dict(TRAJECTORY, **FIXED_FOLD_AND_REFIT),
    # implicit-holdout-refit's v diverged on female_elderly (negative curvature of the Hessian): Gauss-Newton instead
    "implicit-gn-holdout-refit": dict(estimator="implicit", implicit_gauss_newton=True, **FIXED_FOLD_AND_REFIT),
}
# cells run on female_elderly only: there a rotating fold proved no hold-out at this horizon (the model fits each
# fold within the steps it trains on it; the outer loss on it falls to about 1e-6), so small/ has the other cells
# (and implicit-holdout-refit, whose v diverged there: implicit-gn-holdout-refit takes its place)
PROFILE_ONLY_CELLS = ("lookahead-holdout", "implicit-holdout", "trajectory-holdout", "implicit-holdout-refit")
# the sweep's rows: its meta_net is the look-ahead with uniform sampling and no held-out fold
REFERENCE_ROWS = {"union": "union", "meta_net": "meta_net, lookahead"}


def sweep_folder(target: str) -> str:
    """The sweep's workdir (relative) that holds ``target``'s runs at 100 dialogs."""
    return "small_100/small" if target == "small" else os.path.join("profiles", target)


def cells(config: ml_collections.ConfigDict, targets: list[str]) -> list[tuple[str, str, ml_collections.ConfigDict]]:
    """``(target, cell, config)`` of every launcher run, each config checked."""
    unknown = [t for t in targets if t != "small" and t not in PROFILES]
    if unknown or not targets:
        raise ConfigError(
            f"--targets: {', '.join(unknown) or 'nothing'} not known; targets: small, {', '.join(PROFILES)}"
        )
    out = []
    for target in targets:
        for name, changes in CELLS.items():
            if target == "small" and name in PROFILE_ONLY_CELLS:
                continue
            c = copy.deepcopy(config)
            c.update(
                dict(changes, methods=("meta_net",), target_set=target, target_dialogs=(TARGET_DIALOGS,), num_seeds=1)
            )
            train.validate_config(c)
            out.append((target, name, c))
    return out


def _named(entries: list[dict], row: str | None) -> list[dict]:
    """The seed-``SEED`` entries at 100 dialogs (records or weight runs), each with its ``row``: ``row``, or for
    the sweep's entries (``row=None``) the reference row of its method (other methods left out)."""
    out = []
    for e in entries:
        name = row or REFERENCE_ROWS.get(e["method"])
        if name and e["seed"] == SEED and e["target_dialogs"] == TARGET_DIALOGS:
            out.append(dict(e, row=name))
    return out


def load(workdir: str, sweep: str, targets: list[str]) -> dict[str, tuple[list[dict], list[dict], list[str]]]:
    """Per target set: its finished records (each with ``row``), their weight runs and the kind of every related
    example."""
    out = {}
    for target in targets:
        records, runs, kinds = [], [], []
        folders: list[tuple[str, str | None]] = [(os.path.join(sweep, sweep_folder(target)), None)]
        folders += [(os.path.join(workdir, target, name), f"meta_net, {name}") for name in CELLS]
        for folder, row in folders:
            if not os.path.exists(os.path.join(folder, "results.json")):
                continue
            records += _named(read_json(os.path.join(folder, "results.json")), row)
            if os.path.exists(os.path.join(folder, "related_weights.json")):
                weights = read_json(os.path.join(folder, "related_weights.json"))
                kinds = kinds or [e["kind"] for e in weights["examples"]]
                runs += _named(weights["runs"], row)
        out[target] = (records, runs, kinds)
    return out


def diverged_cells(workdir: str, targets: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Per target set, ``(cell, step)`` of the cells whose run stopped on non-finite values (``DIVERGED``)."""
    cells = {target: store.diverged_cells(os.path.join(workdir, target), CELLS) for target in targets}
    return {target: found for target, found in cells.items() if found}


def summarize(
    loaded: dict[str, tuple[list[dict], list[dict], list[str]]],
    config: ml_collections.ConfigDict,
    diverged: dict[str, list[tuple[str, int]]] | None = None,
) -> str:
    """The comparison's tables, per target set (``config``: the budget rule, shared with the sweep), and the
    cells that diverged (``diverged_cells``)."""
    text = (
        f"`meta_net` with each meta-gradient estimator at {TARGET_DIALOGS} target dialogs, seed {SEED}, against "
        f"the converged sweep's `union` and look-ahead `meta_net` (same budget rule: {train.budget_text(config)}). "
        "Δ union: test "
        f"per-response difference to `union` (points). -holdout: outer loss on {HOLDOUT:.0%} of the target dialogs, "
        f"folds rotating every {HOLDOUT_ROTATION} steps; -holdout-refit: a fixed held-out fold, then a final fit of a "
        "fresh model on all the target dialogs with the learned weighting held fixed; trajectory: "
        f"{TRAJECTORY_STEPS}-step segments, meta learning rate {TRAJECTORY_META_LR}, a non-finite meta-gradient's "
        f"update skipped (up to {TRAJECTORY_MAX_NONFINITE} in a row; `meta_skipped` in `metrics.jsonl` counts them).\n"
    )
    for target, (records, runs, kinds) in loaded.items():
        if not records and target not in (diverged or {}):
            continue
        union = [r["test_response_accuracy"] for r in records if r["row"] == "union"]
        for r in records:
            r["delta_union"] = r["test_response_accuracy"] - union[0] if union else None
        text += f"\n### {target}\n\n"
        columns = [
            ("test_response_accuracy", "test per-response (%)", 100.0, 1),
            ("delta_union", "Δ union", 100.0, 1),
            ("best_step", "best step", 1.0, 0),
            ("stopped_step", "stopped at step", 1.0, 0),
            ("wall_seconds", "seconds", 1.0, 0),
        ]
        if any("before_refit" in r for r in records):
            for r in records:
                r["before_refit_test"] = (r.get("before_refit") or {}).get("test_response_accuracy")
            columns.insert(2, ("before_refit_test", "meta run before the final fit (%)", 100.0, 1))
        text += summary_table([r for r in records if r["delta_union"] is not None or not union], ["row"], columns)
        for name, step in (diverged or {}).get(target, []):
            text += (
                f"\n`meta_net, {name}` diverged: non-finite values at step {step} (no record; its metrics and last "
                f"good checkpoint are kept, `{DIVERGED}` in its folder).\n"
            )
        if runs and kinds:
            names = sorted(set(kinds))
            rows = [dict(row=w["row"], **train.mean_by_kind(w["weights"], kinds)) for w in runs]
            text += "\nMean learned weight of the related examples by kind of bot turn:\n\n"
            text += summary_table(rows, ["row"], [(k, k, 1.0, 2) for k in names])
        by_kind = train.kind_accuracy_table(records, ["row"])
        if by_kind:
            text += "\nTest per-response accuracy (%) by kind of target bot turn:\n\n" + by_kind
    return text


def by_kind(records: list[dict], runs: list[dict], kinds: list[str]) -> tuple[dict, dict]:
    """``({row: {kind: mean learned weight}}, {row: {kind: test accuracy minus union's, points}})`` of one target
    set's records, weight runs and related example kinds (``union`` itself has no difference row)."""
    weights = {w["row"]: train.mean_by_kind(w["weights"], kinds) for w in runs} if kinds else {}
    accuracy = {r["row"]: r["test_accuracy_by_kind"] for r in records if "test_accuracy_by_kind" in r}
    union = accuracy.pop("union", None)
    if union is None:
        return weights, {}
    return weights, {
        row: {k: 100 * (v - union[k]) for k, v in acc.items() if k in union} for row, acc in accuracy.items()
    }


def figures(loaded: dict[str, tuple[list[dict], list[dict], list[str]]], out: str) -> list[str]:
    """Per target set, ``out/<target>_by_kind.png``: the mean learned weight of each kind of related bot turn per
    row, and each row's test accuracy per kind of target turn minus ``union``'s (points)."""
    paths = []
    for target, (records, runs, kinds) in loaded.items():
        weights, differences = by_kind(records, runs, kinds)
        os.makedirs(out, exist_ok=True)
        path = plots.grouped_kind_bars(
            [
                (f"{target}: related examples, mean learned weight by kind of bot turn", "mean weight", weights),
                (f"{target}: test accuracy by kind of target turn, minus union's", "points", differences),
            ],
            os.path.join(out, f"{target}_by_kind.png"),
        )
        paths += [path] if path else []
    return paths


def run(
    config: ml_collections.ConfigDict, workdir: str, sweep: str, targets: list[str], summarize_only: bool = False
) -> str:
    """Runs every cell (resumable; the summary is rewritten after each), or only rewrites the summary."""
    targets = as_list(targets)
    todo = cells(config, targets)  # every cell's config is checked before any data is read
    path = os.path.join(workdir, "summary.md")
    if not summarize_only:
        for target, name, c in todo:
            run_cell(train.run, c, os.path.join(workdir, target, name))  # a diverging cell does not stop the others
            atomic_write_text(path, summarize(load(workdir, sweep, targets), config, diverged_cells(workdir, targets)))
    loaded = load(workdir, sweep, targets)
    text = summarize(loaded, config, diverged_cells(workdir, targets))
    atomic_write_text(path, text)
    report([path, *figures(loaded, os.path.join(workdir, "plots"))], text)
    return text


if __name__ == "__main__":
    flags.DEFINE_string("sweep", "results/dialog_sweep", "The converged sweep's workdir (union and meta_net rows).")
    flags.DEFINE_list("targets", ["female_elderly", "small"], "Target sets: small and/or profile names.")
    flags.DEFINE_bool("summarize_only", False, "Only rewrite DIR/summary.md from the runs finished so far.")
    run_launcher(
        lambda config, workdir: run(
            config, workdir, flags.FLAGS.sweep, flags.FLAGS.targets, flags.FLAGS.summarize_only
        ),
        train.DEFAULT_CONFIG,
        "one launcher workdir per target set and cell, and summary.md",
    )
