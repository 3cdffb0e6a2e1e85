"""The converged sweep's parts and tables (experiments/dialog/sweep.py), on records made up for the test."""

from __future__ import annotations

import pytest

from experiments.dialog import sweep
from experiments.dialog.configs.default import get_config
from metadial.data.dialog_tasks import PROFILES


def test_parts_are_checked_launcher_configs():
    runs = sweep.part_configs(get_config(), ["profiles", "small_100"])
    assert [sub for sub, _ in runs] == [f"profiles/{p}" for p in PROFILES] + ["small_100/small"]
    assert all(c.target_dialogs == (100,) for _, c in runs)
    assert [c.num_seeds for _, c in runs] == [1] * 6 + [3] and runs[0][1].target_set == PROFILES[0]
    with pytest.raises(ValueError, match="--parts: nope not known; parts: profiles, small_100, small_1000"):
        sweep.part_configs(get_config(), ["nope"])


def test_small_1000_has_its_own_epoch_cap_and_the_summary_says_so():
    config = get_config()
    (_, capped), (_, small_100) = sweep.part_configs(config, ["small_1000", "small_100"])
    assert (capped.max_epochs, small_100.max_epochs, config.max_epochs) == (200, 1000, 1000)
    assert sweep.part_configs(config, ["small_1000"], small_1000_max_epochs=0)[0][1].max_epochs == 1000
    record = {"method": "union", "target_dialogs": 1000, "seed": 0, "test_response_accuracy": 0.8}
    record.update(target_set="small", stopped_step=5, best_step=5, train_steps=5, eval_every=1)
    text = sweep.summarize(
        {"small_1000": [record], "small_100": [dict(record, target_dialogs=100)]},
        config,
        part_config={"small_1000": capped, "small_100": small_100},
    )
    assert "`small/`, 1000 target dialogs (at most 200 epochs of batch 32," in text
    assert "`small/`, 100 target dialogs, mean ± std over seeds" in text  # the header's budget: not repeated


def test_profile_tables_pair_each_method_with_union_per_profile():
    acc = {"union": [0.70, 0.72, 0.74], "meta_net": [0.71, 0.71, 0.76]}
    records = [
        {"method": m, "target_set": p, "test_response_accuracy": a}
        for m, values in acc.items()
        for p, a in zip(PROFILES, values)
    ]
    text = sweep.profile_tables(records, ["union", "meta_net"])
    assert "| union | 70.0 | 72.0 | 74.0 | 72.0 ± 1.6 |" in text
    assert "| meta_net | +0.67 | 1.25 | 2 / 3 |" in text  # differences +1, -1, +2 points
    before_union = sweep.profile_tables([r for r in records if r["method"] != "union"], ["union", "meta_net"])
    assert "Paired difference" not in before_union  # no empty table while no `union` run has finished


def test_budget_hits_names_the_runs_that_used_the_whole_budget():
    records = [
        {"method": "union", "target_set": PROFILES[0], "seed": 0, "stopped_step": 900, "train_steps": 1000},
        {"method": "meta_net", "target_set": PROFILES[1], "seed": 0, "stopped_step": 1000, "train_steps": 1000},
    ]
    assert sweep.budget_hits(records) == (
        "Early stopping ended 1 of 2 runs; the other 1 ran to the end of the budget, so they are not shown to "
        f"have converged: meta_net ({PROFILES[1]}, seed 0).\n"
    )
    assert sweep.budget_hits(records[:1]) == "Early stopping ended 1 of 1 runs.\n"
    assert sweep.budget_hits(records[1:]).startswith("Early stopping ended none of the 1 runs: each ran to the end")


def test_wall_clock_sums_the_runs():
    records = [{"wall_seconds": 1800.0}, {"wall_seconds": 5400.0}]
    assert sweep.wall_clock(records) == "Wall-clock of these 2 runs, one at a time: 2.0 h.\n"
    assert sweep.wall_clock([]) == ""


