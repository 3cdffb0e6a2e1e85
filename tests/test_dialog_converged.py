"""The converged dialog comparison (experiments/dialog/converged.py): its cells, rows and goal."""

from __future__ import annotations

import json
import os

import pytest

from experiments.dialog import converged
from experiments.dialog.configs.default import get_config
from experiments.shared.config import ConfigError
from metadial.data.dialog_tasks import PROFILES


def test_cells_reuse_the_sweep_for_babi_and_run_every_row_for_the_second_source():
    cells = converged.cells(get_config(), ["babi", "babi+profiles"])
    names = {(r, p, n) for r, p, n, _ in cells}
    assert len(cells) == 6 * 3 + 6 * 4
    assert ("babi", "male_young", "base") not in names and ("babi+profiles", "male_young", "base") in names
    assert [r for r, _, _, _ in cells] == ["babi"] * 18 + ["babi+profiles"] * 24  # bAbI first on every profile
    by_name = {(r, p, n): c for r, p, n, c in cells}
    base = by_name[("babi+profiles", "female_young", "base")]
    assert (base.methods, base.related_sources, base.target_set, base.target_dialogs, base.num_seeds) == (
        converged.BASE_METHODS,
        "babi+profiles",
        "female_young",
        (100,),
        1,
    )
    implicit = by_name[("babi", "female_young", "meta_net-implicit-gn-weighted-holdout-refit")]
    assert (implicit.estimator, implicit.related_sampling, implicit.implicit_gauss_newton) == (
        "implicit",
        "weighted",
        True,
    )
    for held_out in (implicit, by_name[("babi+profiles", "male_young", "meta_net-trajectory-holdout-refit")]):
        assert (held_out.meta_holdout, held_out.meta_holdout_rotation, held_out.meta_holdout_refit) == (0.25, 0, True)
    assert implicit.checkpoint_every % implicit.sampling_every == 0
    assert by_name[("babi", "female_young", "mwnet")].methods == ("mwnet",)
    with pytest.raises(ConfigError, match="--related: books not known"):
        converged.cells(get_config(), ["books"])
    chosen = converged.cells(get_config(), ["babi+profiles"], ["male_young", "female_elderly"])
    assert [(p, n) for _, p, n, _ in chosen][::4] == [
        ("female_elderly", "base"),
        ("male_young", "base"),
    ]  # PROFILES order
    with pytest.raises(ConfigError, match="--profiles: male_old not known; from: female_elderly, "):
        converged.cells(get_config(), ["babi"], ["male_young", "male_old"])
    bases = converged.cells(get_config(), ["babi", "babi+profiles"], converged.PROFILES, ["base"])
    assert [(r, n) for r, _, n, _ in bases] == [("babi+profiles", "base")] * 6  # babi has no base cell here
    some = converged.cells(get_config(), ["babi"], ["male_young"], ["meta_net-trajectory-holdout-refit", "mwnet"])
    assert [n for _, _, n, _ in some] == ["mwnet", "meta_net-trajectory-holdout-refit"]  # CELLS order
    with pytest.raises(ConfigError, match="--cells: lookahead not known; from: base, mwnet, "):
        converged.cells(get_config(), ["babi"], ["male_young"], ["lookahead"])


def test_rows_name_the_estimator_and_old_records_are_the_lookahead():
    assert converged.row_name({"method": "meta_net"}) == "meta_net (lookahead)"
    implicit = {"method": "meta_net", "estimator": "implicit", "related_sampling": "weighted", "meta_holdout": 0.25}
    assert converged.row_name(implicit) == "meta_net (implicit, weighted, held out)"
    assert converged.row_name(dict(implicit, meta_holdout=0.0)) == "meta_net (implicit, weighted)"
    refit = dict(implicit, before_refit={"test_response_accuracy": 0.7})
    assert converged.row_name(refit) == "meta_net (implicit, weighted, held out, final fit)"
    gauss_newton = converged.row_name(dict(refit, implicit_gauss_newton=True))
    assert gauss_newton == "meta_net (implicit, Gauss-Newton, weighted, held out, final fit)" in converged.ROWS
    trajectory = {"method": "meta_net", "estimator": "trajectory", "related_sampling": "uniform", "meta_holdout": 0.25}
    trajectory["before_refit"] = {"test_response_accuracy": 0.7}
    assert converged.row_name(trajectory) == "meta_net (trajectory, held out, final fit)" in converged.ROWS
    assert converged.row_name({"method": "union", "estimator": None}) == "union"


