r"""Figures of a launcher's workdir (PNG, matplotlib).

    python -m tools.plots --workdir=DIR [--out=DIR/plots]

Makes, from whatever the workdir holds:
* ``weight_histograms.png``: histograms of the learned related-example weights of each weighted method
  (ideal task: correct vs corrupted examples; dialog: by kind of bot turn);
* ``weights_over_training.png``: the mean weight of each group over training (from ``metrics.jsonl``);
* ``weights_by_source.png`` (dialog, related examples from several sources): the mean learned weight of each
  kind of bot turn, one bar per source, one panel per weighted method;
* ``accuracy_vs_target_dialogs.png`` (dialog) or ``accuracy_by_method.png`` (ideal): test accuracy,
  mean ± std over seeds;
* ``paired_differences.png`` (a sweep's workdir, with ``profiles/<profile>/results.json``): each method's test
  per-response difference to ``union`` on every profile, and its mean (methods more than ``FAR_BELOW`` points
  below ``union`` on average, as ``target_only``, are named under the figure instead);
* ``paired_differences_<part>.png`` and ``by_kind_<part>.png`` (a sweep's ``small/`` parts, ``<part>/small/``):
  the same per seed, and per kind of turn each method's test accuracy minus ``union``'s and each weighted
  method's mean weight relative to its overall mean weight (``small_part_plots``).

For the converged comparison's workdir (``experiments.dialog.converged``: records with a ``row``, and
``weights.json``), one set per kind of related data ``<related>`` (``babi``, ``babi_profiles``):
* ``paired_differences_<related>.png``: each row's difference to ``union`` on every profile, its mean, and the
  goal (``GOAL``, a dashed line);
* ``by_kind_<related>.png``: each weighted row's mean learned weight per kind of related bot turn, and each row's
  test accuracy per kind of target turn minus ``union``'s on the same profile (both means over profiles; rows
  far below ``union``, as ``target_only``, left out);
* ``weights_by_source_and_kind_<related>.png`` (several sources): one panel per weighted row, a bar per source.
"""

from __future__ import annotations

import collections
import json
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def _load(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def weight_histograms(weights: dict, out: str) -> str | None:
    """One panel per weighted method: weights of all its runs, split by group (correctness or turn kind)."""
    runs = weights.get("runs", [])
    if not runs:
        return None
    examples = weights.get("examples")
    methods = list(dict.fromkeys(r["method"] for r in runs))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for r in runs:
            if r["method"] != method:
                continue
            labels = (
                ["correct" if c else "corrupted" for c in r["correct"]]
                if "correct" in r
                else [e["kind"] for e in examples]
            )
            for label, w in zip(labels, r["weights"]):
                groups[label].append(w)
        top = max(max(v) for v in groups.values())
        bins = np.linspace(0.0, max(1.0, top), 41)
        for label in sorted(groups):
            ax.hist(groups[label], bins=bins, alpha=0.55, label=label, density=True, histtype="stepfilled")
        ax.set_title(method)
        ax.set_xlabel("learned weight")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density")
    return _save(fig, os.path.join(out, "weight_histograms.png"))


def weights_over_training(metrics: list[dict], out: str) -> str | None:
    """Mean weight of each group vs step, averaged over the runs of each (method, size)."""
    lines = [m for m in metrics if any(k.startswith("weight_") for k in m)]
    if not lines:
        return None
    series: dict[tuple, dict[str, dict[int, list[float]]]] = collections.defaultdict(
        lambda: collections.defaultdict(lambda: collections.defaultdict(list))
    )
    for m in lines:
        panel = (m["method"],) + ((m["target_dialogs"],) if "target_dialogs" in m else ())
        for k, v in m.items():
            if k.startswith("weight_"):
                series[panel][k[len("weight_") :]][m["step"]].append(v)
    panels = sorted(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for group, by_step in sorted(series[panel].items()):
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], marker=".", label=group)
        ax.set_title(" / ".join(map(str, panel)))
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean weight")
    return _save(fig, os.path.join(out, "weights_over_training.png"))


