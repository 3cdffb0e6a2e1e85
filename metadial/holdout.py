"""Held-out target data for the outer loss, in folds that can rotate so the model still trains on all of it.

With a long horizon, an outer loss on the very target examples the model trains on rewards ignoring the
related data (the model then fits those examples best). :func:`target_folds` splits the target examples, by
group (e.g. whole dialogs), into ``K = round(1 / fraction)`` seeded folds; at any step one fold is held out
for the outer loss and the model trains on the others. :func:`fold_at` rotates the held-out fold every
``rotate_every`` steps (0: fold 0 is held out for the whole run, and the model never sees it).

Folds are padded index matrices with their sizes, so a jitted step draws from the current fold with static
shapes: ``idx = folds.train[f, randint(0, folds.train_size[f])]``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


class Folds(flax.struct.PyTreeNode):
    """For each fold ``f``: the examples the model trains on (``train[f, :train_size[f]]``) and those held
    out for the outer loss (``outer[f, :outer_size[f]]``)."""

    train: jax.Array  # (K, max train size) example indices, padded
    train_size: jax.Array  # (K,)
    outer: jax.Array  # (K, max held-out size)
    outer_size: jax.Array  # (K,)

    @property
    def num_folds(self) -> int:
        return int(self.train.shape[0])


def _padded(rows: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    width = max(len(r) for r in rows)
    matrix = np.stack([np.pad(r, (0, width - len(r)), constant_values=r[0]) for r in rows])
    return jnp.asarray(matrix, jnp.int32), jnp.asarray([len(r) for r in rows], jnp.int32)


def target_folds(groups: np.ndarray, fraction: float, seed: int) -> Folds:
    """Seeded folds of the examples whose group ids are ``groups`` (one per example; a group is never split),
    each holding out about ``fraction`` of the groups."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    groups = np.asarray(groups)
    unique = np.unique(groups)
    num_folds = max(2, round(1 / fraction))
    if len(unique) < num_folds:
        raise ValueError(f"{len(unique)} groups of target examples cannot make {num_folds} held-out folds")
    order = np.random.default_rng(seed).permutation(unique)
    fold_of_group = dict(zip(order.tolist(), (np.arange(len(order)) % num_folds).tolist()))
    fold = np.array([fold_of_group[g] for g in groups.tolist()])
    examples = np.arange(len(groups))
    train, train_size = _padded([examples[fold != f] for f in range(num_folds)])
    outer, outer_size = _padded([examples[fold == f] for f in range(num_folds)])
    return Folds(train, train_size, outer, outer_size)


def fold_at(step: int, rotate_every: int, num_folds: int) -> int:
    """The held-out fold at ``step``: fold 0 throughout if ``rotate_every`` is 0, else the next one every
    ``rotate_every`` steps."""
    return (step // rotate_every) % num_folds if rotate_every > 0 else 0


def draw_from_fold(key: jax.Array, members: jax.Array, sizes: jax.Array, fold: jax.Array, batch_size: int):
    """``batch_size`` example indices drawn uniformly with replacement from ``members[fold, :sizes[fold]]``."""
    return members[fold, jax.random.randint(key, (batch_size,), 0, sizes[fold])]
