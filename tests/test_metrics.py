"""Host-side metrics (metadial/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from metadial.metrics import mean_std, roc_auc


def test_roc_auc_known_answers():
    labels = np.array([1, 1, 0, 0, 1, 0], bool)
    assert roc_auc(np.array([5, 4, 1, 2, 3, 0.5]), labels) == 1.0
    assert roc_auc(-np.array([5, 4, 1, 2, 3, 0.5]), labels) == 0.0
    assert roc_auc(np.ones(6), labels) == 0.5
    assert roc_auc(np.ones(3), np.ones(3, bool)) is None
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels] for n in scores[~labels]]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))


def test_mean_std_is_the_population_std():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
