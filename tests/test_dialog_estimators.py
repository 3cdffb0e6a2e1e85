"""The dialog estimator comparison (experiments/dialog/estimators.py): its cells and its tables."""

from __future__ import annotations

import json
import os

import pytest

from experiments.dialog import estimators
from experiments.dialog.configs.default import get_config
from experiments.shared.config import ConfigError


def test_cells_run_meta_net_with_each_estimator_on_each_target():
    cells = estimators.cells(get_config(), ["female_elderly", "small"])
    assert [(t, n) for t, n, _ in cells][:2] == [("female_elderly", "implicit"), ("female_elderly", "trajectory")]
    assert len(cells) == 2 * len(estimators.CELLS) - len(estimators.PROFILE_ONLY_CELLS)
    assert ("small", "implicit-holdout") not in [(t, n) for t, n, _ in cells]
    by_name = {(t, n): c for t, n, c in cells}
    trajectory = by_name[("small", "trajectory")]
    assert (trajectory.methods, trajectory.target_set, trajectory.target_dialogs, trajectory.num_seeds) == (
        ("meta_net",),
        "small",
        (100,),
        1,
    )
    assert (trajectory.trajectory_steps, trajectory.meta_learning_rate) == (50, estimators.TRAJECTORY_META_LR)
    assert trajectory.meta_max_nonfinite == 10 and cells[0][2].meta_max_nonfinite == 0  # implicit: stops on NaN
    holdout = by_name[("female_elderly", "implicit-holdout")]
    assert (holdout.estimator, holdout.meta_holdout, holdout.meta_holdout_rotation) == ("implicit", 0.25, 100)
    held_out_trajectory = by_name[("female_elderly", "trajectory-holdout")]
    assert (held_out_trajectory.estimator, held_out_trajectory.trajectory_steps) == ("trajectory", 50)
    assert (held_out_trajectory.meta_holdout, held_out_trajectory.meta_max_nonfinite) == (0.25, 10)
    refit = by_name[("small", "trajectory-holdout-refit")]
    assert (refit.meta_holdout, refit.meta_holdout_rotation, refit.meta_holdout_refit) == (0.25, 0, True)
    gauss_newton = by_name[("small", "implicit-gn-holdout-refit")]
    assert (gauss_newton.estimator, gauss_newton.implicit_gauss_newton, gauss_newton.meta_holdout_refit) == (
        "implicit",
        True,
        True,
    )
    assert ("small", "implicit-holdout-refit") not in by_name and not cells[0][2].implicit_gauss_newton
    with pytest.raises(ConfigError, match="--targets: nobody not known"):
        estimators.cells(get_config(), ["nobody"])


