"""The ideal launcher (experiments/ideal/train.py) on tiny configurations, and its published table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.ideal import train as ideal
from experiments.ideal.configs.default import get_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    c = get_config()
    c.num_target, c.num_related, c.num_test = 40, 100, 200
    c.train_steps, c.log_every, c.num_seeds = 30, 10, 1
    c.update(overrides)
    return c


def test_launcher_same_seed_same_results_and_seeds_differ():
    config = tiny_config(methods=("pretrain_finetune", "meta_net"), num_seeds=2)
    first = ideal.run(config, None)
    second = ideal.run(config, None)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rs]
    assert strip(first) == strip(second)
    assert first[0]["test_accuracy"] != first[1]["test_accuracy"]  # seeds 0 and 1 differ


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(methods=("union", "magic")), "config.methods: magic not allowed; allowed: target_only"),
        (dict(num_target=-3), "config.num_target must be positive, got -3"),
        (dict(weight_net_inputs=("flag", "colour")), "config.weight_net_inputs: colour not allowed; allowed: x, flag"),
        (dict(corrupt_fraction=1.0), r"config.corrupt_fraction must be in \[0, 1\)"),
    ],
)
def test_launcher_rejects_bad_config_before_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        ideal.run(tiny_config(**override), str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_launcher_command_writes_results_for_every_method(tmp_path):
    """The documented command line, all methods, on a tiny configuration; a rerun only reports."""
    cmd = [
        sys.executable,
        "-m",
        "experiments.ideal",
        f"--workdir={tmp_path}",
        "--config.num_target=40",
        "--config.num_related=100",
        "--config.num_test=200",
        "--config.train_steps=20",
        "--config.log_every=10",
        "--config.num_seeds=1",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in records] == list(ideal.METHODS)
    keys = {"method", "seed", "test_accuracy", "weight_auc", "mean_weight_correct", "mean_weight_corrupted"}
    for r in records:
        assert keys <= set(r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
        weighted = ideal.METHODS[r["method"]].weights is not None
        assert (r["weight_auc"] is not None) == weighted
        if weighted:
            assert 0.0 <= r["weight_auc"] <= 1.0
    summary = (tmp_path / "summary.md").read_text()
    for method in ideal.METHODS:
        assert f"| {method} |" in summary
    again = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    n = len(ideal.METHODS)
    assert f"0 runs to make ({n} of the config's {n} already finished" in again.stderr
    assert summary.strip() in again.stdout


def test_published_ideal_table_matches_results_json():
    """README and results/ideal/summary.md hold the table that the launcher derives from results.json."""
    from tools.publish import published_block

    records = json.loads((ROOT / "results/ideal/results.json").read_text())
    summary = (ROOT / "results/ideal/summary.md").read_text()
    assert summary == ideal.summarize(records, get_config())
    assert published_block((ROOT / "README.md").read_text(), "ideal") == summary.strip("\n")
    assert sorted({r["seed"] for r in records}) == [0, 1, 2, 3, 4]


def test_final_fit_after_a_held_out_meta_run(tmp_path):
    """meta_holdout_refit: the meta run (outer loss on a fixed held-out fold) is followed by a final fit with the
    learned weighting fixed; the record's accuracy is the final fit's, ``before_refit`` the meta run's, and the
    final fit has its own checkpoints and metrics lines (so resuming one never touches the other's)."""
    config = tiny_config(methods=("meta_net",), meta_holdout=0.25, meta_holdout_refit=True, tensorboard=False)
    (record,) = ideal.run(config, str(tmp_path))
    assert 0.0 <= record["before_refit"]["test_accuracy"] <= 1.0 and 0.0 <= record["test_accuracy"] <= 1.0
    assert record["meta_holdout"] == 0.25
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {(e["method"], e["step"]) for e in lines} == {
        (m, s) for m in ("meta_net", "meta_net-refit") for s in (10, 20, 30)
    }
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["meta_net-refit-seed0", "meta_net-seed0"]
    assert ideal.run(config, str(tmp_path)) == [record]  # a finished run is not redone
    with pytest.raises(ideal.ConfigError, match="meta_holdout_refit refits on the data a held-out fold kept back"):
        ideal.run(tiny_config(methods=("meta_net",), meta_holdout_refit=True), None)
