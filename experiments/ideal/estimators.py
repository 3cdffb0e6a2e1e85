r"""The estimator comparison on the ideal task: ``meta_net`` with each meta-gradient estimator and each way of
sampling related examples, against ``oracle`` and ``union``, at two corruption levels, one command.

    python -m experiments.ideal.estimators --workdir=results/ideal_estimators [--config.FIELD=VALUE ...] \
        [--summarize_only]

Each cell is an ordinary, resumable launcher workdir ``DIR/corrupt_<pct>/<name>`` (``baselines``:
``oracle`` and ``union``; ``<estimator>-<sampling>``: ``meta_net``). ``trajectory`` uses segments of
``TRAJECTORY_STEPS`` real steps (the 4000-step run makes 200 meta updates): at the config's meta learning rate,
and (``trajectory-<sampling>-lr``) at ``TRAJECTORY_META_LR``, since a segment makes one meta update where the other
estimators make ``TRAJECTORY_STEPS``. The rate comes from pilots at 75 %: with weighted sampling, seeds 0 and 1,
0.01, 0.1, 0.3, 0.5 and 1.0 gave 70, 83, 86, 86 and 46 %; over 5 seeds, 0.5 left 3 of 10 runs at the
``union`` level (the weighting network's output saturated at weight 1 for every example within the first 500
steps, so its meta-gradient was exactly 0 from then on), and 0.2 (uniform sampling) none: 85-87 %.
The ``...-holdout`` cells (of the best cell of each estimator) take the outer loss on a held-out quarter of the
target data (``meta_holdout``): a fixed fold the model never trains on, that fold followed by a final fit
(``-refit``: a fresh model trained on all the target data with the learned weighting held fixed,
``meta_holdout_refit``), or a fold that rotates every ``HOLDOUT_ROTATION`` steps. The ``-gn`` cells are ``implicit``
with the Gauss-Newton matrix for the Hessian (``implicit_gauss_newton``). ``DIR/summary.md`` holds test
accuracy (mean ± std over seeds) per cell and level, each cell's seed-to-seed spread relative to the oracle's, and
the paired difference to the oracle. What each estimator costs per step is measured by ``python -m
experiments.ideal.bench`` (``bench.json``, ``estimators``).
"""

from __future__ import annotations

import copy
import os

import ml_collections
import numpy as np
from absl import flags

from experiments.ideal import train
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import ESTIMATORS, RELATED_SAMPLING
from experiments.shared.tables import format_mean_std
from metadial.io import atomic_write_text, read_json

CORRUPT_FRACTIONS = (0.75, 0.9)
TRAJECTORY_STEPS = 20
TRAJECTORY_META_LR = 0.2  # the trajectory cells' meta learning rate when tuned (one meta update per segment)
HOLDOUT, HOLDOUT_ROTATION = 0.25, 100  # the held-out cells: a quarter of the target data, fixed or rotating
# (cell suffix, rotation, final fit): a fixed fold, a rotating fold, a fixed fold and then a final fit on all the
# target data with the learned weighting held fixed
HOLDOUT_VARIANTS = (("holdout", 0, False), ("holdout-rotating", HOLDOUT_ROTATION, False), ("holdout-refit", 0, True))


def cells(config: ml_collections.ConfigDict) -> list[tuple[str, str, ml_collections.ConfigDict]]:
    """``(level folder, cell name, config)`` of every launcher run of the comparison, each config checked."""
    out = []
    for fraction in CORRUPT_FRACTIONS:
        level = f"corrupt_{round(100 * fraction)}"
        # every cell names its estimator and sampling, so the cells do not depend on the config's defaults
        variants = [("baselines", dict(methods=("oracle", "union"), estimator="lookahead", related_sampling="uniform"))]
        variants += [
            (
                f"{e}-{s}",
                dict(methods=("meta_net",), estimator=e, related_sampling=s, trajectory_steps=TRAJECTORY_STEPS),
            )
            for e in ESTIMATORS
            for s in RELATED_SAMPLING
        ]
        variants += [
            (
                f"trajectory-{s}-lr",
                dict(
                    methods=("meta_net",),
                    estimator="trajectory",
                    related_sampling=s,
                    trajectory_steps=TRAJECTORY_STEPS,
                    meta_learning_rate=TRAJECTORY_META_LR,
                ),
            )
            for s in RELATED_SAMPLING
        ]
        held_out = [  # the held-out variants of the best cell of each estimator
            ("lookahead-uniform", dict(estimator="lookahead", related_sampling="uniform")),
            ("implicit-weighted", dict(estimator="implicit", related_sampling="weighted")),
            (
                "trajectory-uniform-lr",
                dict(
                    estimator="trajectory",
                    related_sampling="uniform",
                    trajectory_steps=TRAJECTORY_STEPS,
                    meta_learning_rate=TRAJECTORY_META_LR,
                ),
            ),
        ]
        for base, changes in held_out:
            for suffix, rotation, refit in HOLDOUT_VARIANTS:
                variants.append(
                    (
                        f"{base}-{suffix}",
                        dict(
                            changes,
                            methods=("meta_net",),
                            meta_holdout=HOLDOUT,
                            meta_holdout_rotation=rotation,
                            meta_holdout_refit=refit,
                        ),
                    )
                )
        # implicit with the Gauss-Newton matrix for the Hessian (implicit_gauss_newton), as on the dialog task
        gauss_newton = dict(
            methods=("meta_net",), estimator="implicit", related_sampling="weighted", implicit_gauss_newton=True
        )
        variants += [
            ("implicit-weighted-gn", gauss_newton),
            ("implicit-weighted-gn-holdout-refit", dict(gauss_newton, meta_holdout=HOLDOUT, meta_holdout_refit=True)),
        ]
        for name, changes in variants:
            c = copy.deepcopy(config)
            c.update(dict(changes, corrupt_fraction=fraction))
            train.validate_config(c)
            out.append((level, name, c))
    return out


