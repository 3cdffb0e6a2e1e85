r"""Packs the unfinished runs under a folder into one archive, to resume them on another machine.

    python -m tools.pack_runs --pack=runs.tar [--under=results]
    python -m tools.pack_runs --unpack=runs.tar

A launcher resumes a run from ``<workdir>/checkpoints/<run>/`` (the latest complete orbax step and
``info.json``, which carries the run's wall-clock so far) and skips the runs its ``results.json`` already
holds. ``--pack`` writes, for every run under ``--under`` that has a checkpoint and no record yet, only that
latest step and its ``info.json``, paths relative to the current folder: what a long sweep needs to go on
after its machine is gone (``metrics.jsonl``, ``config.json`` and ``results.json`` are small files to keep
with the workdir; TensorBoard event files are not carried). ``--unpack`` puts them back; run the launcher's
command again to resume. Checkpoints hold float32 arrays, so the archive is not compressed.
"""

from __future__ import annotations

import os
import sys
import tarfile

from absl import app, flags

from experiments.dialog.train import run_name as dialog_run_name
from experiments.ideal.train import run_name as ideal_run_name
from experiments.shared.config import ConfigError
from experiments.shared.program import refit_name
from metadial.checkpoint import Checkpointer
from metadial.io import read_json
from tools.continue_runs import launcher_workdirs

FLAGS = flags.FLAGS


def finished_runs(workdir: str) -> set[str]:
    """The run names (checkpoint folders) of the runs whose records ``workdir/results.json`` holds, with their
    final fits' (``refit_name``)."""
    path = os.path.join(workdir, "results.json")
    names: set[str] = set()
    for r in read_json(path) if os.path.exists(path) else []:
        for method in (r["method"], refit_name(r["method"])):
            if "target_dialogs" in r:
                names.add(dialog_run_name(method, r["target_dialogs"], r["seed"]))
            else:
                names.add(ideal_run_name(method, r["seed"]))
    return names


def unfinished_checkpoints(under: str) -> list[str]:
    """The files to carry: for every ``<workdir>/checkpoints/<run>`` under ``under`` whose run is not finished
    and that has a complete checkpoint, its latest step's folder and its ``info.json`` (if any)."""
    paths = []
    for workdir in (os.path.normpath(os.path.join(under, w)) for w in launcher_workdirs(under, finished_runs=False)):
        checkpoints = os.path.join(workdir, "checkpoints")
        done = finished_runs(workdir)
        for run in sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else []:
            if run in done:
                continue
            checkpointer = Checkpointer(os.path.join(checkpoints, run))
            step = checkpointer.latest_step()
            checkpointer.close()
            if step is None:
                continue
            paths.append(os.path.join(checkpoints, run, str(step)))
            info = os.path.join(checkpoints, run, "info.json")
            if os.path.exists(info):
                paths.append(info)
    return paths


def pack(archive: str, under: str) -> list[str]:
    """Writes the unfinished runs' latest checkpoints under ``under`` to ``archive`` (atomically: a crash leaves
    the previous archive) and returns what it holds."""
    if not os.path.isdir(under):
        raise ConfigError(f"--under: {under} is not a folder")
    paths = unfinished_checkpoints(under)
    tmp = archive + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        for p in paths:
            tar.add(p, arcname=os.path.relpath(p))
    os.replace(tmp, archive)
    return paths


def unpack(archive: str) -> list[str]:
    """Extracts ``archive`` (made by ``pack``) into the current folder and returns the checkpoint steps it
    restored; refuses members that would land outside the current folder."""
    if not os.path.exists(archive):
        raise ConfigError(f"--unpack: {archive} does not exist")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        outside = [n for n in names if os.path.isabs(n) or os.path.normpath(n).startswith("..")]
        if outside:
            raise ConfigError(f"--unpack: {archive} holds paths outside the current folder: {outside[:3]}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: also refuses links and special files
            tar.extractall(".", filter="data")
        else:
            tar.extractall(".")
    return sorted(n for n in names if _is_step(n))


def _is_step(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 3 and parts[-3] == "checkpoints" and parts[-1].isdigit()


def main(argv: list[str]) -> None:
    del argv
    try:
        if bool(FLAGS.pack) == bool(FLAGS.unpack):
            raise ConfigError("give exactly one of --pack=FILE and --unpack=FILE")
        if FLAGS.pack:
            steps = [p for p in pack(FLAGS.pack, FLAGS.under) if _is_step(p)]
            print(f"{FLAGS.pack}: {len(steps)} unfinished runs, {os.path.getsize(FLAGS.pack) / 1e6:.1f} MB")
        else:
            steps = unpack(FLAGS.unpack)
            print(f"{FLAGS.unpack}: restored {len(steps)} unfinished runs")
        for step in steps:
            print(f"  {step}")
    except ConfigError as e:
        sys.exit(f"pack_runs: {e}")


if __name__ == "__main__":
    flags.DEFINE_string("pack", "", "Write the unfinished runs' latest checkpoints to this archive.")
    flags.DEFINE_string("unpack", "", "Extract an archive written by --pack into the current folder.")
    flags.DEFINE_string("under", "results", "Folder searched for launcher workdirs (with --pack).")
    app.run(main)