def accuracy_plot(records: list[dict], out: str) -> str | None:
    """Dialog: test per-response accuracy vs target dialogs per method; ideal: accuracy per method."""
    if not records:
        return None
    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if "target_dialogs" in records[0]:
        for method in methods:
            by_size = collections.defaultdict(list)
            for r in records:
                if r["method"] == method:
                    by_size[r["target_dialogs"]].append(100 * r["test_response_accuracy"])
            sizes = sorted(by_size)
            ax.errorbar(
                sizes,
                [np.mean(by_size[s]) for s in sizes],
                yerr=[np.std(by_size[s]) for s in sizes],
                marker="o",
                capsize=3,
                label=method,
            )
        ax.set_xscale("log")
        ax.set_xlabel("target training dialogs")
        ax.set_ylabel("test per-response accuracy (%)")
        ax.legend(fontsize=8)
        return _save(fig, os.path.join(out, "accuracy_vs_target_dialogs.png"))
    accs = [[100 * r["test_accuracy"] for r in records if r["method"] == m] for m in methods]
    ax.bar(range(len(methods)), [np.mean(a) for a in accs], yerr=[np.std(a) for a in accs], capsize=3)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    return _save(fig, os.path.join(out, "accuracy_by_method.png"))


def weights_by_source(weights: dict, out: str) -> str | None:
    """With related examples from several sources: per weighted method, the mean weight (over its runs) of each
    (kind of bot turn, source), as grouped bars."""
    runs, examples = weights.get("runs", []), weights.get("examples") or []
    sources = [e.get("source", "babi") for e in examples]
    if not runs or len(set(sources)) < 2:
        return None
    kinds = np.asarray([e["kind"] for e in examples])
    source_arr, names, kind_names = np.asarray(sources), sorted(set(sources)), sorted(set(kinds.tolist()))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 3.8), squeeze=False)
    width = 0.8 / len(names)
    for ax, method in zip(axes[0], methods):
        w = np.mean([r["weights"] for r in runs if r["method"] == method], axis=0)
        for i, name in enumerate(names):
            means = [
                w[(kinds == k) & (source_arr == name)].mean() if np.any((kinds == k) & (source_arr == name)) else 0.0
                for k in kind_names
            ]
            ax.bar(np.arange(len(kind_names)) + (i - (len(names) - 1) / 2) * width, means, width, label=name)
        ax.set_xticks(np.arange(len(kind_names)), kind_names, rotation=45, ha="right", fontsize=8)
        ax.set_title(method)
        ax.set_ylabel("mean learned weight")
        ax.set_ylim(0.0, 1.2)
        ax.legend(fontsize=7, title="source", ncol=len(names), loc="upper center")
    return _save(fig, os.path.join(out, "weights_by_source.png"))


