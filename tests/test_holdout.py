"""Held-out target folds for the outer loss (metadial/holdout.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from metadial.holdout import draw_from_fold, fold_at, target_folds


def test_folds_partition_the_examples_by_group():
    groups = np.repeat(np.arange(10), [3, 1, 2, 4, 1, 1, 2, 3, 1, 2])  # e.g. dialogs of 1 to 4 turns
    folds = target_folds(groups, 0.25, seed=0)
    assert folds.num_folds == 4
    seen = []
    for f in range(4):
        outer = set(np.asarray(folds.outer[f, : folds.outer_size[f]]).tolist())
        train = set(np.asarray(folds.train[f, : folds.train_size[f]]).tolist())
        assert outer.isdisjoint(train) and outer | train == set(range(len(groups)))
        assert set(groups[list(outer)]).isdisjoint(groups[list(train)])  # a group is never split
        seen += sorted(outer)
    assert sorted(seen) == list(range(len(groups)))  # every example is held out in exactly one fold
    again = target_folds(groups, 0.25, seed=0)
    assert np.array_equal(folds.outer, again.outer)
    assert not np.array_equal(folds.outer, target_folds(groups, 0.25, seed=1).outer)


def test_draws_stay_in_the_fold_and_the_fold_rotates():
    folds = target_folds(np.arange(9), 1 / 3, seed=0)
    for f in range(3):
        idx = np.asarray(draw_from_fold(jax.random.key(f), folds.outer, folds.outer_size, f, 500))
        members = np.asarray(folds.outer[f, : folds.outer_size[f]])
        assert set(idx.tolist()) == set(members.tolist())
    assert [fold_at(s, 10, 3) for s in (0, 9, 10, 25, 30)] == [0, 0, 1, 2, 0]
    assert {fold_at(s, 0, 3) for s in range(100)} == {0}


def test_bad_holdouts_are_refused():
    with pytest.raises(ValueError, match=r"held-out fraction must be in \(0, 1\), got 1.0"):
        target_folds(np.arange(5), 1.0, 0)
    with pytest.raises(ValueError, match="3 groups of target examples cannot make 4 held-out folds"):
        target_folds(np.array([0, 0, 1, 2]), 0.25, 0)
