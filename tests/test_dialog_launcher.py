"""The dialog launcher (experiments/dialog/train.py) on a smoke configuration, and its published tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.dialog import train
from experiments.dialog.configs.default import get_config as get_default_config
from experiments.dialog.configs.fixed_budget import get_config
from experiments.dialog.program import METHODS
from experiments.shared.config import ConfigError
from tests.conftest import smoke_config

ROOT = Path(__file__).resolve().parents[1]


def test_launcher_writes_a_record_per_method(smoke_workdir):
    records = json.loads((smoke_workdir / "results.json").read_text())
    assert [r["method"] for r in records] == list(get_default_config().methods)
    keys = {
        "method",
        "seed",
        "target_dialogs",
        "test_response_accuracy",
        "test_dialog_accuracy",
        "oov_response_accuracy",
        "oov_dialog_accuracy",
        "dev_response_accuracy",
        "train_steps",
        "best_step",
        "wall_seconds",
        "test_accuracy_by_kind",
    }
    for r in records:
        assert keys <= set(r) and r["target_dialogs"] == 3 and r["train_steps"] == 4 and r["best_step"] in (2, 4)
        for k in ("test_response_accuracy", "test_dialog_accuracy", "oov_response_accuracy", "dev_response_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert r["test_accuracy_by_kind"] and all(0.0 <= v <= 1.0 for v in r["test_accuracy_by_kind"].values())


def test_launcher_writes_the_weights_of_the_weighted_methods(smoke_workdir):
    weights = json.loads((smoke_workdir / "related_weights.json").read_text())
    methods = get_default_config().methods
    assert [run["method"] for run in weights["runs"]] == [n for n in methods if METHODS[n].weights]
    n = len(weights["examples"])
    assert n > 0 and all(len(run["weights"]) == n for run in weights["runs"])
    assert set(weights["examples"][0]) == {"example_id", "dialog_id", "turn", "bot", "kind", "source"}
    assert {e["source"] for e in weights["examples"]} == {"babi"}


def test_launcher_ends_by_saying_what_it_wrote_and_printing_the_summary(smoke_workdir):
    summary = (smoke_workdir / "summary.md").read_text()
    assert "| meta_net | 3 | 1 |" in summary and "api_call" in summary and "by kind of target bot turn" in summary
    assert summary.strip() in (smoke_workdir / "stdout.txt").read_text()
    log = (smoke_workdir / "stderr.txt").read_text()
    assert "loading the dialog data" in log and "compiling the training step" in log
    wrote = next(line for line in log.splitlines() if "] wrote " in line)
    assert wrote.endswith(f" in {smoke_workdir}")
    assert all(name in wrote for name in ("related_weights.json", "results.json", "summary.md"))
    assert max(len(line) for line in log.splitlines()) < 300


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(methods=("target_only", "oracle")), "config.methods: oracle not allowed; allowed: target_only"),
        (dict(target_dialogs=(100, -5)), "target_dialogs must be positive"),
        (dict(data_dir="/nonexistent"), "config.data_dir='/nonexistent': no such file: /nonexistent/"),
        (dict(max_dialogs=3, target_dialogs=(10,)), "exceeds the 3 training dialogs"),
        (dict(outer_batch="dev"), "outer_batch must be one of fresh, target"),
    ],
)
def test_launcher_rejects_bad_config_before_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train.run(smoke_config(**override), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "results.json").exists()


def test_published_dialog_tables_match_their_results():
    """README and results/dialog.md hold the tables derived from the committed results files."""
    from metadial.data.babi_dialog import bot_turn_kind
    from tools.publish import headline, published_block

    records = json.loads((ROOT / "results/dialog/results.json").read_text())
    weights = json.loads((ROOT / "results/dialog/related_weights.json").read_text())
    kinds = [bot_turn_kind(e["bot"]) for e in weights["examples"]]
    summary = (ROOT / "results/dialog/summary.md").read_text()
    assert summary == train.summarize(records, weights["runs"], kinds, get_config())
    assert published_block((ROOT / "README.md").read_text(), "dialog") == headline(summary.strip("\n"))
    notes = (ROOT / "results/dialog.md").read_text()
    for name in ("dialog", "dialog_variants", "dialog_budget", "dialog_horizon"):
        folder = ROOT / "results" / name
        assert published_block(notes, name) == (folder / "summary.md").read_text().strip("\n"), name


@pytest.mark.parametrize(
    "estimator, sampling, holdout",
    [("implicit", "uniform", 0.0), ("trajectory", "uniform", 0.0), ("lookahead", "weighted", 0.5)],
)
def test_estimators_sampling_and_holdout_run_in_the_dialog_launcher(tmp_path, estimator, sampling, holdout):
    """meta_net with each long-horizon estimator, with weight-aware sampling and with a held-out outer loss in
    rotating folds, trains, evaluates and records its choices; a trajectory segment of 2 real steps makes the
    4-step budget two calls. With a held-out fold, a final fit follows (``meta_holdout_refit``): the record gives
    its scores and the meta run's under ``before_refit``, and its metrics lines are its own."""
    config = smoke_config(
        methods=("meta_net",),
        estimator=estimator,
        trajectory_steps=2,
        related_sampling=sampling,
        meta_holdout=holdout,
        meta_holdout_rotation=1,
        meta_holdout_refit=holdout > 0,
        tensorboard=False,
    )
    train.run(config, str(tmp_path))
    (record,) = json.loads((tmp_path / "results.json").read_text())
    assert (record["estimator"], record["related_sampling"], record["meta_holdout"]) == (estimator, sampling, holdout)
    assert 0.0 <= record["test_response_accuracy"] <= 1.0
    assert record["stopped_step"] == record["train_steps"] == 4
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [e["step"] for e in lines if e["method"] == "meta_net"] == [2, 4]
    if holdout:
        from tools.heldout_losses import heldout_losses

        losses = heldout_losses(str(tmp_path), "meta_net-3-seed0")  # where the held-out loss comes from
        assert sum(k["share_of_held_out_loss"] for k in losses["kinds"].values()) == pytest.approx(1.0)
        assert 0 < sum(k["held_out"] for k in losses["kinds"].values()) == losses["held_out"] < losses["examples"]
        assert 0.0 <= record["before_refit"]["test_response_accuracy"] <= 1.0
        assert record["before_refit"]["stopped_step"] == 4
        assert [e["step"] for e in lines if e["method"] == "meta_net-refit"] == [2, 4]
    else:
        assert "before_refit" not in record and {e["method"] for e in lines} == {"meta_net"}