def test_goal_needs_every_profile_three_points_above_union():
    def records(diffs):
        out = []
        for p, d in zip(PROFILES, diffs):
            out += [
                {"row": "union", "target_set": p, "test_response_accuracy": 0.70},
                {
                    "row": "meta_net (implicit, Gauss-Newton, weighted, held out, final fit)",
                    "target_set": p,
                    "test_response_accuracy": 0.70 + d / 100,
                },
            ]
        return out

    assert (
        ": met. Best: `meta_net (implicit, Gauss-Newton, weighted, held out, final fit)`, +3.50"
        in converged.goal_text(records([3.5] * 6))
    )
    assert ": not met." in converged.goal_text(records([6.0] * 5 + [2.0]))  # one profile below 3
    assert ": not met." in converged.goal_text(records([4.0] * 5))  # only 5 of 6 profiles
    assert "not yet measurable" in converged.goal_text([])


def test_cap_counts_the_runs_that_reached_the_end_of_their_budget_and_the_meta_phases_apart():
    implicit = "meta_net (implicit, Gauss-Newton, weighted, held out, final fit)"
    stop = lambda step, gain=None: {"stopped_step": step, "train_steps": 100, "late_dev_gain": gain}
    records = [
        {"row": "union", **stop(100, 0.004)},
        {"row": "union", **stop(100, 0.002)},
        {"row": "union", **stop(60, 0.5)},  # stopped early: its gain is not the cap's
        {"row": implicit, **stop(100), "before_refit": stop(50)},  # fit to the cap, meta phase stopped early
        {"row": implicit, **stop(80), "before_refit": stop(100)},
    ]
    assert converged.cap_text(records, 20) == (
        "Runs that reached the end of the budget instead of stopping early (not shown to have converged); with how "
        "much their best dev per-response accuracy rose over their last 20 evaluations (points, mean): "
        f"`union` 2 of 3, dev +0.30; `{implicit}` 1 of 2, meta phase 1 of 2.\n"
    )
    assert converged.cap_text([]) == ""


def test_the_headline_pairs_each_row_with_union_per_setting():
    lookahead = "meta_net (lookahead)"
    records = []
    for i, p in enumerate(PROFILES):
        for sources, union_acc in (("babi", 0.70), ("babi+profiles", 0.80)):
            records.append(
                dict(
                    row="union",
                    related_sources=sources,
                    target_set=p,
                    test_response_accuracy=union_acc,
                    wall_seconds=100.0,
                )
            )
        # +2 points on the first three profiles, -1 on the others, in 2-3x union's time; mwnet on two profiles only
        records.append(
            dict(
                row=lookahead,
                related_sources="babi",
                target_set=p,
                test_response_accuracy=0.72 if i < 3 else 0.69,
                wall_seconds=200.0 + 50 * (i % 3),
            )
        )
        if i < 2:
            records.append(
                dict(
                    row="mwnet",
                    related_sources="babi+profiles",
                    target_set=p,
                    test_response_accuracy=0.75,
                    wall_seconds=400.0,
                )
            )
    text = converged.headline(records, ["babi", "babi+profiles"])
    assert "`union`: 70.0 ± 0.0 % with `babi`, 80.0 ± 0.0 % with `babi+profiles`." in text
    assert f"| {lookahead} | +0.50 ± 1.50 | 3 / 6 | 2.0–3.0 | – | – | – |" in text
    assert "| mwnet | – | – | – | -5.00 ± 0.00 | 0 / 2 | 4.0–4.0 |" in text
    assert "| union |" not in text and "| l2rw |" not in text  # no row against itself, none without runs
    assert converged.headline([r for r in records if r["row"] != "union"], ["babi"]) == ""


