"""Pieces shared by the launchers: optimizers from configs, config checks, results and summary tables."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Sequence

import optax

from metadial.checkpoint import Checkpointer
from metadial.io import atomic_write_json, atomic_write_text, read_json
from metadial.loop import MetricsLog
from metadial.steps import LearningToReweight, MetaReweighting, PlainTrainer
from metadial.weighting import TableWeighting, Weighting
from metadial.metrics import mean_std


def model_optimizer(learning_rate: float, eps_root: float, grad_clip: float) -> optax.GradientTransformation:
    """Adam (with ``eps_root`` for finite meta-gradients), after optional global-norm clipping."""
    adam = optax.adam(learning_rate, eps_root=eps_root)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip > 0 else adam


def as_list(value) -> list:
    """A config list given as a sequence or as a comma-separated string (``--config.methods=a,b``)."""
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    out = []
    for item in items:
        out += [v.strip() for v in item.split(",") if v.strip()] if isinstance(item, str) else [item]
    return out


def check_methods(methods: Sequence[str] | str, allowed: Sequence[str]) -> list[str]:
    """Returns the methods as a list, or raises naming the unknown ones and what is allowed."""
    methods = as_list(methods)
    unknown = [m for m in methods if m not in allowed]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or '(none given)'}; allowed: {', '.join(allowed)}")
    return methods


def check_positive(config, names: Iterable[str]) -> None:
    for name in names:
        value = config[name]
        if value <= 0:
            raise ValueError(f"config.{name} must be positive, got {value}")


def format_mean_std(values: list, scale: float, digits: int) -> str:
    """``mean ± std`` of ``values * scale`` (the value alone for one value, "–" for none; ``None`` skipped)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:  # one seed: no spread to report
        return f"{values[0] * scale:.{digits}f}"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(records: list[dict], group_keys: Sequence[str], columns: Sequence[tuple[str, str, float, int]]) -> str:
    """A markdown table: one row per group (in first-seen order), ``mean ± std`` over its records (the
    value alone for a group of one record).

    ``columns`` holds ``(record key, header, scale, digits)``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    header = list(group_keys) + ["seeds"] + [c[1] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, rows in groups.items():
        cells = [str(k) for k in key] + [str(len(rows))]
        cells += [format_mean_std([r[c[0]] for r in rows], c[2], c[3]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(workdir: str, records: list[dict], summary: str) -> None:
    """Writes ``results.json`` and ``summary.md`` atomically (a crash never leaves a truncated file)."""
    atomic_write_json(os.path.join(workdir, "results.json"), records)
    atomic_write_text(os.path.join(workdir, "summary.md"), summary)


# Fields that choose which runs to make, or only how they are logged and checkpointed: a workdir may be
# re-run with other values of these (e.g. more seeds or methods), the finished runs are kept.
RUN_SELECTION_FIELDS = ("methods", "num_seeds", "seed", "target_dialogs", "log_every", "checkpoint_every",
                        "keep_checkpoints", "tensorboard")

# Config fields added after runs were made, with the value that reproduces what those runs did: a saved
# config without the field matches a config that has it at this value.
ADDED_FIELDS = {"separate_target_step": False, "outer_batch": "fresh", "fresh_inner_batches": False}


def added_field(config, name: str):
    """``config.<name>`` of a field of ``ADDED_FIELDS``; a config saved before the field existed gets the value
    that reproduces its runs."""
    return config.get(name, ADDED_FIELDS[name])


class RunStore:
    """A launcher's workdir: finished records (``results.json``), per-run checkpoints, metrics and events.

    Re-running the same command with the same workdir skips the finished runs and resumes the unfinished
    one from its last checkpoint. The config is saved as ``config.json``; a workdir started with a config
    that differs in anything but ``RUN_SELECTION_FIELDS`` is refused, so results of two configs never mix
    (a field of ``ADDED_FIELDS`` missing from the saved config counts as its listed value).
    Without a workdir nothing is written.
    """

    def __init__(self, workdir: str | None, config, keep_checkpoints: int = 2):
        self.workdir, self.keep = workdir, keep_checkpoints
        self.records: list[dict] = []
        if not workdir:
            return
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, "config.json")
        current = config.to_json(sort_keys=True, indent=1)
        if os.path.exists(config_path):
            saved = read_json(config_path)
            now = json.loads(current)
            changed = sorted(k for k in (set(saved) | set(now)) - set(RUN_SELECTION_FIELDS)
                             if saved.get(k, ADDED_FIELDS.get(k)) != now.get(k))
            if changed:
                raise ValueError(f"{config_path}: the workdir holds runs of a different config (fields {changed} "
                                 f"differ); use a new --workdir (or delete this one) to start over")
        atomic_write_text(config_path, current + "\n")
        results_path = os.path.join(workdir, "results.json")
        if os.path.exists(results_path):
            self.records = read_json(results_path)

    def done(self, **key) -> dict | None:
        """The finished record matching ``key`` (e.g. method and seed), if any."""
        for r in self.records:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def finished_weight_runs(self, path: str | None, key_fields: Sequence[str]) -> list[dict]:
        """The runs of a ``related_weights.json`` whose record is final (a run killed between writing its
        weights and its record is redone, so its weights entry is dropped)."""
        if not path or not os.path.exists(path):
            return []
        saved = read_json(path)
        if not isinstance(saved, dict) or not isinstance(saved.get("runs"), list):
            raise ValueError(f"{path}: expected a JSON object with a 'runs' list")
        runs = saved["runs"]
        return [r for r in runs if self.done(**{k: r[k] for k in key_fields})]

    def checkpoint_dir(self, run_name: str) -> str | None:
        """Where the checkpoints of ``run_name`` live (``None`` without a workdir)."""
        return os.path.join(self.workdir, "checkpoints", run_name) if self.workdir else None

    def checkpointer(self, run_name: str) -> Checkpointer | None:
        """The run's checkpointer (creates its folder); ``None`` without a workdir."""
        if not self.workdir:
            return None
        return Checkpointer(self.checkpoint_dir(run_name), keep=self.keep)

    def metrics_log(self, run_name: str, tags: dict, tensorboard: bool = True) -> MetricsLog | None:
        if not self.workdir:
            return None
        tb_dir = os.path.join(self.workdir, "tensorboard", run_name) if tensorboard else None
        return MetricsLog(os.path.join(self.workdir, "metrics.jsonl"), tb_dir, tags)


