"""The bAbI dialog reader, the encoded dialog data and the device-side batches."""

from __future__ import annotations

import gzip

import jax.numpy as jnp
import numpy as np
import pytest

from metadial.data.babi_dialog import (
    DialogFormatError,
    answer_indices,
    bot_turn_kind,
    open_text,
    read_candidates,
    read_dialogs,
)
from metadial.data.dialog_batches import device_pool, flat_candidates, gather_batch, text_table
from metadial.data.dialog_tasks import PROFILES, concat_splits, data_paths, encode, load_corpus, target_subset

PERSONAL = (
    "1 female young veg paella\n"
    "2 hi\thello maam\n"
    "3 book a table\tapi_call italian rome two cheap\n"
    "4 resto_a R_phone resto_a_phone\n"
    "5 <SILENCE>\twhat do you think of this option: resto_a\n"
    "\n"
    "1 male elderly non-veg pizza\n"
    "2 hello\thello sir\n"
)
CANDIDATES = (
    "1 hello maam\n1 hello sir\n1 api_call italian rome two cheap\n1 what do you think of this option: resto_a\n"
)


def write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


@pytest.fixture
def files(tmp_path):
    return (write(tmp_path / "dialogs.txt.gz", PERSONAL, gz=True), write(tmp_path / "cands.txt", CANDIDATES))


def test_reader_builds_memory_query_and_answer(files):
    dialogs_path, cands_path = files
    dialogs = read_dialogs(dialogs_path.removesuffix(".gz"), has_profile=True)  # .gz found transparently
    cands = read_candidates(cands_path)
    assert len(dialogs) == 2 and dialogs[0].profile == "female young veg paella"
    d = dialogs[0]
    assert [s for s, _ in d.sentences] == ["profile", "user", "bot", "user", "bot", "kb", "user", "bot"]
    assert [(t.user, t.memory_len) for t in d.turns] == [("hi", 1), ("book a table", 3), ("<silence>", 6)]
    assert answer_indices(dialogs, cands, dialogs_path, cands_path) == [[0, 2, 3], [1]]
    assert [bot_turn_kind(t.bot) for t in d.turns] == ["greeting", "api_call", "options"]


@pytest.mark.parametrize(
    "text, has_profile, message",
    [
        ("1 hi\thello maam\n2 x\n", True, r"dialogs.txt:1: expected a user profile line"),
        ("1 female young veg paella\n3 hi\thello maam\n", True, r"dialogs.txt:2: expected line id 2"),
        ("1 female young veg paella\nhi\thello maam\n", True, r"dialogs.txt:2: expected '<id> <text>'"),
        ("1 resto_a R_phone p\n", False, r"dialogs.txt:1: expected a turn '1 user<TAB>bot'"),
        ("1 hi\t \n", False, r"dialogs.txt:1: expected '<id> user utterance<TAB>bot utterance'"),
        ("1 female young veg paella\n", True, r"dialogs.txt:1: dialog has no 'user<TAB>bot' turn"),
        ("\n\n", False, r"dialogs.txt: no dialogs"),
    ],
)
def test_reader_rejects_malformed_dialogs(tmp_path, text, has_profile, message):
    path = write(tmp_path / "dialogs.txt", text)
    with pytest.raises(DialogFormatError, match=message):
        read_dialogs(path, has_profile)


def test_a_limit_reads_only_the_first_dialogs(tmp_path, files):
    dialogs_path, _ = files
    assert read_dialogs(dialogs_path, has_profile=True, limit=1) == read_dialogs(dialogs_path, has_profile=True)[:1]
    assert read_dialogs(dialogs_path, has_profile=True, limit=5) == read_dialogs(dialogs_path, has_profile=True)
    # what follows the first dialogs is not parsed: a malformed third dialog is only seen without the limit
    path = write(tmp_path / "bad_end.txt", PERSONAL + "\n1 female young veg paella\n3 hi\thello maam\n")
    assert len(read_dialogs(path, has_profile=True, limit=2)) == 2
    with pytest.raises(DialogFormatError, match=r"bad_end.txt:\d+: expected line id 2"):
        read_dialogs(path, has_profile=True)
    with pytest.raises(ValueError, match="limit must be a positive number of dialogs or None, got 0"):
        read_dialogs(path, has_profile=True, limit=0)


def test_bot_utterance_missing_from_candidates_is_an_error(tmp_path, files):
    dialogs_path, _ = files
    cands_path = write(tmp_path / "few.txt", "1 hello maam\n")
    dialogs = read_dialogs(dialogs_path, has_profile=True)
    with pytest.raises(
        DialogFormatError,
        match=r"dialogs.txt.gz:3: bot utterance 'api_call italian rome two cheap' "
        r"is not in the candidate set .*few.txt",
    ):
        answer_indices(dialogs, read_candidates(cands_path), dialogs_path, cands_path)