def test_results_collect_the_sweeps_babi_rows_and_the_cells(tmp_path):
    rec = lambda method, profile, **kw: dict(
        {"method": method, "seed": 0, "target_dialogs": 100, "target_set": profile, "test_response_accuracy": 0.7},
        **kw,
    )
    sweep = tmp_path / "sweep" / "profiles" / "female_elderly"
    sweep.mkdir(parents=True)
    (sweep / "results.json").write_text(json.dumps([rec("target_only", "female_elderly"), rec("meta_table", "x")]))
    cell = tmp_path / "out" / "babi+profiles" / "female_elderly" / "base"
    cell.mkdir(parents=True)
    (cell / "results.json").write_text(json.dumps([rec("union", "female_elderly", estimator=None)]))
    got = converged.collect(str(tmp_path / "out"), str(tmp_path / "sweep"), ["babi", "babi+profiles"])
    assert [(r["row"], r["related_sources"]) for r in got] == [
        ("target_only", "babi"),  # meta_table is not a row of the comparison
        ("target_only", "babi+profiles"),  # target_only does not use related data: it serves both tables
        ("union", "babi+profiles"),
    ]


def test_a_diverging_cell_is_recorded_and_the_comparison_goes_on(tmp_path, monkeypatch):
    """A cell whose run hits non-finite values gets ``diverged.json``; the other cells still run; a re-run skips it."""
    from experiments.shared.store import diverged_step
    from metadial.loop import NonFiniteError

    calls = []

    def fake_run(config, workdir):
        calls.append(workdir)
        if workdir.endswith(os.path.join(PROFILES[0], "mwnet")):
            raise NonFiniteError("mwnet-100-seed0: non-finite train_loss=nan at step 3", 3)

    monkeypatch.setattr(converged.train, "run", fake_run)
    out, sweep = str(tmp_path / "out"), str(tmp_path / "sweep")
    converged.run(get_config(), out, sweep, ["babi"])
    assert len(calls) == 6 * (len(converged.CELLS) - 1)  # every babi cell was tried
    assert diverged_step(os.path.join(out, "babi", PROFILES[0], "mwnet")) == 3
    calls.clear()
    converged.run(get_config(), out, sweep, ["babi"])
    assert len(calls) == 6 * (len(converged.CELLS) - 1) - 1


def test_a_partial_command_runs_its_cells_and_keeps_every_finished_record(tmp_path, monkeypatch):
    """``--related=babi --profiles=P`` runs only P's bAbI cells, and the results it rewrites keep the other kind of
    related data's finished runs."""
    calls = []
    monkeypatch.setattr(converged.train, "run", lambda config, workdir: calls.append(workdir))
    out = tmp_path / "out"
    cell = out / "babi+profiles" / "male_young" / "base"
    cell.mkdir(parents=True)
    record = {
        "method": "union",
        "seed": 0,
        "target_dialogs": 100,
        "target_set": "male_young",
        "test_response_accuracy": 0.7,
        "stopped_step": 90,
        "train_steps": 100,
    }
    (cell / "results.json").write_text(json.dumps([record]))
    converged.run(get_config(), str(out), str(tmp_path / "sweep"), ["babi"], profiles=["female_young"])
    assert calls == [str(out / "babi" / "female_young" / name) for name in list(converged.CELLS)[1:]]
    kept = json.loads((out / "results.json").read_text())
    assert [(r["row"], r["related_sources"], r["target_set"]) for r in kept] == [
        ("union", "babi+profiles", "male_young")
    ]
    assert "(`babi+profiles`)" in (out / "summary.md").read_text()


