"""Weighting schemes: meta-parameters + a related batch -> one weight in (0, 1) per example.

Every scheme has the same interface (:class:`Weighting`):

* ``init(key, related_batch)`` makes the meta-parameters;
* ``logits(meta_params, related_batch)`` gives a ``(B,)`` score ``s_i``; ``weights`` is ``sigmoid(s_i)``;
* ``init_meta_opt_state`` / ``apply_meta_update`` own the meta-parameters' optax update, so a scheme can
  update its parameters in its own way (the table updates only the rows of the batch).

A scheme with ``uses_losses`` (:class:`MetaWeightNet`) also reads each related example's loss under the current
model from ``batch[LOSSES]``; the trainers add it (:func:`with_losses`) and hold the weights constant in the
model's gradient, as the published method does.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metadial.models import apply_model
from metadial.models.mlp import MLPScorer
from metadial.optim import optax_update

Batch = dict[str, Any]
PyTree = Any
LOSSES = "losses"  # the batch entry of each example's loss under the current model (schemes with uses_losses)


class Weighting(abc.ABC):
    """Maps meta-parameters and a related batch to per-example weights ``sigmoid(logits)``."""

    # whether the scores read each example's loss under the current model from ``batch[LOSSES]``
    uses_losses: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self, key: jax.Array, related_batch: Batch) -> PyTree:
        """Returns fresh meta-parameters."""

    @abc.abstractmethod
    def logits(self, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        """Returns the ``(B,)`` unnormalised scores of the batch's examples."""

    def weights(self, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        """Returns the ``(B,)`` weights, each in (0, 1)."""
        return jax.nn.sigmoid(self.logits(meta_params, related_batch))

    def init_meta_opt_state(self, meta_optimizer: optax.GradientTransformation, meta_params: PyTree) -> PyTree:
        return meta_optimizer.init(meta_params)

    def apply_meta_update(
        self,
        meta_optimizer: optax.GradientTransformation,
        meta_grads: PyTree,
        meta_opt_state: PyTree,
        meta_params: PyTree,
        related_batch: Batch,
    ) -> tuple[PyTree, PyTree]:
        """One optax update of the meta-parameters; returns ``(meta_params, meta_opt_state)``."""
        return optax_update(meta_optimizer, meta_grads, meta_opt_state, meta_params)


@dataclasses.dataclass(frozen=True)
class TableWeighting(Weighting):
    """One free logit per related example, looked up by the integer id in ``batch[id_key]``.

    The meta-optimizer runs independently per row (its state is kept per row, vmapped), and a step
    updates only the rows whose ids are in the batch: a dense Adam would keep moving rows that got no
    gradient through its momentum, and its step count would not match how often a row was seen.
    Transforms that couple rows (e.g. ``clip_by_global_norm``) therefore act per row here.
    """

    num_examples: int
    id_key: str = "id"
    init_logit: float = 0.0

    def __post_init__(self):
        if self.num_examples <= 0:
            raise ValueError(f"TableWeighting.num_examples must be positive, got {self.num_examples}")

    def init(self, key: jax.Array, related_batch: Batch) -> jax.Array:
        del key, related_batch
        return jnp.zeros((self.num_examples,)) + self.init_logit

    def logits(self, meta_params: jax.Array, related_batch: Batch) -> jax.Array:
        return meta_params[related_batch[self.id_key]]

    def init_meta_opt_state(self, meta_optimizer, meta_params):
        return jax.vmap(meta_optimizer.init)(meta_params)

    def apply_meta_update(self, meta_optimizer, meta_grads, meta_opt_state, meta_params, related_batch):
        ids = related_batch[self.id_key]
        take = lambda tree: jax.tree.map(lambda leaf: leaf[ids], tree)
        rows = meta_params[ids]
        # meta_grads is the dense gradient, so repeated ids see the same summed gradient and the same state:
        # their updated rows are identical and the scatter below is well defined.
        updates, new_state_rows = jax.vmap(meta_optimizer.update)(meta_grads[ids], take(meta_opt_state), rows)
        new_params = meta_params.at[ids].set(rows + updates)
        new_state = jax.tree.map(lambda full, part: full.at[ids].set(part), meta_opt_state, new_state_rows)
        return new_params, new_state


@dataclasses.dataclass(frozen=True)
class NetWeighting(Weighting):
    """A Flax module that scores each example from ``inputs_fn(batch)``; weight = sigmoid(score).

    ``inputs_fn`` returns the module's positional input (or a tuple of them), so the same class serves an
    MLP over feature vectors and a memory network over (memory, query).
    """

    module: nn.Module
    inputs_fn: Callable[[Batch], Any]

    def _inputs(self, batch: Batch) -> tuple:
        inputs = self.inputs_fn(batch)
        return inputs if isinstance(inputs, tuple) else (inputs,)

    def init(self, key: jax.Array, related_batch: Batch) -> PyTree:
        return self.module.init(key, *self._inputs(related_batch))

    def logits(self, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        scores = apply_model(self.module, meta_params, *self._inputs(related_batch))
        return jnp.reshape(scores, (-1,))


@dataclasses.dataclass(frozen=True)
class MetaWeightNet(Weighting):
    """Meta-Weight-Net (Shu et al., NeurIPS 2019): an MLP maps each related example's loss under the current model
    to its weight (one hidden layer of 100 ReLU units and a sigmoid output, as published).

    The loss is an input, read from ``batch[LOSSES]`` (``with_losses`` puts it there); the model's update holds the
    weights constant, as the published method does. The weights depend on the example only through its loss,
    where :class:`NetWeighting` can read the example itself (e.g. the dialog context).
    """

    hidden_sizes: Sequence[int] = (100,)
    uses_losses: ClassVar[bool] = True

    @property
    def module(self) -> MLPScorer:
        return MLPScorer(tuple(self.hidden_sizes))

    def init(self, key: jax.Array, related_batch: Batch) -> PyTree:
        size = jax.tree.leaves(related_batch)[0].shape[0]
        return self.module.init(key, jnp.zeros((size, 1)))  # the losses' values do not matter here

    def logits(self, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        if LOSSES not in related_batch:
            raise KeyError(
                f"MetaWeightNet reads each related example's current loss from batch[{LOSSES!r}], which this batch "
                "lacks: compute weights with metadial.weighting.with_losses(weighting, loss_fn, params, batch) or "
                "through the trainer (MetaReweighting.weights)"
            )
        return apply_model(self.module, meta_params, related_batch[LOSSES][:, None])


def with_losses(
    weighting: Weighting, loss_fn: Callable[[PyTree, Batch], jax.Array], params: PyTree, batch: Batch
) -> Batch:
    """``batch`` with each example's loss under ``params`` in ``batch[LOSSES]`` when ``weighting`` reads losses;
    ``batch`` itself otherwise. The losses stay differentiable in ``params`` (a meta-gradient through several
    real steps follows them); the trainers hold the weights constant in the model's own gradient."""
    if not weighting.uses_losses:
        return batch
    return {**batch, LOSSES: loss_fn(params, batch)}
