"""Batches of several steps, for estimators that run over more than one batch (a look-ahead over fresh batches,
a trajectory segment of real steps).

A stack is either a plain batch whose every leaf carries a leading step axis, or a :class:`BatchStack`, which
keeps apart the entries every step shares (e.g. a candidate table that the examples index into) so that they
are stored once instead of once per step. Every function here takes both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Batch = dict[str, Any]


class BatchStack(flax.struct.PyTreeNode):
    """The batches of ``num_steps`` steps: every leaf of ``per_step`` has a leading axis of ``num_steps`` (step
    ``k`` uses slice ``k``); the entries of ``shared`` are the same for every step and stored once."""

    per_step: Batch
    shared: Batch = flax.struct.field(default_factory=dict)

    def with_shared(self, per_step: Batch) -> Batch:
        """One step's batch from its slice of ``per_step`` (or a merged stack)."""
        return {**self.shared, **per_step}


def as_stack(stack: Batch | BatchStack) -> BatchStack:
    """``stack`` as a :class:`BatchStack` (a plain stacked batch shares nothing)."""
    return stack if isinstance(stack, BatchStack) else BatchStack(stack, {})


def stack_batches(batches: Sequence[Batch], shared: Sequence[str] = ()) -> Batch | BatchStack:
    """Batches of equal shapes stacked along a new leading axis; the entries named in ``shared`` are taken once,
    from the first batch (a :class:`BatchStack`), instead of stacked."""
    per_step = [{k: v for k, v in b.items() if k not in shared} for b in batches]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_step)
    if not shared:
        return stacked
    return BatchStack(stacked, {k: batches[0][k] for k in shared if k in batches[0]})


def check_stacked(num_steps: int, *stacks: Any) -> None:
    """Raises unless every per-step leaf of ``stacks`` has a leading axis of length ``num_steps``."""
    for stack in stacks:
        per_step = stack.per_step if isinstance(stack, BatchStack) else stack
        for leaf in jax.tree.leaves(per_step):
            if leaf.ndim == 0 or leaf.shape[0] != num_steps:
                raise ValueError(
                    f"a stack of batches needs a leading axis of length {num_steps} (the steps it runs over) on "
                    f"every leaf, got a leaf of shape {leaf.shape}"
                )


def step_of_stack(stack: Batch | BatchStack, k: int) -> Batch:
    """The batch of step ``k``."""
    stack = as_stack(stack)
    return stack.with_shared(jax.tree.map(lambda x: x[k], stack.per_step))


def first_of_stack(stack: Batch | BatchStack) -> Batch:
    """The batch of step 0."""
    return step_of_stack(stack, 0)


def merge_stack(stack: Batch | BatchStack) -> Batch:
    """A stack of ``K`` batches of ``B`` examples as one batch of ``K * B`` (shared entries kept once)."""
    stack = as_stack(stack)
    return stack.with_shared(jax.tree.map(lambda x: jnp.reshape(x, (-1, *x.shape[2:])), stack.per_step))


def map_stack(fn: Callable[[Batch], Any], stack: Batch | BatchStack) -> Any:
    """``fn`` of every step's batch, stacked (``jax.vmap`` over the steps)."""
    stack = as_stack(stack)
    return jax.vmap(lambda per_step: fn(stack.with_shared(per_step)))(stack.per_step)


def scan_stacks(
    fn: Callable[[Any, tuple[Any, ...]], tuple[Any, Any]], init: Any, xs: Sequence[Any], num_steps: int
) -> tuple[Any, Any]:
    """``jax.lax.scan`` of ``fn(carry, step_xs)`` over the steps of ``xs``, a tuple of stacks and stacked arrays;
    ``fn`` sees each stack's step batch with its shared entries."""
    stacks = [as_stack(x) if isinstance(x, (dict, BatchStack)) else x for x in xs]
    per_step = tuple(s.per_step if isinstance(s, BatchStack) else s for s in stacks)

    def body(carry, step_xs):
        full = tuple(s.with_shared(x) if isinstance(s, BatchStack) else x for s, x in zip(stacks, step_xs, strict=True))
        return fn(carry, full)

    return jax.lax.scan(body, init, per_step, length=num_steps)
