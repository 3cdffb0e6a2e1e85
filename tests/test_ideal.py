"""The ideal-task generator, the AUC metric and the ideal launcher (tiny configurations)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs.ideal import get_config
from experiments import ideal
from metadial.data.ideal import make_ideal_task
from metadial.metrics import roc_auc

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    c = get_config()
    c.num_target, c.num_related, c.num_test = 40, 100, 200
    c.train_steps, c.log_every, c.num_seeds = 30, 10, 1
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.mark.parametrize("corruption", ["uniform", "shift"])
def test_generator_corrupts_exactly_the_requested_fraction(corruption):
    task = make_ideal_task(jax.random.PRNGKey(0), num_classes=4, input_dim=5, num_target=30, num_related=400,
                           num_test=50, corrupt_fraction=0.75, corruption=corruption)
    clean = make_ideal_task(jax.random.PRNGKey(0), num_classes=4, input_dim=5, num_target=30, num_related=400,
                            num_test=50, corrupt_fraction=0.0, corruption=corruption)
    r = task.related
    assert (~r["correct"]).sum() == 300
    np.testing.assert_array_equal(r["flag"], r["correct"].astype(np.float32))
    np.testing.assert_array_equal(r["x"], clean.related["x"])
    true_y = clean.related["y"]
    np.testing.assert_array_equal(r["y"] == true_y, r["correct"])
    if corruption == "shift":
        np.testing.assert_array_equal(r["y"][~r["correct"]], (true_y[~r["correct"]] + 1) % 4)
    assert task.target["flag"].all() and task.test["flag"].all()
    assert task.target["x"].shape == (30, 5) and task.test["y"].shape == (50,)


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="corruption"):
        make_ideal_task(jax.random.PRNGKey(0), num_classes=4, input_dim=5, num_target=3, num_related=4,
                        num_test=5, corrupt_fraction=0.5, corruption="flip")
    with pytest.raises(ValueError, match="num_target"):
        make_ideal_task(jax.random.PRNGKey(0), num_classes=4, input_dim=5, num_target=0, num_related=4,
                        num_test=5, corrupt_fraction=0.5)


def test_roc_auc_known_answers():
    labels = np.array([1, 1, 0, 0, 1, 0], bool)
    assert roc_auc(np.array([5, 4, 1, 2, 3, 0.5]), labels) == 1.0
    assert roc_auc(-np.array([5, 4, 1, 2, 3, 0.5]), labels) == 0.0
    assert roc_auc(np.ones(6), labels) == 0.5
    assert roc_auc(np.ones(3), np.ones(3, bool)) is None
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels] for n in scores[~labels]]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))


def test_launcher_same_seed_same_results_and_seeds_differ():
    config = tiny_config(methods=("pretrain_finetune", "meta_net"), num_seeds=2)
    first = ideal.run(config, None)
    second = ideal.run(config, None)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rs]
    assert strip(first) == strip(second)
    assert first[0]["test_accuracy"] != first[1]["test_accuracy"]  # seeds 0 and 1 differ


def test_launcher_rejects_bad_config_before_training(tmp_path):
    with pytest.raises(ValueError, match="allowed: target_only"):
        ideal.run(tiny_config(methods=("union", "magic")), str(tmp_path))
    with pytest.raises(ValueError, match="num_target must be positive"):
        ideal.run(tiny_config(num_target=-3), str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_launcher_command_writes_results_for_every_method(tmp_path):
    """The documented command line, all methods, on a tiny configuration."""
    cmd = [sys.executable, "-m", "experiments.ideal", "--config=configs/ideal.py", f"--workdir={tmp_path}",
           "--config.num_target=40", "--config.num_related=100", "--config.num_test=200",
           "--config.train_steps=20", "--config.log_every=10", "--config.num_seeds=1"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in records] == list(ideal.METHODS)
    keys = {"method", "seed", "test_accuracy", "weight_auc", "mean_weight_correct", "mean_weight_corrupted"}
    for r in records:
        assert keys <= set(r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
        weighted = r["method"] in ideal.WEIGHTED
        assert (r["weight_auc"] is not None) == weighted
        if weighted:
            assert 0.0 <= r["weight_auc"] <= 1.0
    summary = (tmp_path / "summary.md").read_text()
    for method in ideal.METHODS:
        assert f"| {method} |" in summary


def test_published_ideal_table_matches_results_json():
    """README and results/ideal/summary.md hold the table that the launcher derives from results.json."""
    from experiments.publish import published_block

    records = json.loads((ROOT / "results/ideal/results.json").read_text())
    summary = (ROOT / "results/ideal/summary.md").read_text()
    assert summary == ideal.summarize(records, get_config())
    assert published_block((ROOT / "README.md").read_text(), "ideal") == summary.strip("\n")
    assert sorted({r["seed"] for r in records}) == [0, 1, 2, 3, 4]


def test_merge_of_split_workdirs_reproduces_the_single_run_table(tmp_path):
    from experiments.merge import merge

    records = json.loads((ROOT / "results/ideal/results.json").read_text())
    for name, part in [("a", records[:10]), ("b", records[10:])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    merge("ideal", get_config(), [str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    assert (tmp_path / "out/summary.md").read_text() == (ROOT / "results/ideal/summary.md").read_text()
    (tmp_path / "a/results.json").write_text("[{")
    with pytest.raises(ValueError, match=r"a/results.json:1: not valid JSON"):
        merge("ideal", get_config(), [str(tmp_path / "a")], str(tmp_path / "out"))
