"""Per-example losses that keep the model's outputs apart from the loss on them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax

PyTree = Any
Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class OutputLoss:
    """A per-example loss written as ``loss(outputs(params, batch), batch) -> (B,)``: the model's outputs (e.g.
    logits) and a loss that is convex in them. It is called as any ``loss_fn(params, batch)``; knowing the split,
    ``metadial.estimators.Implicit(gauss_newton=True)`` can use the Gauss-Newton matrix ``J' H_outputs J``, which
    is positive semi-definite where the Hessian in the parameters is not."""

    outputs: Callable[[PyTree, Batch], PyTree]
    loss: Callable[[PyTree, Batch], jax.Array]

    def __call__(self, params: PyTree, batch: Batch) -> jax.Array:
        return self.loss(self.outputs(params, batch), batch)


def cross_entropy(label_key: str) -> Callable[[jax.Array, Batch], jax.Array]:
    """``loss(logits, batch) -> (B,)``: softmax cross-entropy with the integer labels ``batch[label_key]``."""

    def loss(logits: jax.Array, batch: Batch) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[label_key])

    return loss