def _row_name(name: str, method: str) -> str:
    if name == "baselines":
        return method
    parts = name.split("-")  # <estimator>-<sampling>[-lr|-gn][-holdout[-rotating|-refit]]
    text = f"meta_net, {parts[0]}, {parts[1]}"
    if "gn" in parts:
        text += ", Gauss-Newton"
    if "lr" in parts:
        text += f", meta lr {TRAJECTORY_META_LR}"
    if "holdout" in parts:
        rotation = f"fold rotating every {HOLDOUT_ROTATION} steps" if "rotating" in parts else "fixed fold"
        text += f", outer loss on {HOLDOUT:.0%} held out ({rotation})"
    if "refit" in parts:
        text += ", then a final fit on all of it"
    return text


def summarize(results: dict[tuple[str, str], list[dict]]) -> str:
    """The comparison's table from each cell's records (``(level, cell) -> records``)."""
    levels = sorted({level for level, _ in results})
    rows: dict[str, dict[str, list[dict]]] = {}
    for (level, name), records in results.items():
        for r in records:
            rows.setdefault(_row_name(name, r["method"]), {}).setdefault(level, []).append(r)
    text = (
        "Ideal task, `meta_net` with each estimator and related sampling against `oracle` and `union`; test "
        "accuracy (%), mean ± std over seeds; spread: std / oracle's std; Δ oracle: paired difference to the "
        "oracle (points, mean over seeds).\n\n| run | "
        + " | ".join(f"{lv.split('_')[1]} % wrong: accuracy | spread | Δ oracle" for lv in levels)
        + " |\n|---|"
        + "---|---|---|" * len(levels)
        + "\n"
    )
    for row, by_level in rows.items():
        cells_text = []
        for level in levels:
            records = by_level.get(level, [])
            acc = {r["seed"]: r["test_accuracy"] for r in records}
            oracle = {r["seed"]: r["test_accuracy"] for r in rows.get("oracle", {}).get(level, [])}
            spread = diff = "–"
            if len(acc) > 1 and len(oracle) > 1:
                spread = f"{np.std(list(acc.values())) / np.std(list(oracle.values())):.1f}×"
            paired = [100 * (acc[s] - oracle[s]) for s in acc if s in oracle]
            if paired and row != "oracle":
                diff = f"{np.mean(paired):+.1f}"
            cells_text += [format_mean_std(list(acc.values()), 100, 1), spread, diff]
        text += f"| {row} | " + " | ".join(cells_text) + " |\n"
    return text


def run(config: ml_collections.ConfigDict, workdir: str, summarize_only: bool = False) -> str:
    """Runs every cell (resumable; the summary is rewritten after each), or only rewrites the summary."""
    todo = cells(config)  # every cell's config is checked before any training
    results: dict[tuple[str, str], list[dict]] = {}
    path = os.path.join(workdir, "summary.md")
    for level, name, c in todo:
        sub = os.path.join(workdir, level, name)
        if not summarize_only:
            train.run(c, sub)
        results_path = os.path.join(sub, "results.json")
        if os.path.exists(results_path):
            results[(level, name)] = read_json(results_path)
            atomic_write_text(path, summarize(results))
    text = summarize(results)
    atomic_write_text(path, text)
    report([path], text)
    return text


if __name__ == "__main__":
    flags.DEFINE_bool("summarize_only", False, "Only rewrite DIR/summary.md from the runs finished so far.")
    run_launcher(
        lambda config, workdir: run(config, workdir, flags.FLAGS.summarize_only),
        train.DEFAULT_CONFIG,
        "one launcher workdir per corruption level and cell, and summary.md",
    )
