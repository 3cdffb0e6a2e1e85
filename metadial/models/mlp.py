"""A small MLP classifier and its per-example cross-entropy loss."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class MLPClassifier(nn.Module):
    """ReLU MLP from a feature vector to class logits."""

    num_classes: int
    hidden_sizes: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(self.num_classes)(x)


def classification_loss_fn(module: nn.Module, inputs_fn: Callable) -> Callable:
    """``loss_fn(params, batch) -> (B,)`` softmax cross-entropy of ``module`` on ``inputs_fn(batch)``."""

    def loss_fn(params, batch):
        logits = module.apply(params, inputs_fn(batch))
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])

    return loss_fn


def accuracy(module: nn.Module, params, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(module.apply(params, x), axis=-1) == y)
