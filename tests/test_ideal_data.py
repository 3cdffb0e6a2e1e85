"""The ideal-task generator (metadial/data/ideal.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from metadial.data.ideal import make_ideal_task


@pytest.mark.parametrize("corruption", ["uniform", "shift"])
def test_generator_corrupts_exactly_the_requested_fraction(corruption):
    sizes = dict(num_classes=4, input_dim=5, num_target=30, num_related=400, num_test=50, corruption=corruption)
    task = make_ideal_task(jax.random.key(0), corrupt_fraction=0.75, **sizes)
    clean = make_ideal_task(jax.random.key(0), corrupt_fraction=0.0, **sizes)
    r = task.related
    assert (~r["correct"]).sum() == 300
    np.testing.assert_array_equal(r["flag"], r["correct"].astype(np.float32))
    np.testing.assert_array_equal(r["x"], clean.related["x"])
    true_y = clean.related["y"]
    np.testing.assert_array_equal(r["y"] == true_y, r["correct"])
    if corruption == "shift":
        np.testing.assert_array_equal(r["y"][~r["correct"]], (true_y[~r["correct"]] + 1) % 4)
    assert task.target["flag"].all() and task.test["flag"].all()
    assert task.target["x"].shape == (30, 5) and task.test["y"].shape == (50,)


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="corruption"):
        make_ideal_task(
            jax.random.key(0),
            num_classes=4,
            input_dim=5,
            num_target=3,
            num_related=4,
            num_test=5,
            corrupt_fraction=0.5,
            corruption="flip",
        )
    with pytest.raises(ValueError, match="num_target"):
        make_ideal_task(
            jax.random.key(0), num_classes=4, input_dim=5, num_target=0, num_related=4, num_test=5, corrupt_fraction=0.5
        )