def test_bad_candidate_line_and_missing_file(tmp_path):
    with pytest.raises(DialogFormatError, match=r"c.txt:2: expected '<id> <utterance>'"):
        read_candidates(write(tmp_path / "c.txt", "1 ok\nno id here\n"))
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        open_text(str(tmp_path / "nope.txt"))


def test_truncated_gzip_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "dialogs.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join([PERSONAL] * 50))
    path.write_bytes(path.read_bytes()[:-40])  # cut the end off, as an interrupted copy would
    with pytest.raises(DialogFormatError, match=r"dialogs.txt.gz: unreadable after line \d+ \(EOFError"):
        read_dialogs(str(path), has_profile=True)


def test_target_subsets_are_seeded_and_nested():
    small, large = target_subset(1000, 50, seed=3), target_subset(1000, 250, seed=3)
    assert len(set(small)) == 50 and set(small) <= set(large)
    np.testing.assert_array_equal(small, target_subset(1000, 50, seed=3))
    assert set(small) != set(target_subset(1000, 50, seed=4))
    with pytest.raises(ValueError, match="target_dialogs"):
        target_subset(1000, 0, seed=0)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_dialogs=20)


def test_packaged_data_encodes_with_speaker_and_time_tokens(corpus):
    split = encode(corpus, "target_trn", np.array([0, 3]))
    vocab = corpus.vocab
    words = lambda ids: [vocab.words[i] for i in ids if i]
    d0 = corpus.dialogs["target_trn"][0]
    assert words(split.store[0, 0]) == [*d0.profile.split(), "$p", "#1"]
    assert words(split.store[0, 1])[-2:] == ["$u", "#2"] and words(split.store[0, 2])[-2:] == ["$r", "#3"]
    first = np.flatnonzero(split.dialog == 0)
    assert len(first) == len(d0.turns) and list(split.turn[first]) == list(range(1, len(d0.turns) + 1))
    assert corpus.candidate_texts["target"][split.answer[first[0]]] == d0.turns[0].bot
    assert set(split.dialog_id) == {0, 3}
    assert corpus.related_candidates.shape[1] == corpus.target_candidates.shape[1] == corpus.sentence_len


def dense_rows(pool, memory) -> np.ndarray:
    """A gathered memory back as padded (..., L) token rows: its texts' tokens, then its speaker and time tokens."""
    t = pool["texts"]
    texts = np.zeros((t["length"].shape[0], int(t["length"].max()) if t["length"].size else 0), np.int32)
    pos = np.concatenate([np.arange(n) for n in np.asarray(t["length"])]).astype(int)
    texts[np.asarray(t["segment"]), pos] = np.asarray(t["tokens"])
    rows = []
    for text, tags in zip(np.asarray(memory["text"]).ravel(), np.asarray(memory["tags"]).reshape(-1, 2)):
        tokens = [*texts[text][texts[text] > 0].tolist(), *tags[tags > 0].tolist()]
        rows.append(tokens)
    width = max([len(r) for r in rows] + [1])
    out = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out.reshape(*np.asarray(memory["text"]).shape, width)


def test_text_table_holds_each_distinct_text_once_and_rebuilds_every_sentence(corpus):
    split = encode(corpus, "related_trn", np.arange(5))
    texts, text, tags = text_table(split.store)
    assert not texts[0].any() and len({tuple(r) for r in texts}) == len(texts)  # row 0 empty, rows distinct
    length = (split.store > 0).sum(-1)
    for d, s in zip(*np.nonzero(length)):
        row = split.store[d, s][: length[d, s]]
        assert [*texts[text[d, s]][texts[text[d, s]] > 0].tolist(), *tags[d, s].tolist()] == row.tolist()
    assert not text[length == 0].any() and not tags[length == 0].any()
    assert len(texts) < (length > 0).sum()  # texts repeat across dialogs: the table is smaller than the store


def test_gather_batch_keeps_the_most_recent_sentences(corpus):
    split = encode(corpus, "related_trn", np.array([1]))
    pool = device_pool(split, 1, corpus.related_candidates)
    i = int(np.argmax(split.memory_len))  # the last turn: the longest memory
    n = int(split.memory_len[i])
    width = split.store.shape[-1]
    batch = gather_batch(pool, jnp.array([i, 0]), memory_size=4)
    rows = dense_rows(pool, batch["memory"])
    np.testing.assert_array_equal(rows[0], split.store[0, n - 4 : n, : rows.shape[-1]])
    assert not split.store[0, n - 4 : n, rows.shape[-1] :].any() and rows.shape[-1] <= width
    assert not rows[1].any()  # the first turn of a bAbI dialog has an empty memory
    big = dense_rows(pool, gather_batch(pool, jnp.array([i]), memory_size=n + 3)["memory"])
    assert not big[0, :3].any()  # left padding
    np.testing.assert_array_equal(big[0, 3:], split.store[0, :n, : big.shape[-1]])
    assert int(batch["answer"][0]) == int(split.answer[i]) and batch["task"].tolist() == [1, 1]