def test_late_dev_gain_is_the_rise_of_the_best_dev_score_over_the_last_evaluations():
    record = {"method": "union", "target_dialogs": 100, "seed": 0, "stopped_step": 100, "eval_every": 10}
    key = {k: record[k] for k in ("method", "target_dialogs", "seed")}
    scores = [0.5, 0.6, 0.58, 0.61, 0.6, 0.62, 0.6, 0.63, 0.62, 0.6]  # steps 10, ..., 100
    metrics = [dict(key, step=10 * (i + 1), dev_accuracy=s) for i, s in enumerate(scores)]
    metrics.append(dict(key, seed=1, step=100, dev_accuracy=0.9))  # another run's line
    metrics.append(dict(key, step=95, train_loss=0.1))  # a line without an evaluation
    assert sweep.late_dev_gain(metrics, record, 5) == pytest.approx(0.63 - 0.61)  # best by step 50: 0.61
    assert sweep.late_dev_gain(metrics, record, 10) is None
    full = dict(record, target_set=PROFILES[0], train_steps=100, late_dev_gain=0.02)
    assert sweep.budget_hits([full, dict(full, late_dev_gain=0.004)], 5).endswith(
        "Over their last 5 evaluations their best dev per-response accuracy rose by 1.20 points on average "
        "(at most 2.00).\n"
    )


def test_late_window_is_the_patience_or_a_quarter_of_a_short_budget():
    profile = {"train_steps": 62800, "eval_every": 628}  # 100 evaluations: the patience, 20
    small_1000 = {"train_steps": 127000, "eval_every": 6350}  # 20 evaluations in all: the last 5
    assert sweep.late_evaluations([profile, profile], 20) == 20
    assert sweep.late_evaluations([small_1000], 20) == 5
    assert sweep.late_evaluations([profile, small_1000], 3) == 3


def test_summary_averages_kind_accuracy_and_kind_weights_over_profiles():
    records = [
        {
            "method": "meta_net",
            "target_set": p,
            "seed": 0,
            "target_dialogs": 100,
            "test_response_accuracy": 0.7,
            "best_step": 10,
            "stopped_step": 20,
            "train_steps": 30,
            "eval_every": 10,
            "wall_seconds": 1.0,
            "test_accuracy_by_kind": {"api_call": a},
        }
        for p, a in zip(PROFILES[:2], [0.8, 0.9])
    ]
    runs = [{"method": "meta_net", "target_dialogs": 100, "seed": 0, "weights": w} for w in ([0.2, 1.0], [0.4, 0.0])]
    text = sweep.summarize({"profiles": records}, get_config(), {"profiles": (runs, ["api_call", "ask_slot"])})
    assert "| meta_net | 2 | 85.0 ± 5.0 |" in text  # api_call accuracy over the two profiles
    assert "| meta_net | 100 | 2 | 0.30 ± 0.10 | 0.50 ± 0.50 |" in text  # weights of api_call, ask_slot


def test_small_parts_pair_each_method_with_union_of_the_same_seed():
    base = dict(target_set="small", target_dialogs=100, best_step=5, stopped_step=5, train_steps=9, eval_every=1)
    acc = {"union": [0.70, 0.72, 0.74], "meta_net": [0.71, 0.70, 0.76]}
    records = [
        dict(base, method=m, seed=seed, test_response_accuracy=a, test_accuracy_by_kind={"api_call": a})
        for m, values in acc.items()
        for seed, a in enumerate(values)
    ]
    runs = [{"method": "meta_net", "target_dialogs": 100, "seed": s, "weights": [0.2 * s, 1.0]} for s in range(3)]
    text = sweep.summarize({"small_100": records}, get_config(), {"small_100": (runs, ["api_call", "ask_slot"])})
    assert "same seed:\n\n| method | mean | std | wins / seeds |" in text
    assert "| meta_net | +0.33 | 1.70 | 2 / 3 |" in text  # differences +1, -2, +2 points
    assert "| meta_net | 3 | 72.3 ± 2.6 |" in text  # api_call accuracy over the seeds
    assert "| meta_net | 100 | 3 | 0.20 ± 0.16 | 1.00 ± 0.00 |" in text  # weights of api_call, ask_slot
