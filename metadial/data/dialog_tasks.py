"""The dialog experiment's data: personalized bAbI task 5 (target) and bAbI dialog task 5 (related).

``load_corpus`` parses every file once and builds one vocabulary over both tasks and both candidate sets;
``encode`` turns a list of dialogs into fixed-shape integer arrays; ``target_subset`` draws the nested
training subsets. Memory sentences carry a speaker token (``$p`` profile, ``$u`` user, ``$r`` bot, ``$k``
knowledge base) and a time token (``#i``: the sentence's position in the dialog, from 1), as in
Bordes et al. (2017).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from metadial.data.babi_dialog import (
    PAD,
    SPEAKER_TOKENS,
    Dialog,
    answer_indices,
    bot_turn_kind,
    read_candidates,
    read_dialogs,
    resolve,
    tokenize,
)

PACKAGED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
TARGET_SPLITS = ("trn", "dev", "tst", "tst-OOV")
PROFILES = ("female_elderly", "female_middle-aged", "female_young", "male_elderly", "male_middle-aged", "male_young")
TARGET_SETS = ("small", *PROFILES)
RELATED_SOURCES = ("babi", "babi+profiles")  # related data: bAbI task 5, or with the other profiles' dialogs too


def data_paths(data_dir: str = "", target_set: str = "small", related_sources: str = "babi") -> dict[str, str]:
    """The files of both tasks under ``data_dir`` (default: the copies shipped in the package). The target
    task's dialogs come from ``target_set``: ``small`` (mixed profiles, the published candidate set of all
    profiles) or a profile of ``split-by-profile`` (that profile's dialogs and its published candidate set).
    With ``related_sources="babi+profiles"`` (a profile target only) the related data also takes the other five
    profiles' training dialogs and candidate sets (keys ``related_profile_trn:<profile>`` and
    ``related_profile_candidates:<profile>``)."""
    if target_set not in TARGET_SETS:
        raise ValueError(f"target_set must be one of {', '.join(TARGET_SETS)}, got {target_set!r}")
    if related_sources not in RELATED_SOURCES:
        raise ValueError(f"related_sources must be one of {', '.join(RELATED_SOURCES)}, got {related_sources!r}")
    if related_sources == "babi+profiles" and target_set == "small":
        raise ValueError(
            "related_sources='babi+profiles' adds the dialogs of the profiles other than the target's, so "
            "target_set must be a profile, not 'small'"
        )
    root = data_dir or PACKAGED_DATA
    personal = os.path.join(root, "personalized-dialog")
    babi = os.path.join(root, "dialog-bAbI-tasks")
    folder = os.path.join(personal, "small" if target_set == "small" else os.path.join("split-by-profile", target_set))
    paths = {
        f"target_{s}": os.path.join(folder, f"personalized-dialog-task5-full-dialogs-{s}.txt") for s in TARGET_SPLITS
    }
    paths["target_candidates"] = os.path.join(
        folder if target_set != "small" else personal, "personalized-dialog-candidates.txt"
    )
    paths["related_trn"] = os.path.join(babi, "dialog-babi-task5-full-dialogs-trn.txt")
    paths["related_candidates"] = os.path.join(babi, "dialog-babi-candidates.txt")
    if related_sources == "babi+profiles":
        for profile in other_profiles(target_set):
            folder = os.path.join(personal, "split-by-profile", profile)
            paths[f"related_profile_trn:{profile}"] = os.path.join(
                folder, "personalized-dialog-task5-full-dialogs-trn.txt"
            )
            paths[f"related_profile_candidates:{profile}"] = os.path.join(folder, "personalized-dialog-candidates.txt")
    return paths


def other_profiles(target_set: str) -> list[str]:
    """The profiles other than ``target_set``, in ``PROFILES`` order."""
    return [p for p in PROFILES if p != target_set]


@dataclasses.dataclass
class Vocabulary:
    words: list[str]

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str], length: int) -> np.ndarray:
        ids = [self.index[t] for t in tokens]
        if len(ids) > length:
            raise ValueError(f"sentence of {len(ids)} tokens exceeds the sentence length {length}: {tokens}")
        return np.asarray(ids + [0] * (length - len(ids)), np.int32)


@dataclasses.dataclass
class EncodedSplit:
    """Fixed-shape arrays of one split; example i's memory is ``store[dialog[i], :memory_len[i]]``."""

    store: np.ndarray  # (num_dialogs, max_sentences, sentence_len) memory sentences with speaker/time tokens
    dialog: np.ndarray  # (N,) row of ``store``
    memory_len: np.ndarray  # (N,) sentences before the turn
    query: np.ndarray  # (N, sentence_len)
    answer: np.ndarray  # (N,) index into the task's candidate set
    turn: np.ndarray  # (N,) 1-based index of the bot turn within its dialog
    dialog_id: np.ndarray  # (N,) index of the dialog in its source file
    bot: list[str]  # (N,) the bot utterance

    def __len__(self) -> int:
        return len(self.answer)


