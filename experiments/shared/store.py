"""A launcher's workdir: finished records, per-run checkpoints, metrics, and the config they were made with.

Back-compatibility with workdirs written by older versions lives here and only here (``_ADDED_FIELDS``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import ml_collections
from absl import logging

from experiments.shared.config import ConfigError
from metadial.checkpoint import Checkpointer
from metadial.io import atomic_write_json, atomic_write_text, read_json
from metadial.loop import MetricsLog, NonFiniteError

# Fields that choose which runs to make, or only how they are logged and checkpointed: a workdir may be
# re-run with other values of these (e.g. more seeds or methods), the finished runs are kept.
RUN_SELECTION_FIELDS = (
    "methods",
    "num_seeds",
    "seed",
    "target_dialogs",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "tensorboard",
)

# Config fields added after runs were made, with the value that reproduces what those runs did: a saved
# config without the field matches a config that has it at this value.
_ADDED_FIELDS = {
    "separate_target_step": False,
    "outer_batch": "fresh",
    "fresh_inner_batches": False,
    "pretrain_fraction": 0.5,
    "target_set": "small",
    "max_epochs": 200,
    "eval_epochs": 10,
    "patience": 0,
    "estimator": "lookahead",
    "implicit_learning_rate": 0.005,
    "implicit_damping": 0.01,
    "implicit_mirror_negative": False,
    "implicit_gauss_newton": False,
    "trajectory_steps": 100,
    "related_sampling": "uniform",
    "sampling_uniform_share": 0.1,
    "sampling_every": 100,
    "meta_holdout": 0.0,
    "meta_holdout_rotation": 0,
    "meta_holdout_refit": False,
    "mwnet_hidden": [100],
    "mwnet_meta_learning_rate": 1e-3,
    "related_sources": "babi",
    "related_profile_dialogs": 1000,
    "meta_max_nonfinite": 0,
}


class RunStore:
    """A launcher's workdir: finished records (``results.json``), per-run checkpoints, metrics and events.

    Re-running the same command with the same workdir skips the finished runs and resumes the unfinished
    one from its last checkpoint. The config is saved as ``config.json``; a workdir whose runs (records or
    checkpoints) were made with a config that differs in anything but ``RUN_SELECTION_FIELDS`` is refused, so
    results of two configs never mix.
    Without a workdir nothing is written.
    """

    def __init__(self, workdir: str | None, config: ml_collections.ConfigDict):
        self.workdir, self.keep = workdir, config.keep_checkpoints
        self.records: list[dict] = []
        if not workdir:
            return
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, "config.json")
        current = config.to_json(sort_keys=True, indent=1)
        if os.path.exists(config_path) and self.holds_runs():
            saved = read_json(config_path)
            now = json.loads(current)
            changed = sorted(
                k
                for k in (set(saved) | set(now)) - set(RUN_SELECTION_FIELDS)
                if saved.get(k, _ADDED_FIELDS.get(k)) != now.get(k)
            )
            if changed:
                raise ConfigError(
                    f"{config_path}: the workdir holds runs of a different config (fields {changed} "
                    f"differ); use a new --workdir (or delete this one) to start over"
                )
        atomic_write_text(config_path, current + "\n")
        results_path = os.path.join(workdir, "results.json")
        if os.path.exists(results_path):
            self.records = read_json(results_path)

    def holds_runs(self) -> bool:
        """Whether the workdir holds finished records or checkpoints (a config without either is replaced)."""
        assert self.workdir
        checkpoints = os.path.join(self.workdir, "checkpoints")
        has_checkpoints = os.path.isdir(checkpoints) and any(os.scandir(checkpoints))
        return os.path.exists(os.path.join(self.workdir, "results.json")) or has_checkpoints

    def path(self, name: str) -> str | None:
        """``workdir/name`` (``None`` without a workdir)."""
        return os.path.join(self.workdir, name) if self.workdir else None

    def done(self, **key) -> dict | None:
        """The finished record matching ``key`` (e.g. method and seed), if any."""
        for r in self.records:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def finished_weight_runs(self, key_fields: Sequence[str]) -> list[dict]:
        """The runs of ``related_weights.json`` whose record is final (a run killed between writing its
        weights and its record is redone, so its weights entry is dropped)."""
        path = self.path("related_weights.json")
        if not path or not os.path.exists(path):
            return []
        saved = read_json(path)
        if not isinstance(saved, dict) or not isinstance(saved.get("runs"), list):
            raise ValueError(f"{path}: expected a JSON object with a 'runs' list")
        return [r for r in saved["runs"] if self.done(**{k: r[k] for k in key_fields})]

    def checkpoint_dir(self, run_name: str) -> str | None:
        """Where the checkpoints of ``run_name`` live (``None`` without a workdir)."""
        return os.path.join(self.workdir, "checkpoints", run_name) if self.workdir else None

    def checkpointer(self, run_name: str) -> Checkpointer | None:
        """The run's checkpointer (creates its folder); ``None`` without a workdir."""
        directory = self.checkpoint_dir(run_name)
        return Checkpointer(directory, keep=self.keep) if directory else None

    def metrics_log(self, run_name: str, tags: dict, tensorboard: bool = True) -> MetricsLog | None:
        """The run's metrics log (``metrics.jsonl`` lines tagged with ``tags``, TensorBoard events under
        ``tensorboard/<run>``); ``None`` without a workdir."""
        if not self.workdir:
            return None
        tb_dir = os.path.join(self.workdir, "tensorboard", run_name) if tensorboard else None
        return MetricsLog(os.path.join(self.workdir, "metrics.jsonl"), tb_dir, tags)

    def save(self, summary: str, weights: dict | None = None) -> list[str]:
        """Writes ``related_weights.json`` (if given) then ``results.json`` (which marks runs as done) and
        ``summary.md``, each atomically (a crash never leaves a truncated file); returns the paths written."""
        if not self.workdir:
            return []
        written = []
        if weights is not None:
            written.append(os.path.join(self.workdir, "related_weights.json"))
            atomic_write_json(written[-1], weights)
        written += [os.path.join(self.workdir, "results.json"), os.path.join(self.workdir, "summary.md")]
        atomic_write_json(written[-2], self.records)
        atomic_write_text(written[-1], summary)
        return written


