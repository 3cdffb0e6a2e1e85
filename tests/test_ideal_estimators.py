"""The ideal task's estimator comparison (experiments/ideal/estimators.py): its cells and its table."""

from __future__ import annotations

from experiments.ideal import estimators
from experiments.ideal.configs.default import get_config


def test_cells_cover_every_estimator_and_sampling_at_each_level():
    cells = estimators.cells(get_config())
    names = [(level, name) for level, name, _ in cells]
    assert names[:3] == [
        ("corrupt_75", "baselines"),
        ("corrupt_75", "lookahead-uniform"),
        ("corrupt_75", "lookahead-weighted"),
    ]
    assert len(cells) == 2 * (1 + 3 * 2 + 2 + 9 + 2) and names[-1] == (
        "corrupt_90",
        "implicit-weighted-gn-holdout-refit",
    )
    gauss_newton = dict((name, config) for level, name, config in cells if level == "corrupt_75")[
        "implicit-weighted-gn"
    ]
    assert (gauss_newton.estimator, gauss_newton.implicit_gauss_newton, gauss_newton.meta_holdout) == (
        "implicit",
        True,
        0,
    )
    assert estimators._row_name("implicit-weighted-gn-holdout-refit", "meta_net") == (
        "meta_net, implicit, weighted, Gauss-Newton, outer loss on 25% held out (fixed fold), then a final fit on all "
        "of it"
    )
    c = dict((name, config) for level, name, config in cells if level == "corrupt_90")["implicit-weighted"]
    assert (c.methods, c.estimator, c.related_sampling, c.corrupt_fraction) == (
        ("meta_net",),
        "implicit",
        "weighted",
        0.9,
    )
    tuned = dict((name, config) for level, name, config in cells if level == "corrupt_75")["trajectory-uniform-lr"]
    assert (tuned.estimator, tuned.meta_learning_rate) == ("trajectory", estimators.TRAJECTORY_META_LR)
    assert estimators._row_name("trajectory-uniform-lr", "meta_net") == "meta_net, trajectory, uniform, meta lr 0.2"
    held_out = dict((name, config) for level, name, config in cells if level == "corrupt_75")
    held_out = held_out["trajectory-uniform-lr-holdout"]
    assert (held_out.estimator, held_out.meta_learning_rate, held_out.meta_holdout, held_out.meta_holdout_rotation) == (
        "trajectory",
        estimators.TRAJECTORY_META_LR,
        estimators.HOLDOUT,
        0,
    )
    assert estimators._row_name("trajectory-uniform-lr-holdout-rotating", "meta_net") == (
        "meta_net, trajectory, uniform, meta lr 0.2, outer loss on 25% held out (fold rotating every 100 steps)"
    )
    refit = dict((name, config) for level, name, config in cells if level == "corrupt_90")[
        "implicit-weighted-holdout-refit"
    ]
    assert (refit.meta_holdout, refit.meta_holdout_rotation, refit.meta_holdout_refit) == (estimators.HOLDOUT, 0, True)
    assert estimators._row_name("implicit-weighted-holdout-refit", "meta_net") == (
        "meta_net, implicit, weighted, outer loss on 25% held out (fixed fold), then a final fit on all of it"
    )
    assert estimators._row_name("lookahead-uniform-holdout", "meta_net") == (
        "meta_net, lookahead, uniform, outer loss on 25% held out (fixed fold)"
    )


def test_table_pairs_each_row_with_the_oracle():
    rec = lambda method, seed, acc: {"method": method, "seed": seed, "test_accuracy": acc}
    results = {
        ("corrupt_75", "baselines"): [
            rec("oracle", 0, 0.80),
            rec("oracle", 1, 0.82),
            rec("union", 0, 0.5),
            rec("union", 1, 0.5),
        ],
        ("corrupt_75", "implicit-weighted"): [rec("meta_net", 0, 0.79), rec("meta_net", 1, 0.83)],
    }
    text = estimators.summarize(results)
    assert "| oracle | 81.0 ± 1.0 | 1.0× | – |" in text
    assert "| meta_net, implicit, weighted | 81.0 ± 2.0 | 2.0× | +0.0 |" in text
    assert "| union | 50.0 ± 0.0 | 0.0× | -31.0 |" in text


def test_published_estimator_table_matches_its_results():
    """README and results/ideal_estimators/summary.md hold the table derived from the cells' results files."""
    import json
    from pathlib import Path

    from tools.publish import published_block

    root = Path(__file__).resolve().parents[1] / "results" / "ideal_estimators"
    results = {
        (level, name): json.loads((root / level / name / "results.json").read_text())
        for level, name, _ in estimators.cells(get_config())
        if (root / level / name / "results.json").exists()
    }
    summary = (root / "summary.md").read_text()
    assert summary == estimators.summarize(results)
    assert published_block((root.parents[1] / "README.md").read_text(), "ideal_estimators") == summary.strip("\n")
    for records in results.values():
        for method in {r["method"] for r in records}:
            assert sorted(r["seed"] for r in records if r["method"] == method) == [0, 1, 2, 3, 4]
