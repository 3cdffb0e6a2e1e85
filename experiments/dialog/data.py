"""The dialog experiment's data, loaded once per config: the related pool and the target's evaluation sets."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from experiments.shared.config import ConfigError
from metadial.data.dialog_batches import Pool, device_pool
from metadial.data.dialog_tasks import (
    Corpus,
    EncodedSplit,
    concat_splits,
    encode,
    first_dialogs,
    load_corpus,
    target_subset,
    turn_kinds,
)
from metadial.models.memn2n import RELATED_TASK, TARGET_TASK
from metadial.parallel import replicate


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A target evaluation split: its encoded examples, their device pool, and the kind of each bot turn."""

    split: EncodedSplit
    pool: Pool
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.split)


@dataclasses.dataclass(frozen=True)
class DialogData:
    """What every run of a config shares: the corpus, the related task's examples (with their device pool
    and kinds of bot turn) and the target's dev, test and OOV sets. ``target_train`` gives a run's own pool."""

    corpus: Corpus
    related: EncodedSplit
    related_pool: Pool
    related_kinds: list[str]
    related_kind_ids: np.ndarray  # index of each related example's kind in ``kind_names``
    kind_names: list[str]
    dev: EvalSet
    test: EvalSet
    oov: EvalSet
    target_set: str = "small"  # "small" or a profile of split-by-profile
    # the source of each related example: "babi", or "profiles" (another profile's dialog; related_profiles)
    related_sources: list[str] = dataclasses.field(default_factory=list)
    related_profiles: list[str | None] = dataclasses.field(default_factory=list)  # that profile, None for bAbI

    @property
    def num_related(self) -> int:
        return len(self.related)

    def target_train_split(self, size: int, seed: int) -> EncodedSplit:
        """The ``size`` target training dialogs, encoded: for ``small``, drawn for ``seed`` (nested across sizes);
        for a profile, its first ``size`` dialogs, as the authors took them."""
        available = len(self.corpus.dialogs["target_trn"])
        subset = target_subset(available, size, seed) if self.target_set == "small" else first_dialogs(available, size)
        return encode(self.corpus, "target_trn", subset)

    def target_train(self, size: int, seed: int) -> Pool:
        """The device pool of the ``size`` target training dialogs (``target_train_split``)."""
        return device_pool(self.target_train_split(size, seed), TARGET_TASK, self.corpus.target_candidates)

    def train_pools(self, target_train: Pool) -> dict[str, Pool]:
        return {"target": target_train, "related": self.related_pool}

    def on_mesh(self, mesh: Mesh) -> DialogData:
        """A copy whose device pools are replicated over ``mesh`` (the host-side arrays stay as they are)."""
        place = lambda s: dataclasses.replace(s, pool=replicate(s.pool, mesh))
        return dataclasses.replace(
            self,
            related_pool=replicate(self.related_pool, mesh),
            dev=place(self.dev),
            test=place(self.test),
            oov=place(self.oov),
        )

    def related_examples(self) -> list[dict]:
        """The related examples as ``related_weights.json`` lists them (with their source, and the profile of
        another profile's dialog)."""
        r = self.related
        sources = self.related_sources or ["babi"] * len(r)
        profiles = self.related_profiles or [None] * len(r)
        return [
            {
                "example_id": i,
                "dialog_id": int(r.dialog_id[i]),
                "turn": int(r.turn[i]),
                "bot": r.bot[i],
                "kind": self.related_kinds[i],
                "source": sources[i],
                **({"profile": profiles[i]} if profiles[i] else {}),
            }
            for i in range(len(r))
        ]


def kind_ids(kinds: list[str]) -> tuple[np.ndarray, list[str]]:
    """(index of each example's kind in the sorted kind names, those names)."""
    names = sorted(set(kinds))
    return np.asarray([names.index(k) for k in kinds]), names


def load_data(config: ml_collections.ConfigDict) -> DialogData:
    """Parses and encodes both tasks (``config.data_dir``, ``config.max_dialogs``)."""
    logging.info(
        "loading the dialog data (target set %s) from %s", config.target_set, config.data_dir or "the package's copies"
    )
    try:
        corpus = load_corpus(
            config.data_dir,
            config.max_dialogs or None,
            config.target_set,
            config.related_sources,
            config.related_profile_dialogs,
        )
    except FileNotFoundError as e:
        raise ConfigError(f"config.data_dir={config.data_dir!r}: {e}") from None
    related = encode(corpus, "related_trn")
    sources: list[str] = ["babi"] * len(related)
    profiles: list[str | None] = [None] * len(related)
    if corpus.related_profiles:  # related_sources="babi+profiles": the other profiles' dialogs follow bAbI's
        others = encode(corpus, "related_profiles_trn")
        related = concat_splits(related, others)
        sources += ["profiles"] * len(others)
        profiles += [corpus.related_profiles[d] for d in others.dialog]
    related_kinds = turn_kinds(related)
    ids, names = kind_ids(related_kinds)

    def eval_set(split_name: str) -> EvalSet:
        split = encode(corpus, split_name)
        return EvalSet(split, device_pool(split, TARGET_TASK, corpus.target_candidates), turn_kinds(split))

    data = DialogData(
        corpus,
        related,
        device_pool(related, RELATED_TASK, corpus.related_candidates),
        related_kinds,
        ids,
        names,
        eval_set("target_dev"),
        eval_set("target_tst"),
        eval_set("target_tst-OOV"),
        config.target_set,
        sources,
        profiles,
    )
    logging.info(
        "loaded %d related examples (%s), %d target training dialogs, %d dev / %d test / %d OOV examples",
        len(related),
        ", ".join(f"{n} from {s}" for s, n in zip(*np.unique(sources, return_counts=True))),
        len(corpus.dialogs["target_trn"]),
        len(data.dev),
        len(data.test),
        len(data.oov),
    )
    return data
