"""The one optax update every step in the library makes."""

from __future__ import annotations

from typing import Any

import optax

PyTree = Any


def optax_update(
    optimizer: optax.GradientTransformation, grads: PyTree, opt_state: PyTree, params: PyTree
) -> tuple[PyTree, PyTree]:
    """Applies one ``optimizer`` update of ``grads`` to ``params``; returns ``(params, opt_state)``."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
