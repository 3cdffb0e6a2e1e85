"""Fixtures shared by test files: one dialog launcher run on a smoke configuration (every method); a
compilation cache that the test session and the launchers it starts share."""

from __future__ import annotations

import os
import tempfile

# Launchers started by the tests (and the tests themselves) compile the same steps again and again: let them
# share XLA's compiled programs through JAX's persistent cache, in a folder of this session only. Compiled
# programs are keyed by their HLO, so results are unchanged; only compile time is saved. Every program is cached,
# however quick to compile: a launcher also compiles about 200 small programs outside its jitted step (parameter
# initialisation, random draws, metrics), and reading them back saved 4.6 s of a 25 s dialog smoke run.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="metadial-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are tiny, so compiling them takes most of the suite's time: LLVM's optimisation level 0
# cuts the whole suite by about a quarter (599.9 s against 796.5 s, beside one training run). Every comparison in
# the tests is between programs built alike, or to a tolerance, so none depends on the level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# pytest-xdist runs one test process per core (pyproject.toml's addopts); on a GPU machine each would otherwise
# reserve most of the GPU's memory at its first jax call.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.dialog.configs.default import get_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = dict(max_dialogs=4, target_dialogs=(3,), train_steps=4, eval_every=2, num_seeds=1, eval_batch_size=64)


def smoke_config(**overrides):
    """The dialog default config on the first 4 dialogs of every file, 4 steps."""
    config = get_config()
    config.update(dict(SMOKE, **overrides))
    return config


@pytest.fixture(scope="session")
def smoke_workdir(tmp_path_factory) -> Path:
    """Every method on the smoke configuration, run once by the documented command line."""
    workdir = tmp_path_factory.mktemp("dialog_smoke")
    args = [f"--config.{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in SMOKE.items()]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.dialog", f"--workdir={workdir}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (workdir / "stdout.txt").write_text(out.stdout)
    (workdir / "stderr.txt").write_text(out.stderr)
    return workdir
