"""Models and weighting networks: ``mlp`` (the ideal task's classifier, ``MLPScorer``) and ``memn2n`` (the dialog
model, ``MemoryGate``)."""

from __future__ import annotations

from typing import Any, cast

import flax.linen as nn
import jax


def apply_model(module: nn.Module, params: Any, *inputs: Any, method: Any = None) -> jax.Array:
    """``module.apply(params, *inputs)`` (or of its ``method``) whose output is one array (typed as such)."""
    return cast(jax.Array, module.apply(params, *inputs, method=method))
