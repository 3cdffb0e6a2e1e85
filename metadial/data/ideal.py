"""The "ideal" related-task problem: the same classification task with mostly wrong labels, flagged.

Generator (all draws from one ``jax.random`` key):

* inputs ``x ~ N(0, I_d)`` with ``d = input_dim``;
* a fixed random linear teacher ``W ~ N(0, 1)^{d x C}``; the true label is ``argmax_c (x W)_c``;
* target set: ``num_target`` examples with true labels; test set: ``num_test`` examples with true labels;
* related set: ``num_related`` examples of the same task, of which a ``corrupt_fraction`` (exactly
  ``round(corrupt_fraction * num_related)``) have their label replaced by a wrong class: drawn uniformly
  from the other ``C - 1`` classes (``corruption="uniform"``) or the next class ``(y + 1) mod C``
  (``corruption="shift"``, a systematic confusion).

Each example carries ``flag`` = 1.0 when its label is correct (always 1 for target and test examples), the
extra input feature of the ideal task, plus ``id`` (its row index) and ``correct`` (bool, for evaluation).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

CORRUPTIONS = ("uniform", "shift")


@dataclasses.dataclass(frozen=True)
class IdealTask:
    target: dict[str, np.ndarray]
    related: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def _split(x: jax.Array, y: jax.Array, correct: jax.Array) -> dict[str, np.ndarray]:
    n = x.shape[0]
    return {
        "x": np.asarray(x, np.float32),
        "flag": np.asarray(correct, np.float32),
        "y": np.asarray(y, np.int32),
        "id": np.arange(n, dtype=np.int32),
        "correct": np.asarray(correct, bool),
    }


def make_ideal_task(
    key: jax.Array,
    *,
    num_classes: int,
    input_dim: int,
    num_target: int,
    num_related: int,
    num_test: int,
    corrupt_fraction: float,
    corruption: str = "uniform",
) -> IdealTask:
    """Draws the target, related and test sets of the ideal task (see the module docstring)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    for name, value in [
        ("input_dim", input_dim),
        ("num_target", num_target),
        ("num_related", num_related),
        ("num_test", num_test),
    ]:
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1], got {corrupt_fraction}")
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")

    k_teacher, k_target, k_related, k_test, k_which, k_wrong = jax.random.split(key, 6)
    teacher = jax.random.normal(k_teacher, (input_dim, num_classes))

    def draw(k, n):
        x = jax.random.normal(k, (n, input_dim))
        return x, jnp.argmax(x @ teacher, axis=-1)

    x_t, y_t = draw(k_target, num_target)
    x_r, y_r = draw(k_related, num_related)
    x_s, y_s = draw(k_test, num_test)

    num_corrupt = round(corrupt_fraction * num_related)
    corrupt = jnp.zeros(num_related, bool).at[jax.random.permutation(k_which, num_related)[:num_corrupt]].set(True)
    if corruption == "uniform":
        offset = jax.random.randint(k_wrong, (num_related,), 1, num_classes)
    else:
        offset = jnp.ones(num_related, jnp.int32)
    y_r_noisy = jnp.where(corrupt, (y_r + offset) % num_classes, y_r)

    return IdealTask(
        target=_split(x_t, y_t, jnp.ones(num_target, bool)),
        related=_split(x_r, y_r_noisy, ~corrupt),
        test=_split(x_s, y_s, jnp.ones(num_test, bool)),
    )
