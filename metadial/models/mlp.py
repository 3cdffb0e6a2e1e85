"""Small MLPs: the ideal task's classifier (and its per-example loss) and the weighting network ``MLPScorer``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadial.losses import OutputLoss, cross_entropy
from metadial.models import apply_model


class MLPClassifier(nn.Module):
    """ReLU MLP from a feature vector to class logits."""

    num_classes: int
    hidden_sizes: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(self.num_classes)(x)


def classification_loss_fn(module: nn.Module, inputs_fn: Callable) -> OutputLoss:
    """``loss_fn(params, batch) -> (B,)`` softmax cross-entropy of ``module`` on ``inputs_fn(batch)`` (an
    ``OutputLoss``: the logits, then the cross-entropy with ``batch["y"]``)."""

    def logits(params, batch):
        return apply_model(module, params, inputs_fn(batch))

    return OutputLoss(logits, cross_entropy("y"))


def accuracy(module: nn.Module, params, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(apply_model(module, params, x), axis=-1) == y)


class MLPScorer(nn.Module):
    """A small MLP that maps a feature vector per example to one scalar score (a weighting network)."""

    hidden_sizes: Sequence[int] = (32,)

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h = features
        for size in self.hidden_sizes:
            h = nn.relu(nn.Dense(size)(h))
        return nn.Dense(1)(h)[..., 0]
