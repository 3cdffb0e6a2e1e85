"""Checkpoint/resume: a launcher killed with SIGKILL and re-run ends with the uninterrupted run's results."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IDEAL = [
    "-m",
    "experiments.ideal",
    "--config.num_target=40",
    "--config.num_related=100",
    "--config.num_test=200",
    "--config.train_steps=300",
    "--config.log_every=25",
    "--config.checkpoint_every=25",
    "--config.num_seeds=1",
    "--config.methods=pretrain_finetune,meta_table",
    # the default implicit estimator and weighted sampling, its probabilities refreshed at every checkpoint
    "--config.sampling_every=25",
    # meta_table's outer loss on a held-out fold, then a final fit (a kill may land in either)
    "--config.meta_holdout=0.25",
    "--config.meta_holdout_refit=True",
]
DIALOG = [
    "-m",
    "experiments.dialog",
    "--config.max_dialogs=4",
    "--config.target_dialogs=3",
    "--config.train_steps=12",
    "--config.eval_every=3",
    "--config.checkpoint_every=3",
    "--config.num_seeds=1",
    "--config.eval_batch_size=64",
    "--config.methods=meta_net",
    # the resumed run also covers a look-ahead over two fresh batch pairs, outer loss on the inner target batch
    "--config.inner_steps=2",
    "--config.fresh_inner_batches=True",
    "--config.outer_batch=target",
]


def results_without_time(workdir: Path) -> list[dict]:
    """The records without the fields that say how the run was made (its time, where it resumed)."""
    return [
        {k: v for k, v in r.items() if k not in ("wall_seconds", "resumed_from_step")}
        for r in json.loads((workdir / "results.json").read_text())
    ]


def resumed_steps(workdir: Path) -> list[int]:
    return [r["resumed_from_step"] for r in json.loads((workdir / "results.json").read_text())]


def kill_midway_then_resume(args: list[str], workdir: Path, seed: int) -> None:
    """Starts the launcher, SIGKILLs it at a random moment after its first metrics line, then re-runs it."""
    cmd = [sys.executable, *args, f"--workdir={workdir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    proc.kill()
    proc.wait()
    if (workdir / "results.json").exists():
        json.loads((workdir / "results.json").read_text())  # never truncated
    assert (workdir / "checkpoints").exists()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)


@pytest.mark.parametrize("args", [IDEAL, DIALOG], ids=["ideal", "dialog"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, args):
    # the uninterrupted run goes on beside the killed one (the two processes' compilations overlap)
    straight = subprocess.Popen(
        [sys.executable, *args, f"--workdir={tmp_path / 'straight'}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_midway_then_resume(args, tmp_path / "resumed", seed=len(args))
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err.decode()[-2000:]
    assert results_without_time(tmp_path / "resumed") == results_without_time(tmp_path / "straight")
    assert set(resumed_steps(tmp_path / "straight")) == {0}
    flag = lambda name: int(next(a for a in args if a.startswith(f"--config.{name}=")).split("=")[1])
    # a resumed run starts at one of its checkpoints, before the end
    assert all(
        0 <= s < flag("train_steps") and s % flag("checkpoint_every") == 0 for s in resumed_steps(tmp_path / "resumed")
    )
    if "experiments.dialog" in args[1]:
        weights = lambda d: json.loads((d / "related_weights.json").read_text())
        assert weights(tmp_path / "resumed") == weights(tmp_path / "straight")
        assert all(0.0 < w < 1.0 for run in weights(tmp_path / "resumed")["runs"] for w in run["weights"])
    steps = lambda d: [(e["method"], e["seed"], e["step"]) for e in map(json.loads, (d / "metrics.jsonl").open())]
    assert sorted(steps(tmp_path / "resumed")) == sorted(steps(tmp_path / "straight"))
