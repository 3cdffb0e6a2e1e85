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
