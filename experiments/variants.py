r"""Runs the dialog launcher under several named config variants and tabulates them side by side.

    python -m experiments.variants --config=configs/dialog.py --workdir=DIR \
        --variants="no_target_in_inner:target_in_inner=False;raw_weights:normalize_weights=False" \
        [--reference=results/dialog] [--config.FIELD=VALUE ...]

Each variant ``NAME:FIELD=VALUE,FIELD=VALUE`` applies its overrides to ``--config`` and runs the launcher in
``DIR/NAME`` (an ordinary, resumable launcher workdir). ``DIR/summary.md`` holds one table of every
variant's records, plus the records of ``--reference`` (a workdir run with ``--config`` itself) under
the name ``default``.
"""

from __future__ import annotations

import os

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import dialog
from experiments.common import as_list, summary_table
from metadial.io import atomic_write_text, read_json

FLAGS = flags.FLAGS


def parse_value(text: str):
    """``True``/``False``, an int, a float, or else the text itself."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_variants(text: str) -> list[tuple[str, dict]]:
    """``"a:x=1,y=False;b:z=0.1"`` -> ``[("a", {"x": 1, "y": False}), ("b", {"z": 0.1})]``."""
    variants = []
    for item in filter(None, (v.strip() for v in text.split(";"))):
        name, sep, body = item.partition(":")
        if not sep or not name.strip() or name.strip() == "default":
            raise ValueError(f"--variants: expected NAME:FIELD=VALUE,... (NAME not 'default'), got {item!r}")
        overrides = {}
        for assignment in filter(None, (a.strip() for a in body.split(","))):
            field, eq, value = assignment.partition("=")
            if not eq:
                raise ValueError(f"--variants: expected FIELD=VALUE in {item!r}, got {assignment!r}")
            overrides[field.strip()] = parse_value(value.strip())
        variants.append((name.strip(), overrides))
    if not variants:
        raise ValueError("--variants: no variant given")
    return variants


def variant_config(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(config.to_dict())
    for field, value in overrides.items():
        if field not in out:
            raise ValueError(f"--variants: unknown config field {field!r}")
        out[field] = value  # ConfigDict refuses a value of the wrong type
    return out


def run(config: ml_collections.ConfigDict, workdir: str, variants: list[tuple[str, dict]],
        reference: str | None = None) -> str:
    rows = []
    if reference:
        rows += [dict(r, variant="default") for r in read_json(os.path.join(reference, "results.json"))
                 if r["method"] in as_list(config.methods) and r["target_dialogs"] in as_list(config.target_dialogs)]
    loaded = {}  # the data, loaded once per (data_dir, max_dialogs)
    for name, overrides in variants:
        variant = variant_config(config, overrides)
        data_key = (variant.data_dir, variant.max_dialogs)
        if data_key not in loaded:
            loaded[data_key] = dialog.load_data(variant)
        records = dialog.run(variant, os.path.join(workdir, name), loaded[data_key])
        rows += [dict(r, variant=name) for r in records]
    described = "; ".join(f"`{n}`: " + ", ".join(f"{k}={v}" for k, v in o.items()) for n, o in variants)
    text = (f"Variants of `configs/dialog.py` ({config.train_steps} steps; {described}); `default` rows are "
            f"the main sweep's runs. Mean ± std over seeds.\n\n")
    columns = [c for c in dialog.SUMMARY_COLUMNS if not c[0].endswith("dialog_accuracy")]  # per-dialog: 0 here
    text += summary_table(rows, ["variant", "method", "target_dialogs"], columns)
    by_kind = dialog.kind_accuracy_table(rows, ["variant", "method", "target_dialogs"])
    if by_kind:
        text += "\nTest per-response accuracy (%) by kind of target bot turn:\n\n" + by_kind
    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, "summary.md"), text)
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(FLAGS.config, FLAGS.workdir, parse_variants(FLAGS.variants), FLAGS.reference or None)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", "configs/dialog.py", "The base configuration.")
    flags.DEFINE_string("workdir", None, "Output folder (one launcher workdir per variant).", required=True)
    flags.DEFINE_string("variants", None, "NAME:FIELD=VALUE,...;NAME:... (see the module docstring).", required=True)
    flags.DEFINE_string("reference", "", "A workdir run with the base config, shown as the 'default' rows.")
    app.run(main)
