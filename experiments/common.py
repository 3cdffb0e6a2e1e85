"""Pieces shared by the launchers: optimizers from configs, config checks, results and summary tables."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import optax

from metadial.io import atomic_write_json, atomic_write_text
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


def _fmt(values: list, scale: float, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(records: list[dict], group_keys: Sequence[str], columns: Sequence[tuple[str, str, float, int]]) -> str:
    """A markdown table: one row per group (in first-seen order), ``mean ± std`` over its records.

    ``columns`` holds ``(record key, header, scale, digits)``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    header = list(group_keys) + ["seeds"] + [c[1] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, rows in groups.items():
        cells = [str(k) for k in key] + [str(len(rows))]
        cells += [_fmt([r[c[0]] for r in rows], c[2], c[3]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(workdir: str, records: list[dict], summary: str) -> None:
    """Writes ``results.json`` and ``summary.md`` atomically (a crash never leaves a truncated file)."""
    atomic_write_json(os.path.join(workdir, "results.json"), records)
    atomic_write_text(os.path.join(workdir, "summary.md"), summary)