def write_outputs(workdir: str, records: list[dict], summary: str) -> None:
    """Writes ``results.json`` and ``summary.md`` atomically (tools that rebuild a workdir's outputs)."""
    atomic_write_json(os.path.join(workdir, "results.json"), records)
    atomic_write_text(os.path.join(workdir, "summary.md"), summary)


DIVERGED = "diverged.json"  # in a comparison's cell whose run hit non-finite values: its step and the message


def run_cell(run: Callable[[ml_collections.ConfigDict, str], object], config: ml_collections.ConfigDict, cell: str):
    """Runs one cell (launcher workdir) of a comparison with ``run(config, cell)``. A run that hits non-finite
    values is recorded in ``cell/DIVERGED`` instead of stopping the comparison, and is not run again."""
    if diverged_step(cell) is not None:
        logging.info("%s: diverged before (%s); not run again", cell, DIVERGED)
        return
    try:
        run(config, cell)
    except NonFiniteError as e:
        logging.warning("%s: %s", cell, e)
        atomic_write_json(os.path.join(cell, DIVERGED), {"step": e.step, "message": str(e)})


def diverged_step(cell: str) -> int | None:
    """The step at which the cell's run hit non-finite values (``run_cell``), or None."""
    path = os.path.join(cell, DIVERGED)
    return int(read_json(path)["step"]) if os.path.exists(path) else None


def diverged_cells(folder: str, names: Iterable[str]) -> list[tuple[str, int]]:
    """``(name, step)`` of the cells ``folder/<name>`` whose run hit non-finite values (``run_cell``)."""
    steps = [(name, diverged_step(os.path.join(folder, name))) for name in names]
    return [(name, step) for name, step in steps if step is not None]
