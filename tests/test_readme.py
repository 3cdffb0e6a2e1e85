"""The README's library example runs as written, and the README's commands name modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the docs whose commands people copy
DOCS = ("README.md", "results/README.md", "results/dialog.md", "results/dialog_converged.md")


def readme_example(name: str = "example") -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {name}:start -->\s*```python\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert match, f"README.md has no <!-- {name}:start --> ```python ... ``` <!-- {name}:end --> block"
    return match.group(1)


def test_library_example_runs_as_written(capsys):
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md (library example)", "exec"), namespace)
    out = capsys.readouterr().out
    # the example prints the learned weights of the clean and the noisy related examples, clean ones higher
    clean, noisy = namespace["weights"][~namespace["noisy"]].mean(), namespace["weights"][namespace["noisy"]].mean()
    assert clean > noisy + 0.2, (clean, noisy)
    assert "mean weight" in out


def test_trainstate_loop_equals_the_library_step(capsys):
    """The README's own-loop example (meta_update + flax TrainState) makes the same updates as learner.step."""
    import jax
    import numpy as np

    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md (library example)", "exec"), namespace)
    exec(compile(readme_example("example:trainstate"), "README.md (TrainState example)", "exec"), namespace)
    capsys.readouterr()
    got = (namespace["model"].params, namespace["weighting_state"].meta_params)
    want = (namespace["state"].params, namespace["state"].meta_params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(namespace["model"].step) == int(namespace["state"].step) == 300


def test_every_python_module_the_docs_run_exists():
    for doc in DOCS:
        for module in re.findall(r"python -m ([\w.]+)", (ROOT / doc).read_text()):
            if module in ("pytest", "pip", "venv"):
                continue
            path = ROOT / module.replace(".", "/")
            assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), (doc, module)


def test_every_command_in_the_docs_bash_blocks_starts_its_own_line():
    """Two commands run together on one line (a lost newline) would be copied and run as one broken command."""
    starts_a_command = re.compile(r"(&&|;|\||\(|\btime)\s*$")
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), re.S):
            for match in re.finditer(r"python -m ", block):
                before = block[: match.start()].rsplit("\n", 1)[-1]
                assert not before.strip() or starts_a_command.search(before), (doc, before + "python -m ...")