def grouped_kind_bars(panels: list[tuple[str, str, dict[str, dict[str, float]]]], path: str) -> str | None:
    """One panel per ``(title, y label, {row: {kind: value}})``: a group of bars per kind of bot turn, one bar per
    row (e.g. mean learned weights, or accuracy differences, of several methods side by side); a row has one
    colour in every panel."""
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    colors = {row: f"C{i}" for i, row in enumerate(dict.fromkeys(row for p in panels for row in p[2]))}
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for ax, (title, ylabel, rows) in zip(axes[:, 0], panels):
        kinds = sorted({k for values in rows.values() for k in values})
        width = 0.8 / len(rows)
        for i, (row, values) in enumerate(rows.items()):
            x = np.arange(len(kinds)) + (i - (len(rows) - 1) / 2) * width
            ax.bar(x, [values.get(k, np.nan) for k in kinds], width, label=row, color=colors[row])
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xticks(np.arange(len(kinds)), kinds, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


FAR_BELOW = 7.0  # points below union on average: left out of the difference figures (the tables give it)


def _differences_to_union(records: list[dict], pair: str) -> dict[str, dict]:
    """Per method other than ``union``: its test per-response difference to ``union`` (points) per replicate
    (``pair``: ``target_set`` for profiles, ``seed`` for seeds of one target set)."""
    union = {r[pair]: 100 * r["test_response_accuracy"] for r in records if r["method"] == "union"}
    out: dict[str, dict] = {}
    for r in records:
        if r["method"] != "union" and r[pair] in union:
            out.setdefault(r["method"], {})[r[pair]] = 100 * r["test_response_accuracy"] - union[r[pair]]
    return out


def left_out(differences: dict[str, dict], far_below: float = FAR_BELOW) -> list[str]:
    """The methods whose mean difference to ``union`` is more than ``far_below`` points below it: they would
    squeeze the others' scale (e.g. ``target_only`` at 100 target dialogs, 8 points below)."""
    return [m for m, d in differences.items() if d and np.mean(list(d.values())) < -far_below]


GOAL = 3.0  # the converged comparison's goal: the best meta_net this many points above union, on every profile


def paired_differences(
    records: list[dict],
    out: str,
    name: str = "paired_differences.png",
    pair: str = "target_set",
    goal: float | None = None,
) -> str | None:
    """Per method, its test per-response difference to ``union`` (points) on each replicate (one dot per
    profile, or per seed with ``pair="seed"``) and its mean (a bar); methods far below ``union`` (``left_out``)
    are named under the figure instead. ``goal``: a difference to mark with a dashed line."""
    differences = _differences_to_union(records, pair)
    far = left_out(differences)
    methods = [m for m in differences if m not in far]
    if not methods:
        return None
    replicates = sorted({k for d in differences.values() for k in d})
    unit = "profiles" if pair == "target_set" else "seeds"
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(methods) + 2.0))
    for i, method in enumerate(methods):
        diffs = differences[method]
        for j, key in enumerate(replicates):
            if key in diffs:
                label = (key if pair == "target_set" else f"{pair} {key}") if i == 0 else None
                ax.scatter(diffs[key], i, color=f"C{j}", s=22, label=label, zorder=3)
        ax.barh(i, np.mean(list(diffs.values())), color="0.8", height=0.6, zorder=2)
    ax.axvline(0.0, color="k", lw=0.8)
    if goal is not None:
        ax.axvline(goal, color="C2", lw=1.0, ls="--", label=f"goal: {goal:+g}")
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    xlabel = f"test per-response accuracy minus union's (points); bar: mean over {unit}"
    if far:
        means = ", ".join(f"{m} {np.mean(list(differences[m].values())):+.1f}" for m in far)
        xlabel += f"; left out, far below union: {means}"
    # wrapped to the axes' width: the method names take most of the figure's
    ax.set_xlabel(textwrap.fill(xlabel, 48))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _save(fig, os.path.join(out, name))


def relative_kind_weights(weight_runs: list[dict], kinds: list[str]) -> dict[str, dict[str, float]]:
    """Per method: the mean weight of each kind of related bot turn divided by the mean weight of all its
    related examples (mean over its runs). 1 is an average example; the ratio puts methods whose weights have
    different scales (``l2rw``'s per-batch weights, a sigmoid's) on one axis, and only ratios matter where
    weights are normalized per batch."""
    out: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    kind_arr = np.asarray(kinds)
    for run in weight_runs:
        w = np.asarray(run["weights"], dtype=float)
        if w.mean() > 0:
            out[run["method"]].append({k: float(w[kind_arr == k].mean() / w.mean()) for k in sorted(set(kinds))})
    return {method: _mean_of_dicts(runs) for method, runs in out.items()}


def small_part_plots(workdir: str, out: str) -> list[str]:
    """A sweep's ``small/`` parts (``<part>/small/`` with ``results.json``, e.g. ``small_1000``), per part:
    ``paired_differences_<part>.png`` (per seed) and ``by_kind_<part>.png`` (each method's test accuracy per kind
    of target turn minus ``union``'s of the same seed, and each weighted method's ``relative_kind_weights``;
    means over seeds)."""
    made = []
    for part in sorted(os.listdir(workdir)):
        if not part.startswith("small_"):
            continue
        folder = os.path.join(workdir, part, "small")
        records = _load(os.path.join(folder, "results.json")) or []
        if not records:
            continue
        made.append(paired_differences(records, out, f"paired_differences_{part}.png", pair="seed"))
        far = left_out(_differences_to_union(records, "seed"))
        accuracy = {m: d for m, d in kind_differences_to_union(records, "seed").items() if m not in far}
        weights = _load(os.path.join(folder, "related_weights.json")) or {}
        kinds = [e["kind"] for e in weights.get("examples", [])]
        relative = relative_kind_weights(weights.get("runs", []), kinds)
        dialogs = part.split("_", 1)[1]
        panels = [
            (
                f"small/, {dialogs} target dialogs: test accuracy per kind of target turn minus union's "
                "(mean over seeds)",
                "points",
                accuracy,
            ),
            (
                f"small/, {dialogs} target dialogs: mean weight of each kind of related turn / the method's mean "
                "weight (mean over seeds)",
                "relative weight",
                relative,
            ),
        ]
        made.append(grouped_kind_bars(panels, os.path.join(out, f"by_kind_{part}.png")))
    return [p for p in made if p]