def test_weights_by_source_and_kind_are_summarized_saved_and_drawn(tmp_path):
    """Per (source, kind) means of known weights land in the summary, weights.json and the figures; so do the
    per-kind accuracy differences to union."""
    from tools.plots import kind_differences_to_union, make_plots

    out, sweep = tmp_path / "out", tmp_path / "sweep"
    examples = [
        {"kind": "api_call", "source": "babi"},
        {"kind": "api_call", "source": "profiles"},
        {"kind": "greeting", "source": "babi"},
        {"kind": "greeting", "source": "profiles"},
    ]
    for i, profile in enumerate(PROFILES):
        rec = lambda method, acc, **kw: dict(
            {"method": method, "seed": 0, "target_dialogs": 100, "target_set": profile},
            test_response_accuracy=acc,
            best_step=10,
            stopped_step=20,
            train_steps=30,
            wall_seconds=1.0,
            **kw,
        )
        base = out / "babi+profiles" / profile / "base"
        base.mkdir(parents=True)
        records = [
            rec("union", 0.70, test_accuracy_by_kind={"api_call": 0.9, "greeting": 1.0}),
            rec("meta_net", 0.70 + i / 1000, estimator="lookahead", test_accuracy_by_kind={"api_call": 0.9 + i / 100}),
        ]
        (base / "results.json").write_text(json.dumps(records))
        runs = [{"method": "meta_net", "seed": 0, "weights": [0.8, 0.4, 0.2, 0.1 * i]}]
        (base / "related_weights.json").write_text(json.dumps({"examples": examples, "runs": runs}))
    converged.run(get_config(), str(out), str(sweep), ["babi+profiles"], summarize_only=True)

    weights = json.loads((out / "weights.json").read_text())["babi+profiles"]
    assert [(e["row"], e["target_set"]) for e in weights] == [("meta_net (lookahead)", p) for p in PROFILES]
    last = weights[-1]  # male_young: i = 5
    assert last["by_kind"] == pytest.approx({"api_call": 0.6, "greeting": 0.35})
    assert last["by_source"] == pytest.approx({"babi": 0.5, "profiles": 0.45})
    assert last["by_source_kind"]["profiles"] == pytest.approx({"api_call": 0.4, "greeting": 0.5})
    summary = (out / "summary.md").read_text()
    assert "by source and kind of bot turn" in summary
    # profiles' greeting weight over the six profiles: 0.0 .. 0.5, mean 0.25, std 0.17
    assert "| meta_net (lookahead) | profiles | 6 | 0.40 ± 0.00 | 0.25 ± 0.17 |" in summary

    assert "by kind of target bot turn" in summary
    records = [dict(r, method=r["row"]) for r in json.loads((out / "results.json").read_text())]
    differences = kind_differences_to_union([r for r in records if r["related_sources"] == "babi+profiles"])
    assert differences == {"meta_net (lookahead)": pytest.approx({"api_call": 2.5})}  # mean of 0, 1, ..., 5 points
    made = {os.path.basename(p) for p in make_plots(str(out))}
    assert made == {
        "paired_differences_babi_profiles.png",
        "by_kind_babi_profiles.png",
        "weights_by_source_and_kind_babi_profiles.png",
    }


def test_the_report_holds_the_committed_summary():
    """``results/dialog_converged.md``'s block is the committed summary, the README's its headline table
    (``tools.publish``, ``--first_table``)."""
    from pathlib import Path

    from tools.publish import headline, published_block

    root = Path(__file__).resolve().parents[1] / "results"
    summary = (root / "dialog_converged" / "summary.md").read_text()
    assert published_block((root / "dialog_converged.md").read_text(), "dialog_converged") == summary.strip("\n")
    readme = (root.parent / "README.md").read_text()
    assert published_block(readme, "dialog_converged") == headline(summary.strip("\n"))
    assert "Δ to union" in headline(summary)