def run_launcher(run_fn, default_config: str, outputs: str) -> None:
    """The command line shared by the experiment launchers: ``--config``, ``--workdir``, ``--distributed``;
    calls ``run_fn(config, workdir)``."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", default_config, "Experiment configuration file.")
    flags.DEFINE_string("workdir", None, f"Output folder ({outputs}); re-running with it resumes.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host runs).")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not flags.FLAGS.workdir:
            raise app.UsageError("--workdir is required")
        if flags.FLAGS.distributed:
            import jax

            jax.distributed.initialize()  # multi-host GPU/TPU: coordinator and process ids from the cluster env
        run_fn(flags.FLAGS.config, flags.FLAGS.workdir)

    app.run(main)


def make_trainer(method: str, loss_fn, config, num_related: int, weight_net: Callable[[], Weighting],
                 remat: bool = False) -> tuple[Any, Weighting | None]:
    """The training step object of ``method`` (and its weighting scheme, for the meta methods) from the
    config's optimizer and weighting settings, shared by the launchers."""
    optimizer = model_optimizer(config.learning_rate, config.eps_root, config.grad_clip)
    if method == "l2rw":
        return LearningToReweight(loss_fn, optimizer), None
    if method not in ("meta_table", "meta_net"):
        return PlainTrainer(loss_fn, optimizer), None
    if method == "meta_table":
        weighting, meta_opt = TableWeighting(num_related), optax.adam(config.table_meta_learning_rate)
    else:
        weighting, meta_opt = weight_net(), optax.adam(config.meta_learning_rate)
    trainer = MetaReweighting(loss_fn, weighting, optimizer, meta_opt, inner_steps=config.inner_steps,
                              target_in_inner=config.target_in_inner, normalize=config.normalize_weights, remat=remat,
                              separate_target_step=added_field(config, "separate_target_step"),
                              fresh_inner_batches=added_field(config, "fresh_inner_batches"))
    return trainer, weighting
