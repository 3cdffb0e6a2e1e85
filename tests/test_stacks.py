"""Stacks of batches (metadial/stacks.py): entries shared by every step are stored once and change nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metadial import MetaReweighting, MLPScorer, NetWeighting, TableWeighting
from metadial.estimators import Lookahead, Trajectory
from metadial.stacks import BatchStack, check_stacked, first_of_stack, merge_stack, stack_batches, step_of_stack
from tests import tiny

NUM_ROWS, NUM_FEATURES, BATCH, NUM_RELATED = 10, 3, 4, 10


def table_loss(params, batch):
    """A linear model on rows of a feature table that every example of every step shares."""
    x = batch["table"][batch["row"]]
    return 0.5 * (x @ params["w"] + params["b"] - batch["y"]) ** 2


def batches(key, num_steps):
    """Per-step target and related batches that index into one shared table, and an outer batch."""
    k_table, *keys = jax.random.split(key, 2 * num_steps + 2)
    table = jax.random.normal(k_table, (NUM_ROWS, NUM_FEATURES), jnp.result_type(float))

    def batch(k):
        k_row, k_y = jax.random.split(k)
        row = jax.random.randint(k_row, (BATCH,), 0, NUM_ROWS)
        return {"table": table, "row": row, "y": jax.random.normal(k_y, (BATCH,), jnp.result_type(float)), "id": row}

    return [batch(k) for k in keys[:num_steps]], [batch(k) for k in keys[num_steps:-1]], batch(keys[-1])


WEIGHTINGS = {
    "table": lambda: TableWeighting(NUM_RELATED),
    "net": lambda: NetWeighting(MLPScorer((4,)), inputs_fn=lambda b: b["table"][b["row"]]),
}


def test_a_stack_keeps_shared_entries_once_and_gives_the_same_batches():
    targets, _, _ = batches(jax.random.key(0), 3)
    full, shared = stack_batches(targets), stack_batches(targets, shared=("table",))
    assert isinstance(shared, BatchStack) and shared.shared["table"].shape == (NUM_ROWS, NUM_FEATURES)
    assert shared.per_step["row"].shape == (3, BATCH) and "table" not in shared.per_step
    for k in range(3):
        tiny.assert_trees_close(step_of_stack(shared, k), targets[k], rtol=0, atol=0)
        tiny.assert_trees_close(step_of_stack(full, k), targets[k], rtol=0, atol=0)
    tiny.assert_trees_close(first_of_stack(shared), targets[0], rtol=0, atol=0)
    merged = merge_stack(shared)
    assert merged["table"].shape == (NUM_ROWS, NUM_FEATURES) and merged["row"].shape == (3 * BATCH,)
    np.testing.assert_array_equal(merged["row"], np.concatenate([t["row"] for t in targets]))
    check_stacked(3, shared)  # the shared table has no step axis and is not checked
    with pytest.raises(ValueError, match="leading axis of length 4"):
        check_stacked(4, shared)


@pytest.mark.parametrize("kind", ["table", "net"])
@pytest.mark.parametrize(
    "estimator", [Trajectory(3, remat=False), Lookahead(3, fresh_batches=True)], ids=["trajectory", "fresh_lookahead"]
)
def test_a_step_on_a_stack_with_shared_entries_equals_the_step_on_fully_stacked_batches(kind, estimator):
    with jax.enable_x64(True):
        targets, relateds, outer = batches(jax.random.key(1), 3)
        weighting = WEIGHTINGS[kind]()
        learner = MetaReweighting(
            table_loss, weighting, optax.adam(0.1, eps_root=1e-8), optax.sgd(1.0), estimator=estimator
        )
        params = {"w": jnp.zeros(NUM_FEATURES, jnp.result_type(float)), "b": jnp.zeros((), jnp.result_type(float))}
        state = learner.init(params, weighting.init(jax.random.key(2), relateds[0]))
        step = jax.jit(learner.step)
        full, _ = step(state, stack_batches(targets), stack_batches(relateds), outer)
        stacked, _ = step(
            state, stack_batches(targets, shared=("table",)), stack_batches(relateds, shared=("table",)), outer
        )
        assert tiny.trees_differ(full.meta_params, state.meta_params)
        tiny.assert_trees_close(stacked, full, rtol=1e-12, atol=1e-14)