def test_meta_weight_net_runs_in_the_dialog_launcher_and_records_its_weights(tmp_path):
    """mwnet (weights from each related example's current loss) trains, evaluates and writes a weight per related
    example."""
    train.run(smoke_config(methods=("mwnet",), tensorboard=False), str(tmp_path))
    (record,) = json.loads((tmp_path / "results.json").read_text())
    assert (record["method"], record["estimator"]) == ("mwnet", "lookahead")
    (run,) = json.loads((tmp_path / "related_weights.json").read_text())["runs"]
    weights = np.asarray(run["weights"])
    assert weights.size > 0 and np.all((weights > 0) & (weights < 1)) and weights.std() > 0


def test_a_second_related_source_is_recorded_and_its_weights_reported_per_source(tmp_path):
    """related_sources=babi+profiles: other profiles' dialogs join the related pool; the record names the sources,
    every related example its source, and the summary gives the mean weight per source and per (source, kind)."""
    config = smoke_config(
        methods=("meta_net",),
        target_set="female_elderly",
        related_sources="babi+profiles",
        related_profile_dialogs=5,
        tensorboard=False,
    )
    train.run(config, str(tmp_path))
    (record,) = json.loads((tmp_path / "results.json").read_text())
    assert record["related_sources"] == "babi+profiles"
    weights = json.loads((tmp_path / "related_weights.json").read_text())
    sources = [e["source"] for e in weights["examples"]]
    assert set(sources) == {"babi", "profiles"} and sources == sorted(sources)  # bAbI's examples come first
    profiles = {e["profile"] for e in weights["examples"] if e["source"] == "profiles"}
    assert profiles and "female_elderly" not in profiles
    summary = (tmp_path / "summary.md").read_text()
    (run,) = weights["runs"]
    w, is_babi = np.asarray(run["weights"]), np.asarray(sources) == "babi"
    assert f"| meta_net | 3 | 1 | {w[is_babi].mean():.2f} | {w[~is_babi].mean():.2f} |" in summary
    assert "| meta_net | 3 | profiles | 1 |" in summary


def test_a_second_related_source_needs_a_profile_target(tmp_path):
    with pytest.raises(ConfigError, match=r"set config\.target_set to a profile"):
        train.run(smoke_config(related_sources="babi+profiles"), str(tmp_path))
