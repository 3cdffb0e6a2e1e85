r"""Merges the outputs of launcher runs that were split over several workdirs (e.g. one per target size).

    python -m tools.merge --experiment=dialog --workdirs=A,B --out=DIR [--config=FILE[:ARG]]

Concatenates ``results.json``, ``metrics.jsonl`` and, for the dialog experiment, the runs of
``related_weights.json``, and writes them with a ``summary.md`` made by the launcher's own table code to
``--out``. The config (default: the first workdir's ``config.json``) supplies the table's header (steps,
batch size).
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags

from experiments.dialog import train as dialog
from experiments.ideal import train as ideal
from experiments.shared.cli import USER_ERRORS, load_config_file
from experiments.shared.config import ConfigError, as_list
from experiments.shared.store import write_outputs
from metadial.data.babi_dialog import bot_turn_kind
from metadial.io import atomic_write_json, atomic_write_text, read_json

FLAGS = flags.FLAGS
DEFAULT_CONFIGS = {"ideal": ideal.DEFAULT_CONFIG, "dialog": dialog.DEFAULT_CONFIG}


def header_config(experiment: str, workdirs: list[str], path: str = "") -> ml_collections.ConfigDict:
    """The config the table header is made from: ``path`` if given (``FILE`` or ``FILE:ARG``), else the first
    workdir's ``config.json``, else the experiment's default config."""
    if path:
        file, _, arg = path.partition(":")
        return load_config_file(file, arg or None)
    for w in workdirs:
        saved = os.path.join(w, "config.json")
        if os.path.exists(saved):
            return ml_collections.ConfigDict(read_json(saved))
    return load_config_file(DEFAULT_CONFIGS[experiment])


def merge(experiment: str, config: ml_collections.ConfigDict, workdirs: list[str], out: str) -> None:
    """Writes the concatenated records (and metrics, weights) of ``workdirs`` and their summary to ``out``."""
    records = []
    for w in workdirs:
        path = os.path.join(w, "results.json")
        if not os.path.exists(path):
            raise ConfigError(f"--workdirs: {path} does not exist (not a launcher workdir with finished runs)")
        records += read_json(path)
    metrics = [os.path.join(w, "metrics.jsonl") for w in workdirs if os.path.exists(os.path.join(w, "metrics.jsonl"))]
    if metrics:
        text = ""
        for path in metrics:
            with open(path) as f:
                text += f.read()
        atomic_write_text(os.path.join(out, "metrics.jsonl"), text)
    if experiment == "ideal":
        write_outputs(out, records, ideal.summarize(records, config))
        return
    examples, runs = None, []
    for w in workdirs:
        path = os.path.join(w, "related_weights.json")
        if os.path.exists(path):
            weights = read_json(path)
            if examples is not None and weights["examples"] != examples:
                raise ValueError(f"{path}: related examples differ from those of the other workdirs")
            examples = weights["examples"]
            runs += weights["runs"]
    if examples is not None:  # kinds from the text, with the current patterns
        examples = [dict(e, kind=bot_turn_kind(e["bot"])) for e in examples]
    kinds = [e["kind"] for e in examples] if examples else []
    write_outputs(out, records, dialog.summarize(records, runs, kinds, config))
    if examples is not None:
        atomic_write_json(os.path.join(out, "related_weights.json"), {"examples": examples, "runs": runs})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        if FLAGS.experiment not in DEFAULT_CONFIGS:
            raise ConfigError(f"--experiment must be one of {', '.join(DEFAULT_CONFIGS)}, got {FLAGS.experiment!r}")
        workdirs = as_list(FLAGS.workdirs)
        merge(FLAGS.experiment, header_config(FLAGS.experiment, workdirs, FLAGS.config), workdirs, FLAGS.out)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.DEFINE_string("experiment", "dialog", "ideal or dialog.")
    flags.DEFINE_string(
        "config", "", "Config file (FILE or FILE:ARG) for the table header; default: the first workdir's config.json."
    )
    flags.DEFINE_string("workdirs", None, "Comma-separated launcher workdirs.", required=True)
    flags.DEFINE_string("out", None, "Output folder.", required=True)
    app.run(main)