def test_flat_candidates_rebuild_every_candidate_from_its_template_and_rare_tokens():
    rng = np.random.default_rng(0)
    matrix = np.where(rng.random((300, 6)) < 0.7, rng.integers(1, 40, (300, 6)), 0)
    matrix[:, 0] = 1  # a token every candidate has
    matrix[7] = 0  # an empty candidate
    flat = flat_candidates(matrix, min_count=20)
    templates = [[] for _ in flat["template_length"]]
    for t, seg in zip(flat["template_tokens"], flat["template_segment"]):
        templates[seg].append(int(t))
    rare = [[] for _ in matrix]
    for t, seg in zip(flat["tokens"], flat["segment"]):
        rare[seg].append(int(t))
    for c, row in enumerate(matrix):
        assert sorted(templates[flat["template"][c]] + rare[c]) == sorted(row[row > 0].tolist())
    assert len(flat["template_length"]) < len(matrix) and len(flat["tokens"]) < (matrix > 0).sum()


def test_every_bot_template_of_both_tasks_has_a_kind(corpus):
    """The kinds cover the bAbI templates and their personalized rewordings, with the same kind for both."""
    from collections import Counter

    from metadial.data.dialog_tasks import turn_kinds

    for split in ("related_trn", "target_tst"):
        assert "other" not in turn_kinds(encode(corpus, split)), split
    pairs = [
        ("i'm on it", "i'm on your request"),
        ("sure is there anything else to update", "great is there any other thing to modify"),
        ("sure let me find an other option for you", "sure finding something else"),
        ("is there anything i can help you with", "need something else"),
        ("great let me do the reservation", "cool its done"),
        ("any preference on a type of cuisine", "what food are you looking for"),
        ("hello what can i help you with today", "hey dude what is up"),
    ]
    for babi, personal in pairs:
        assert bot_turn_kind(babi) == bot_turn_kind(personal), (babi, personal)
    counts = Counter(turn_kinds(encode(corpus, "related_trn")))
    assert counts["greeting"] == counts["book"] == len(corpus.dialogs["related_trn"])  # one of each per dialog


def test_other_profiles_join_the_related_data_with_their_own_candidates():
    """babi+profiles: a seeded draw of the other five profiles' training dialogs (never the target's) follows bAbI;
    the related candidates are bAbI's, in order, then the profiles' new ones, so bAbI's answers keep their indices."""
    with pytest.raises(ValueError, match="target_set must be a profile"):
        data_paths(target_set="small", related_sources="babi+profiles")
    paths = data_paths(target_set="male_young", related_sources="babi+profiles")
    assert sorted(k.split(":")[1] for k in paths if k.startswith("related_profile_trn:")) == sorted(
        p for p in PROFILES if p != "male_young"
    )
    babi = load_corpus(max_dialogs=6, target_set="male_young")
    both = load_corpus(
        max_dialogs=6, target_set="male_young", related_sources="babi+profiles", related_profile_dialogs=12
    )
    assert both.related_candidates.shape[0] > babi.related_candidates.shape[0]
    texts = both.candidate_texts["related"]
    assert texts[: len(babi.candidate_texts["related"])] == babi.candidate_texts["related"]
    assert both.answers["related_trn"] == babi.answers["related_trn"]
    assert len(both.dialogs["related_profiles_trn"]) == len(both.related_profiles) == 12
    assert "male_young" not in both.related_profiles and len(set(both.related_profiles)) > 1
    for dialog, answers in zip(both.dialogs["related_profiles_trn"], both.answers["related_profiles_trn"]):
        assert [texts[a] for a in answers] == [t.bot for t in dialog.turns]
    again = load_corpus(
        max_dialogs=6, target_set="male_young", related_sources="babi+profiles", related_profile_dialogs=12
    )
    assert again.related_profiles == both.related_profiles


def test_concatenated_splits_keep_every_example_and_its_memory(corpus):
    first, second = encode(corpus, "target_trn", np.array([0, 1])), encode(corpus, "related_trn", np.array([2]))
    both = concat_splits(first, second)
    assert len(both) == len(first) + len(second) and both.bot == first.bot + second.bot
    for split, offset in ((first, 0), (second, len(first))):
        for i in range(len(split)):
            j = offset + i
            n = split.memory_len[i]
            np.testing.assert_array_equal(both.store[both.dialog[j], :n], split.store[split.dialog[i], :n])
            np.testing.assert_array_equal(both.query[j], split.query[i])
            assert both.answer[j] == split.answer[i]
