r"""Copies a launcher's ``summary.md`` into the README between markers, so the README's tables are never typed.

    python -m tools.publish --summary=results/ideal/summary.md --name=ideal [--readme=README.md] [--first_table]

The README must hold ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->``; the text between
them is replaced by the summary file's content (with ``--first_table``: its text up to the end of its first
table, a headline).
"""

from __future__ import annotations

from absl import app, flags

from metadial.io import atomic_write_text

FLAGS = flags.FLAGS


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"


def published_block(readme_text: str, name: str) -> str:
    """The text between the README's markers for ``name``."""
    start, end = markers(name)
    if start not in readme_text or end not in readme_text:
        raise ValueError(f"README has no '{start}' ... '{end}' block")
    return readme_text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def headline(text: str) -> str:
    """``text`` up to the end of its first markdown table."""
    lines, seen_table = [], False
    for line in text.splitlines():
        if seen_table and not line.startswith("|"):
            break
        seen_table = seen_table or line.startswith("|")
        lines.append(line)
    return "\n".join(lines)


def publish(readme_path: str, summary_path: str, name: str, first_table: bool = False) -> None:
    """Replaces the README's block ``name`` with the summary (or its headline: ``first_table``)."""
    with open(readme_path) as f:
        text = f.read()
    with open(summary_path) as f:
        summary = f.read().strip("\n")
    if first_table:
        summary = headline(summary)
    start, end = markers(name)
    try:
        old = published_block(text, name)
    except ValueError as e:
        raise ValueError(f"{readme_path}: {e}") from None
    atomic_write_text(
        readme_path,
        text.replace(f"{start}\n{old}\n{end}" if old else f"{start}\n{end}", f"{start}\n{summary}\n{end}", 1),
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    publish(FLAGS.readme, FLAGS.summary, FLAGS.name, first_table=FLAGS.first_table)


if __name__ == "__main__":
    flags.DEFINE_string("readme", "README.md", "README to update.")
    flags.DEFINE_string("summary", None, "summary.md written by a launcher.", required=True)
    flags.DEFINE_string("name", None, "Block name in the README markers.", required=True)
    flags.DEFINE_bool("first_table", False, "Publish the summary only up to the end of its first table.")
    app.run(main)
