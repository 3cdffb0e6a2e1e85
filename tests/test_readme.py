"""The README's library example runs as written, and the README's commands name modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert match, "README.md has no <!-- example:start --> ```python ... ``` <!-- example:end --> block"
    return match.group(1)


def test_library_example_runs_as_written(capsys):
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md (library example)", "exec"), namespace)
    out = capsys.readouterr().out
    # the example prints the learned weights of the clean and the noisy related examples, clean ones higher
    clean, noisy = namespace["weights"][~namespace["noisy"]].mean(), namespace["weights"][namespace["noisy"]].mean()
    assert clean > noisy + 0.2, (clean, noisy)
    assert "mean weight" in out


def test_every_python_module_the_docs_run_exists():
    for doc in ("README.md", "results/README.md", "results/dialog.md"):
        for module in re.findall(r"python -m ([\w.]+)", (ROOT / doc).read_text()):
            if module in ("pytest", "pip", "venv"):
                continue
            path = ROOT / module.replace(".", "/")
            assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), (doc, module)
