"""Reader for the bAbI dialog format (Bordes et al., 2017) and its personalized variant (Joshi et al., 2017).

A file holds dialogs separated by blank lines. Each line is ``<id> <text>``; ids start at 1 in every dialog
and increase by one. A line with a tab is a turn ``user<TAB>bot``; a line without a tab is a knowledge-base
result (``resto_x R_attribute value``), except line 1 of a personalized dialog, which is the user profile
(``gender age diet favourite-dish``). ``<SILENCE>`` stands for a missing user utterance. Files may be plain
text or gzip; ``foo.txt`` is also found as ``foo.txt.gz``.

Every bot turn becomes one example: memory = the dialog before the turn (profile, earlier user and bot
utterances and knowledge-base lines, each tagged with a speaker token and a time token), query = the turn's
user utterance, answer = the index of the bot utterance in the task's candidate set.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO

PAD = "<pad>"
SPEAKER_TOKENS = {"profile": "$p", "user": "$u", "bot": "$r", "kb": "$k"}
_LINE = re.compile(r"^(\d+) (.*)$")


class DialogFormatError(ValueError):
    """Malformed dialog or candidate file; the message names the file and line."""


def resolve(path: str) -> str:
    """``path`` if it exists, else ``path + '.gz'``; raises FileNotFoundError naming both."""
    if os.path.exists(path):
        return path
    if os.path.exists(path + ".gz"):
        return path + ".gz"
    raise FileNotFoundError(f"no such file: {path} (nor {path}.gz)")


def open_text(path: str) -> IO[str]:
    """Opens a plain or gzip text file (detected by its magic bytes) for reading as UTF-8."""
    path = resolve(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")


def numbered_lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, line without its newline)`` of a plain or gzip text file; a truncated or corrupt gzip
    file or text that is not UTF-8 raises ``DialogFormatError`` naming the file."""
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw.rstrip("\n").rstrip("\r")
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as e:
        raise DialogFormatError(
            f"{path}: unreadable after line {lineno} ({type(e).__name__}: {e}); is the file truncated or corrupt?"
        ) from None


def tokenize(text: str) -> list[str]:
    return text.lower().split()


def normalize(text: str) -> str:
    return " ".join(tokenize(text))


def read_candidates(path: str) -> list[str]:
    """Candidate utterances, one ``<id> <utterance>`` per line, in file order (normalised, deduplicated)."""
    seen: dict[str, None] = {}
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m or not m.group(2).strip():
            raise DialogFormatError(f"{path}:{lineno}: expected '<id> <utterance>', got {line!r}")
        seen.setdefault(normalize(m.group(2)), None)
    if not seen:
        raise DialogFormatError(f"{path}: no candidates")
    return list(seen)


@dataclasses.dataclass
class Turn:
    user: str
    bot: str
    memory_len: int  # number of memory sentences before this turn
    line: int  # line number in the file (for error messages)


@dataclasses.dataclass
class Dialog:
    """One dialog: its memory sentences (speaker, text) in order, and its bot turns."""

    sentences: list[tuple[str, str]]
    turns: list[Turn]
    profile: str | None
    line: int  # first line in the file


def _dialog_blocks(path: str) -> Iterator[list[tuple[int, str]]]:
    block: list[tuple[int, str]] = []
    for lineno, line in numbered_lines(path):
        if line.strip():
            block.append((lineno, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


def read_dialogs(path: str, has_profile: bool, limit: int | None = None) -> list[Dialog]:
    """Parses a dialog file; ``has_profile`` says whether line 1 of each dialog is a user profile. With ``limit``,
    only the file's first ``limit`` dialogs are read (and checked): the rest of the file is not parsed."""
    if limit is not None and limit < 1:
        raise ValueError(f"read_dialogs: limit must be a positive number of dialogs or None, got {limit}")
    dialogs: list[Dialog] = []
    for block in itertools.islice(_dialog_blocks(path), limit):
        sentences: list[tuple[str, str]] = []
        turns: list[Turn] = []
        profile = None
        for expected_id, (lineno, line) in enumerate(block, 1):
            m = _LINE.match(line)
            if not m:
                raise DialogFormatError(f"{path}:{lineno}: expected '<id> <text>', got {line!r}")
            if int(m.group(1)) != expected_id:
                raise DialogFormatError(
                    f"{path}:{lineno}: expected line id {expected_id} (ids restart at 1 after a blank line), "
                    f"got {m.group(1)}"
                )
            text = m.group(2)
            if expected_id == 1 and has_profile:
                if "\t" in text or len(text.split()) < 2:
                    raise DialogFormatError(
                        f"{path}:{lineno}: expected a user profile line '1 <gender> <age> ...', got {line!r}"
                    )
                profile = normalize(text)
                sentences.append(("profile", profile))
            elif "\t" in text:
                user, bot = text.split("\t", 1)
                if not user.strip() or not bot.strip():
                    raise DialogFormatError(
                        f"{path}:{lineno}: expected '<id> user utterance<TAB>bot utterance', got {line!r}"
                    )
                turns.append(Turn(normalize(user), normalize(bot), len(sentences), lineno))
                sentences += [("user", normalize(user)), ("bot", normalize(bot))]
            elif expected_id == 1:
                raise DialogFormatError(
                    f"{path}:{lineno}: expected a turn '1 user<TAB>bot' to open the dialog, got {line!r}"
                )
            else:
                sentences.append(("kb", normalize(text)))
        if not turns:
            raise DialogFormatError(f"{path}:{block[0][0]}: dialog has no 'user<TAB>bot' turn")
        dialogs.append(Dialog(sentences, turns, profile, block[0][0]))
    if not dialogs:
        raise DialogFormatError(f"{path}: no dialogs")
    return dialogs


def answer_indices(dialogs: list[Dialog], candidates: list[str], path: str, candidates_path: str) -> list[list[int]]:
    """The candidate index of every bot turn; a bot utterance missing from the candidates is an error."""
    index = {c: i for i, c in enumerate(candidates)}
    out = []
    for d in dialogs:
        row = []
        for t in d.turns:
            if t.bot not in index:
                raise DialogFormatError(
                    f"{path}:{t.line}: bot utterance {t.bot!r} is not in the candidate set {candidates_path}"
                )
            row.append(index[t.bot])
        out.append(row)
    return out


# Checked in order; the patterns cover the bAbI templates and the personalized (per-profile) rewordings.
_KINDS = [
    ("api_call", re.compile(r"^api_call\b")),
    ("extra_information", re.compile(r"_(phone|address|social_media|parking|public_transport)\b")),
    ("options", re.compile(r"resto_")),
    ("update", re.compile(r"\b(update|modify|change)$")),
    ("next_option", re.compile(r"\b(find|finding|look for|looking for) (an other|another|a better|something else)")),
    ("greeting", re.compile(r"\b(hello|hi|good morning|good day|greetings|hey)\b")),
    ("ask_slot", re.compile(r"cuisine|food|price|where should it be|located|how many|party|guests")),
    ("acknowledge", re.compile(r"i'm on|on your request|options|processing|finalise|start the request")),
    ("book", re.compile(r"reservation|done$")),
    (
        "closing",
        re.compile(
            r"welcome|happy to help|no problem|pleasure|grateful|help you|assist you|"
            r"something else|anything else"
        ),
    ),
]


def bot_turn_kind(text: str) -> str:
    """A coarse kind of bot utterance (greeting, api_call, options, extra_information, ...) for analysis."""
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return "other"
