"""A tiny softmax-regression problem shared by the step tests (build it inside ``jax.enable_x64``), and tree
comparisons."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

NUM_FEATURES, NUM_CLASSES, NUM_RELATED = 3, 3, 8


def loss_fn(params, batch):
    logits = batch["x"] @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])


def make_batch(key, size, ids=None):
    kx, ky = jax.random.split(key)
    batch = {
        "x": jax.random.normal(kx, (size, NUM_FEATURES)),
        "y": jax.random.randint(ky, (size,), 0, NUM_CLASSES),
    }
    if ids is not None:
        batch["id"] = jnp.asarray(ids, jnp.int32)
    return batch


def make_params(key):
    kw, kb = jax.random.split(key)
    return {
        "w": 0.5 * jax.random.normal(kw, (NUM_FEATURES, NUM_CLASSES)),
        "b": 0.1 * jax.random.normal(kb, (NUM_CLASSES,)),
    }


def make_batches(seed=0):
    """(target, related, outer) batches; the related batch holds table ids 1, 3, 4, 6."""
    k = jax.random.split(jax.random.key(seed), 3)
    return make_batch(k[0], 5), make_batch(k[1], 4, ids=[1, 3, 4, 6]), make_batch(k[2], 6)


def assert_trees_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Same tree structure, and every pair of leaves equal within ``rtol`` / ``atol``."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def trees_differ(a, b) -> bool:
    """Whether some pair of leaves differs (beyond ``np.allclose``)."""
    return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