@dataclasses.dataclass
class Corpus:
    """Every parsed file of both tasks, the shared vocabulary and the encoded candidate sets."""

    dialogs: dict[str, list[Dialog]]  # keys: target_trn, target_dev, target_tst, target_tst-OOV, related_trn
    answers: dict[str, list[list[int]]]
    vocab: Vocabulary
    sentence_len: int
    max_sentences: int
    target_candidates: np.ndarray  # (C_target, sentence_len)
    related_candidates: np.ndarray  # (C_related, sentence_len)
    candidate_texts: dict[str, list[str]]
    # with related_sources="babi+profiles": the profile of each dialog of dialogs["related_profiles_trn"]
    related_profiles: list[str] = dataclasses.field(default_factory=list)


def load_corpus(
    data_dir: str = "",
    max_dialogs: int | None = None,
    target_set: str = "small",
    related_sources: str = "babi",
    related_profile_dialogs: int = 1000,
    related_profile_seed: int = 0,
) -> Corpus:
    """Parses both tasks, the target's from ``target_set`` (see ``data_paths``), optionally only the first
    ``max_dialogs`` dialogs of each file (smoke runs).

    With ``related_sources="babi+profiles"``, ``dialogs["related_profiles_trn"]`` holds ``related_profile_dialogs``
    dialogs drawn (seeded by ``related_profile_seed``, in file order) from the other five profiles' training files,
    and the related candidate set is bAbI's followed by those profiles' candidates that bAbI's lacks (so bAbI's
    answer indices are unchanged)."""
    paths = data_paths(data_dir, target_set, related_sources)
    for p in paths.values():
        resolve(p)  # fail before parsing anything if a file is missing
    cands = {t: read_candidates(paths[f"{t}_candidates"]) for t in ("target", "related")}
    profiles = other_profiles(target_set) if related_sources == "babi+profiles" else []
    if profiles:
        merged = dict.fromkeys(cands["related"])
        for profile in profiles:
            merged.update(dict.fromkeys(read_candidates(paths[f"related_profile_candidates:{profile}"])))
        cands["related"] = list(merged)
    dialogs, answers = {}, {}
    for name in [f"target_{s}" for s in TARGET_SPLITS] + ["related_trn"]:
        task = name.split("_")[0]
        ds = read_dialogs(paths[name], has_profile=(task == "target"), limit=max_dialogs)
        dialogs[name] = ds
        answers[name] = answer_indices(ds, cands[task], paths[name], paths[f"{task}_candidates"])
    related_profiles: list[str] = []
    if profiles:
        pool: list[tuple[str, Dialog, list[int]]] = []
        for profile in profiles:
            path = paths[f"related_profile_trn:{profile}"]
            ds = read_dialogs(path, has_profile=True, limit=max_dialogs)
            where = f"the related candidates ({paths['related_candidates']} and the other profiles')"
            pool += [(profile, d, a) for d, a in zip(ds, answer_indices(ds, cands["related"], path, where))]
        if not 0 < related_profile_dialogs:
            raise ValueError(f"related_profile_dialogs must be positive, got {related_profile_dialogs}")
        chosen = target_subset(len(pool), min(related_profile_dialogs, len(pool)), related_profile_seed)
        dialogs["related_profiles_trn"] = [pool[i][1] for i in chosen]
        answers["related_profiles_trn"] = [pool[i][2] for i in chosen]
        related_profiles = [pool[i][0] for i in chosen]
    max_sentences = max(len(d.sentences) for ds in dialogs.values() for d in ds)
    words: set[str] = set()
    lengths = [0]
    for ds in dialogs.values():
        for d in ds:
            for _, text in d.sentences:
                toks = tokenize(text)
                words.update(toks)
                lengths.append(len(toks) + 2)
    for cs in cands.values():
        for c in cs:
            toks = tokenize(c)
            words.update(toks)
            lengths.append(len(toks))
    specials = list(SPEAKER_TOKENS.values()) + [f"#{i}" for i in range(1, max_sentences + 1)]
    vocab = Vocabulary([PAD, *specials, *sorted(words - set(specials) - {PAD})])
    sentence_len = max(lengths)
    encode_cands = lambda cs: np.stack([vocab.encode(tokenize(c), sentence_len) for c in cs])
    return Corpus(
        dialogs,
        answers,
        vocab,
        sentence_len,
        max_sentences,
        encode_cands(cands["target"]),
        encode_cands(cands["related"]),
        cands,
        related_profiles,
    )


