"""The launchers' command line (experiments/shared/cli.py): config mistakes in one line, fields in --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.ideal", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.foo=1"], "error: --config.foo: no such config field (fields: batch_size, checkpoint_every,"),
        (["--config.num_seed=1"], "error: --config.num_seed: no such config field; did you mean num_seeds?"),
        (["--config.num_seeds=abc"], "error: flag --config.num_seeds=abc: invalid literal for int()"),
        (["--config.methods=union,magic"], "error: config.methods: magic not allowed; allowed: target_only, union,"),
        (["--config.corrupt_fraction=1.5"], "error: config.corrupt_fraction must be in [0, 1), got 1.5"),
        (["--config=nope.py"], "error: --config=nope.py: cannot load it ("),
    ],
)
def test_config_mistakes_are_one_line_naming_the_field(tmp_path, args, message):
    out = launch(f"--workdir={tmp_path / 'w'}", *args)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(message), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_help_lists_the_config_fields():
    out = launch("--help")
    assert "num_seeds=5" in out.stdout and "corrupt_fraction=0.75" in out.stdout and "--workdir" in out.stdout
