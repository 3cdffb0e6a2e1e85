r"""Merges the outputs of launcher runs that were split over several workdirs (e.g. one per target size).

    python -m tools.merge --experiment=dialog --workdirs=A,B --out=DIR [--config=CONFIG]

Concatenates ``results.json``, ``metrics.jsonl`` and, for the dialog experiment, the runs of
``related_weights.json``, and writes them with a ``summary.md`` made by the launcher's own table code to
``--out``. The config (default: the experiment's default config) supplies the table's header (steps, batch
size).
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments.dialog import train as dialog
from experiments.ideal import train as ideal
from experiments.shared.cli import load_config_file
from experiments.shared.config import as_list
from experiments.shared.store import write_outputs
from metadial.data.babi_dialog import bot_turn_kind
from metadial.io import atomic_write_json, atomic_write_text, read_json

FLAGS = flags.FLAGS


def merge(experiment: str, config, workdirs: list[str], out: str) -> None:
    records = []
    for w in workdirs:
        records += read_json(os.path.join(w, "results.json"))
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
    if FLAGS.experiment not in ("ideal", "dialog"):
        raise app.UsageError(f"--experiment must be ideal or dialog, got {FLAGS.experiment!r}")
    default = os.path.join("experiments", FLAGS.experiment, "configs", "default.py")
    merge(FLAGS.experiment, load_config_file(FLAGS.config or default), as_list(FLAGS.workdirs), FLAGS.out)


if __name__ == "__main__":
    flags.DEFINE_string("experiment", "dialog", "ideal or dialog.")
    flags.DEFINE_string("config", "", "The config file the runs used (for the header); default: the experiment's.")
    flags.DEFINE_string("workdirs", None, "Comma-separated launcher workdirs.", required=True)
    flags.DEFINE_string("out", None, "Output folder.", required=True)
    app.run(main)