def encode(corpus: Corpus, name: str, dialog_indices: np.ndarray | None = None) -> EncodedSplit:
    """Encodes the dialogs ``dialog_indices`` (default: all) of the split ``name``."""
    dialogs, answers = corpus.dialogs[name], corpus.answers[name]
    if dialog_indices is None:
        dialog_indices = np.arange(len(dialogs))
    vocab, length = corpus.vocab, corpus.sentence_len
    chosen = [dialogs[i] for i in dialog_indices]
    store = np.zeros((len(chosen), max(len(d.sentences) for d in chosen), length), np.int32)
    cols: dict[str, list] = {k: [] for k in ("dialog", "memory_len", "query", "answer", "turn", "dialog_id", "bot")}
    for row, (i, d) in enumerate(zip(dialog_indices, chosen)):
        for pos, (speaker, text) in enumerate(d.sentences):
            store[row, pos] = vocab.encode([*tokenize(text), SPEAKER_TOKENS[speaker], f"#{pos + 1}"], length)
        for t, (turn, answer) in enumerate(zip(d.turns, answers[i]), 1):
            cols["dialog"].append(row)
            cols["memory_len"].append(turn.memory_len)
            cols["query"].append(vocab.encode(tokenize(turn.user), length))
            cols["answer"].append(answer)
            cols["turn"].append(t)
            cols["dialog_id"].append(int(i))
            cols["bot"].append(turn.bot)
    arr = lambda k: np.asarray(cols[k], np.int32)
    return EncodedSplit(
        store,
        arr("dialog"),
        arr("memory_len"),
        np.stack(cols["query"]),
        arr("answer"),
        arr("turn"),
        arr("dialog_id"),
        cols["bot"],
    )


def concat_splits(first: EncodedSplit, second: EncodedSplit) -> EncodedSplit:
    """The examples of ``first`` then those of ``second`` as one split (stores padded to the longer dialog)."""
    rows = max(first.store.shape[1], second.store.shape[1])
    pad = lambda store: np.pad(store, ((0, 0), (0, rows - store.shape[1]), (0, 0)))
    return EncodedSplit(
        np.concatenate([pad(first.store), pad(second.store)]),
        np.concatenate([first.dialog, second.dialog + first.store.shape[0]]).astype(np.int32),
        np.concatenate([first.memory_len, second.memory_len]),
        np.concatenate([first.query, second.query]),
        np.concatenate([first.answer, second.answer]),
        np.concatenate([first.turn, second.turn]),
        np.concatenate([first.dialog_id, second.dialog_id]),
        first.bot + second.bot,
    )


def first_dialogs(num_available: int, num_dialogs: int) -> np.ndarray:
    """The first ``num_dialogs`` dialogs of the file: the authors' target data of a profile (their
    ``split_data.py`` keeps the first dialogs of the profile's training file)."""
    if not 0 < num_dialogs <= num_available:
        raise ValueError(f"target_dialogs must be in [1, {num_available}], got {num_dialogs}")
    return np.arange(num_dialogs)


def target_subset(num_available: int, num_dialogs: int, seed: int) -> np.ndarray:
    """The first ``num_dialogs`` of a seeded permutation: for one seed, smaller subsets are nested in larger."""
    if not 0 < num_dialogs <= num_available:
        raise ValueError(f"target_dialogs must be in [1, {num_available}], got {num_dialogs}")
    order = np.asarray(jax.random.permutation(jax.random.key(seed), num_available))
    return np.sort(order[:num_dialogs])


def turn_kinds(split: EncodedSplit) -> list[str]:
    return [bot_turn_kind(b) for b in split.bot]