def sweep_records(workdir: str) -> list[dict]:
    """Every record under ``workdir/profiles/*/results.json`` (a sweep's profile runs)."""
    folder = os.path.join(workdir, "profiles")
    if not os.path.isdir(folder):
        return []
    return [r for p in sorted(os.listdir(folder)) for r in _load(os.path.join(folder, p, "results.json")) or []]


def _mean_of_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in keys}


def kind_differences_to_union(records: list[dict], pair: str = "target_set") -> dict[str, dict[str, float]]:
    """Per method other than ``union``: its test accuracy per kind of target turn minus ``union``'s on the same
    replicate (points; ``pair`` as in ``_differences_to_union``), mean over the replicates where both have it."""
    union = {r[pair]: r["test_accuracy_by_kind"] for r in records if r["method"] == "union"}
    out: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for r in records:
        base = union.get(r[pair])
        if r["method"] != "union" and base and "test_accuracy_by_kind" in r:
            out[r["method"]].append(
                {k: 100 * (v - base[k]) for k, v in r["test_accuracy_by_kind"].items() if k in base}
            )
    return {method: _mean_of_dicts(diffs) for method, diffs in out.items()}


def converged_plots(records: list[dict], weights: dict[str, list[dict]], out: str) -> list[str]:
    """The converged comparison's figures (see the module docstring), one set per kind of related data."""
    made = []
    for sources in dict.fromkeys(r["related_sources"] for r in records):
        tag = sources.replace("+", "_")
        part = [dict(r, method=r["row"]) for r in records if r["related_sources"] == sources]
        made.append(paired_differences(part, out, f"paired_differences_{tag}.png", goal=GOAL))
        entries = weights.get(sources, [])
        rows = list(dict.fromkeys(e["row"] for e in entries))
        by_kind = {row: _mean_of_dicts([e["by_kind"] for e in entries if e["row"] == row]) for row in rows}
        title = f"related: {sources}; mean learned weight per kind of related bot turn (mean over profiles)"
        far = left_out(_differences_to_union(part, "target_set"))
        differences = {m: d for m, d in kind_differences_to_union(part).items() if m not in far}
        title_acc = f"related: {sources}; test accuracy per kind of target turn minus union's (mean over profiles)"
        panels = [(title, "mean learned weight", by_kind), (title_acc, "points", differences)]
        made.append(grouped_kind_bars(panels, os.path.join(out, f"by_kind_{tag}.png")))
        panels = []
        for row in rows:
            several = [e["by_source_kind"] for e in entries if e["row"] == row and "by_source_kind" in e]
            names = sorted({s for e in several for s in e})
            by_source = {n: _mean_of_dicts([e[n] for e in several if n in e]) for n in names}
            panels.append((f"{row} (mean over profiles)", "mean learned weight", by_source))
        made.append(grouped_kind_bars(panels, os.path.join(out, f"weights_by_source_and_kind_{tag}.png")))
    return [p for p in made if p]


def make_plots(workdir: str, out: str | None = None) -> list[str]:
    """Writes every figure the workdir's files allow; returns their paths."""
    out = out or os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    records = _load(os.path.join(workdir, "results.json")) or []
    if records and all("row" in r for r in records):  # the converged comparison's
        return converged_plots(records, _load(os.path.join(workdir, "weights.json")) or {}, out)
    made = [
        accuracy_plot(records, out),
        weight_histograms(_load(os.path.join(workdir, "related_weights.json")) or {}, out),
        weights_over_training(_load(os.path.join(workdir, "metrics.jsonl")) or [], out),
        weights_by_source(_load(os.path.join(workdir, "related_weights.json")) or {}, out),
        paired_differences(sweep_records(workdir), out),
        *small_part_plots(workdir, out),
    ]
    return [p for p in made if p]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir or not os.path.isdir(FLAGS.workdir):
        raise app.UsageError(f"--workdir must be an existing launcher workdir, got {FLAGS.workdir!r}")
    for path in make_plots(FLAGS.workdir, FLAGS.out):
        print(path)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A launcher's workdir.")
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/plots).")
    app.run(main)
