"""Markdown tables of run records: mean ± std over seeds."""

from __future__ import annotations

from collections.abc import Sequence

from metadial.metrics import mean_std

Column = tuple[str, str, float, int]  # (record key, header, scale, digits)


def format_mean_std(values: list, scale: float, digits: int) -> str:
    """``mean ± std`` of ``values * scale`` (the value alone for one value, "–" for none; ``None`` skipped)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:  # one seed: no spread to report
        return f"{values[0] * scale:.{digits}f}"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(records: list[dict], group_keys: Sequence[str], columns: Sequence[Column]) -> str:
    """A markdown table: one row per group (in first-seen order), ``mean ± std`` over its records (the
    value alone for a group of one record)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    header = list(group_keys) + ["seeds"] + [c[1] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, rows in groups.items():
        cells = [str(k) for k in key] + [str(len(rows))]
        cells += [format_mean_std([r.get(c[0]) for r in rows], c[2], c[3]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
