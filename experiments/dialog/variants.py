r"""Runs the dialog launcher under named config variants (``configs/variants.py``) and tabulates them.

    python -m experiments.dialog.variants --variants=raw_weights,inner_steps_2 --workdir=DIR \
        [--reference=results/dialog] [--config.FIELD=VALUE ...]

Each variant applies its changes (``VARIANTS[name]`` in ``experiments/dialog/configs/variants.py``) to
``--config`` (default: ``configs/fixed_budget.py``, with any ``--config.FIELD`` overrides) and runs the
launcher in ``DIR/NAME`` (an ordinary, resumable launcher workdir). ``DIR/summary.md`` holds one table of
every variant's records, plus the records of ``--reference`` (a workdir run with ``--config`` itself) under
the name ``default``.
"""

from __future__ import annotations

import copy
import os

import ml_collections
from absl import flags

from experiments.dialog import train
from experiments.dialog.configs.variants import VARIANTS
from experiments.dialog.data import DialogData, load_data
from experiments.shared.cli import report, run_launcher
from experiments.shared.config import ConfigError, as_list
from experiments.shared.tables import summary_table
from metadial.io import atomic_write_text, read_json


def check_variants(names) -> list[str]:
    """The variant names as a list, or a ``ConfigError`` naming the unknown ones and the known ones."""
    names = as_list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ConfigError(f"--variants: {', '.join(unknown) or 'nothing'} not known; variants: {', '.join(VARIANTS)}")
    return names


def variant_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """``config`` with the changes of variant ``name`` (the given config is not changed)."""
    check_variants([name])
    out = copy.deepcopy(config)
    out.update(VARIANTS[name])  # ConfigDict refuses a value of the wrong type
    return out


def run(config: ml_collections.ConfigDict, workdir: str, names: list[str], reference: str | None = None) -> str:
    names = check_variants(names)
    variants = {name: variant_config(config, name) for name in names}
    for variant in variants.values():  # every variant's config is checked before any data is read
        train.validate_config(variant)
    rows = []
    if reference:
        rows += [
            dict(r, variant="default")
            for r in read_json(os.path.join(reference, "results.json"))
            if r["method"] in as_list(config.methods) and r["target_dialogs"] in as_list(config.target_dialogs)
        ]
    loaded: dict[tuple, DialogData] = {}  # the data, loaded once per (data_dir, max_dialogs)
    for name, variant in variants.items():
        data_key = (variant.data_dir, variant.max_dialogs)
        if data_key not in loaded:
            loaded[data_key] = load_data(variant)
        records = train.run(variant, os.path.join(workdir, name), loaded[data_key])
        rows += [dict(r, variant=name) for r in records]
    described = "; ".join(f"`{n}`: " + ", ".join(f"{k}={v}" for k, v in VARIANTS[n].items()) for n in names)
    text = (
        f"Variants of the dialog config ({config.train_steps} steps; {described}); `default` rows are "
        f"the main sweep's runs. Mean ± std over seeds.\n\n"
    )
    columns = [c for c in train.SUMMARY_COLUMNS if not c[0].endswith("dialog_accuracy")]  # per-dialog: 0 here
    text += summary_table(rows, ["variant", "method", "target_dialogs"], columns)
    by_kind = train.kind_accuracy_table(rows, ["variant", "method", "target_dialogs"])
    if by_kind:
        text += "\nTest per-response accuracy (%) by kind of target bot turn:\n\n" + by_kind
    path = os.path.join(workdir, "summary.md")
    atomic_write_text(path, text)
    report([path], text)
    return text


if __name__ == "__main__":
    flags.DEFINE_list("variants", None, f"Variants to run, from: {', '.join(VARIANTS)}.", required=True)
    flags.DEFINE_string("reference", "", "A workdir run with the base config, shown as the 'default' rows.")
    run_launcher(
        lambda config, workdir: run(config, workdir, flags.FLAGS.variants, flags.FLAGS.reference or None),
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "fixed_budget.py"),
        "one launcher workdir per variant, and summary.md",
    )