def test_summary_pairs_each_cell_with_the_sweeps_union_and_averages_weights_by_kind(tmp_path):
    def write(folder, records, weights=None):
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(records))
        if weights is not None:
            examples = [{"kind": k} for k in ("ask_slot", "ask_slot", "greeting")]
            (folder / "related_weights.json").write_text(json.dumps({"examples": examples, "runs": weights}))

    rec = lambda method, acc, seed=0, **kinds: {
        **({"test_accuracy_by_kind": kinds} if kinds else {}),
        "method": method,
        "seed": seed,
        "target_dialogs": 100,
        "test_response_accuracy": acc,
        "best_step": 10,
        "stopped_step": 20,
        "wall_seconds": 5.0,
    }
    weights = lambda method, w: [{"method": method, "seed": 0, "target_dialogs": 100, "weights": w}]
    sweep = tmp_path / "sweep"
    write(
        sweep / "profiles" / "female_elderly",
        [
            rec("target_only", 0.6),
            rec("union", 0.75, ask_slot=0.9, greeting=1.0),
            rec("meta_net", 0.76, ask_slot=0.95, greeting=1.0),
            rec("union", 0.9, seed=1),
        ],
        weights("meta_net", [0.2, 0.4, 0.9]),
    )
    write(tmp_path / "out" / "female_elderly" / "implicit", [rec("meta_net", 0.78)], weights("meta_net", [1, 1, 0]))
    loaded = estimators.load(str(tmp_path / "out"), str(sweep), ["female_elderly"])
    text = estimators.summarize(loaded, get_config())
    assert "target_only" not in text
    assert "| union | 1 | 75.0 | 0.0 | 10 | 20 | 5 |" in text
    assert "| meta_net, lookahead | 1 | 76.0 | 1.0 |" in text
    assert "| meta_net, implicit | 1 | 78.0 | 3.0 |" in text
    assert "| meta_net, lookahead | 1 | 0.30 | 0.90 |" in text  # ask_slot mean of 0.2 and 0.4, greeting 0.9
    assert "| meta_net, implicit | 1 | 1.00 | 0.00 |" in text
    refit = rec("meta_net", 0.77) | {"before_refit": {"test_response_accuracy": 0.74}}
    write(tmp_path / "out" / "female_elderly" / "implicit-holdout-refit", [refit])
    with_refit = estimators.summarize(
        estimators.load(str(tmp_path / "out"), str(sweep), ["female_elderly"]), get_config()
    )
    assert "| meta_net, implicit-holdout-refit | 1 | 77.0 | 2.0 | 74.0 | 10 | 20 | 5 |" in with_refit
    assert "| union | 1 | 75.0 | 0.0 | – | 10 | 20 | 5 |" in with_refit
    weights, differences = estimators.by_kind(*loaded["female_elderly"])
    assert weights["meta_net, implicit"] == {"ask_slot": 1.0, "greeting": 0.0}
    assert differences == {"meta_net, lookahead": pytest.approx({"ask_slot": 5.0, "greeting": 0.0})}
    assert [p.rsplit("/", 1)[1] for p in estimators.figures(loaded, str(tmp_path / "plots"))] == [
        "female_elderly_by_kind.png"
    ]


def test_a_diverging_cell_is_recorded_and_does_not_stop_the_others(tmp_path, monkeypatch):
    """A cell whose run hits non-finite values gets ``diverged.json`` (its step), the later cells still run, the
    summary says so, and a re-run does not train it again."""
    from metadial.loop import NonFiniteError

    calls = []

    def fake_run(config, workdir):
        calls.append(os.path.basename(workdir))
        if workdir.endswith("implicit"):
            raise NonFiniteError("meta_net-100-seed0: non-finite train_loss=nan at step 7", 7)

    monkeypatch.setattr(estimators.train, "run", fake_run)
    sweep = tmp_path / "sweep" / "profiles" / "female_elderly"
    sweep.mkdir(parents=True)
    (sweep / "results.json").write_text(json.dumps([]))
    estimators.run(get_config(), str(tmp_path / "out"), str(tmp_path / "sweep"), ["female_elderly"])
    assert calls == list(estimators.CELLS)  # every cell was tried
    assert json.loads((tmp_path / "out" / "female_elderly" / "implicit" / "diverged.json").read_text())["step"] == 7
    assert estimators.diverged_cells(str(tmp_path / "out"), ["female_elderly"]) == {"female_elderly": [("implicit", 7)]}
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "`meta_net, implicit` diverged: non-finite values at step 7" in summary
    calls.clear()
    estimators.run(get_config(), str(tmp_path / "out"), str(tmp_path / "sweep"), ["female_elderly"])
    assert "implicit" not in calls and len(calls) == len(estimators.CELLS) - 1


def test_published_estimator_table_matches_the_summary():
    """The README's block is the committed summary's first table (``tools.publish --first_table``)."""
    from pathlib import Path

    from tools.publish import headline, published_block

    root = Path(__file__).resolve().parents[1]
    summary = (root / "results/dialog_estimators/summary.md").read_text().strip("\n")
    assert published_block((root / "README.md").read_text(), "dialog_estimators") == headline(summary)
