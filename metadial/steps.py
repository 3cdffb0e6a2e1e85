"""Functional training steps: plain, meta-learned example weights, and learning-to-reweight.

The model is given only through ``loss_fn(params, batch) -> (B,)`` per-example losses, so the steps work
with any Flax/haiku/plain-JAX model. Every optimizer is an ``optax.GradientTransformation``.

Each class's ``step`` is a pure function of (state, batches); wrap it with ``jax.jit`` once (``jit_step``)
and call it every step: shapes are static, so it traces once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from metadial.estimators import (
    Estimator,
    Lookahead,
    LossFn,
    MetaGradient,
    Problem,
    inner_objective,
    mean_loss,
    optimizer_steps,
    weighted_mean,
)
from metadial.optim import optax_update
from metadial.sampling import pool_mean
from metadial.stacks import BatchStack, check_stacked, first_of_stack, merge_stack, scan_stacks, stack_batches
from metadial.weighting import Batch, PyTree, Weighting

__all__ = [
    "REAL_UPDATES",
    "BatchStack",
    "LearningToReweight",
    "MetaReweighting",
    "MetaState",
    "PlainTrainer",
    "TrainState",
    "WeightingState",
    "check_stacked",
    "first_of_stack",
    "inner_objective",
    "mean_loss",
    "merge_stack",
    "optimizer_steps",
    "stack_batches",
    "weighted_mean",
]


class TrainState(flax.struct.PyTreeNode):
    """Model parameters and their optimizer state."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree


@dataclasses.dataclass(frozen=True)
class PlainTrainer:
    """Unweighted training: the loss is the sum over the given batches of each batch's mean loss."""

    loss_fn: LossFn
    optimizer: optax.GradientTransformation

    def init(self, params: PyTree) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params))

    steps_per_call = 1  # model updates per call of ``step``

    def step(self, state: TrainState, *batches: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        if not batches:
            raise ValueError("PlainTrainer.step needs at least one batch")

        def total_loss(params):
            return sum(mean_loss(self.loss_fn, params, b) for b in batches)

        loss, grads = jax.value_and_grad(total_loss)(state.params)
        params, opt_state = optax_update(self.optimizer, grads, state.opt_state, state.params)
        new_state = TrainState(state.step + 1, params, opt_state)
        return new_state, {"train_loss": loss, "grad_norm": optax.tree.norm(grads)}

    def jit_step(self) -> Callable:
        return jax.jit(self.step)


class WeightingState(flax.struct.PyTreeNode):
    """The weighting's side of a meta-learning run: its parameters, their optimizer state, the estimator's
    state (e.g. ``v`` of :class:`metadial.estimators.Implicit`)."""

    meta_params: PyTree
    meta_opt_state: PyTree
    estimator_state: PyTree


class MetaState(flax.struct.PyTreeNode):
    """Model parameters and optimizer state, and the weighting's state."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    weighting: WeightingState

    @property
    def meta_params(self) -> PyTree:
        return self.weighting.meta_params


REAL_UPDATES = ("joint", "related", "alternate")


@dataclasses.dataclass(frozen=True)
class MetaReweighting:
    """Meta-learned per-example weights of the related task: a meta update of the weighting, then the model's
    real update with the new weights.

    ``meta_update(params, opt_state, weighting_state, target, related, outer)`` asks the ``estimator``
    (:mod:`metadial.estimators`: ``Lookahead`` by default, ``Implicit``) for the gradient of the outer loss
    (mean target loss on ``outer``) with respect to the weighting's parameters, applies ``meta_optimizer``
    through the weighting scheme, and returns the new :class:`WeightingState`, the related batch's new weights
    and metrics. It does not touch the model, so the weights can feed any training loop (e.g. a flax
    ``TrainState.apply_gradients`` on the weighted loss; see the README).

    ``model_update`` is the real update, one of ``REAL_UPDATES``:

    * ``"joint"``: one optax update on the weighted related loss plus the mean target loss;
    * ``"related"``: one optax update on the weighted related loss alone;
    * ``"alternate"``: an update on the weighted related loss, then one on the mean target loss (the authors'
      research code).

    ``step(state, target, related, outer)`` is both, on a :class:`MetaState`. ``normalize`` makes the weighted
    loss ``sum(w l) / sum(w)`` instead of ``mean(w l)``.
    """

    loss_fn: LossFn
    weighting: Weighting
    optimizer: optax.GradientTransformation
    meta_optimizer: optax.GradientTransformation
    estimator: Estimator = dataclasses.field(default_factory=Lookahead)
    real_update: str = "joint"
    normalize: bool = False

    def __post_init__(self):
        if self.real_update not in REAL_UPDATES:
            raise ValueError(f"real_update must be one of {', '.join(REAL_UPDATES)}, got {self.real_update!r}")

    @property
    def steps_per_call(self) -> int:
        """Model updates per call of ``step``: 1, or the real steps of a ``Trajectory`` segment."""
        return max(self.estimator.real_steps, 1)

    @property
    def problem(self) -> Problem:
        """The bilevel problem the estimator differentiates."""
        return Problem(self.loss_fn, self.weighting, self.optimizer, self.normalize, self.real_update != "related")

    def weights(self, params: PyTree, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        """The ``(B,)`` weights of ``related_batch`` under ``meta_params`` for the model at ``params``."""
        return self.problem.weights(params, meta_params, related_batch)

    def init_weighting(self, params: PyTree, meta_params: PyTree) -> WeightingState:
        """The weighting's state for a model with ``params``."""
        return WeightingState(
            meta_params=meta_params,
            meta_opt_state=self.weighting.init_meta_opt_state(self.meta_optimizer, meta_params),
            estimator_state=self.estimator.init(params),
        )

    def init(self, params: PyTree, meta_params: PyTree) -> MetaState:
        return MetaState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.optimizer.init(params),
            weighting=self.init_weighting(params, meta_params),
        )

    def meta_gradient(
        self, state: MetaState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> MetaGradient:
        """The estimator's meta-gradient at ``state`` (outer loss, gradient, new estimator state, metrics)."""
        return self.estimator.meta_gradient(
            self.problem,
            state.params,
            state.opt_state,
            state.meta_params,
            state.weighting.estimator_state,
            target_batch,
            related_batch,
            outer_batch,
        )

    def meta_update(
        self,
        params: PyTree,
        opt_state: PyTree,
        weighting_state: WeightingState,
        target_batch: Batch,
        related_batch: Batch,
        outer_batch: Batch,
    ) -> tuple[WeightingState, jax.Array, dict[str, jax.Array]]:
        """Returns the new weighting state, the ``(B,)`` weights of the real update's related batch under it
        (no gradient flows through them) and the meta step's metrics."""
        estimate = self.estimator.meta_gradient(
            self.problem,
            params,
            opt_state,
            weighting_state.meta_params,
            weighting_state.estimator_state,
            target_batch,
            related_batch,
            outer_batch,
        )
        meta_params, meta_opt_state = self.weighting.apply_meta_update(
            self.meta_optimizer,
            estimate.grads,
            weighting_state.meta_opt_state,
            weighting_state.meta_params,
            self.estimator.meta_update_batch(related_batch),
        )
        _, real_related = self.estimator.real_batches(target_batch, related_batch)
        weights = jax.lax.stop_gradient(self.weights(params, meta_params, real_related))
        metrics = {
            "outer_loss": estimate.outer_loss,
            "mean_weight": pool_mean(weights, real_related),
            "meta_grad_norm": optax.tree.norm(estimate.grads),
            **estimate.metrics,
        }
        return WeightingState(meta_params, meta_opt_state, estimate.state), weights, metrics

    def model_update(
        self, params: PyTree, opt_state: PyTree, weights: jax.Array, target_batch: Batch, related_batch: Batch
    ) -> tuple[PyTree, PyTree, jax.Array]:
        """The real update (``real_update``) with the given weights; returns ``(params, opt_state, loss)``."""
        loss, grads = jax.value_and_grad(inner_objective, argnums=1)(
            self.loss_fn, params, weights, target_batch, related_batch, self.real_update == "joint", self.normalize
        )
        params, opt_state = optax_update(self.optimizer, grads, opt_state, params)
        if self.real_update == "alternate":
            target_loss, grads = jax.value_and_grad(mean_loss, argnums=1)(self.loss_fn, params, target_batch)
            params, opt_state = optax_update(self.optimizer, grads, opt_state, params)
            loss = loss + target_loss
        return params, opt_state, loss

    def step(
        self, state: MetaState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> tuple[MetaState, dict[str, jax.Array]]:
        if self.estimator.real_steps:
            return self.segment_step(state, target_batch, related_batch, outer_batch)
        weighting, weights, meta_metrics = self.meta_update(
            state.params, state.opt_state, state.weighting, target_batch, related_batch, outer_batch
        )
        target_batch, related_batch = self.estimator.real_batches(target_batch, related_batch)
        params, opt_state, loss = self.model_update(state.params, state.opt_state, weights, target_batch, related_batch)
        new_state = MetaState(step=state.step + 1, params=params, opt_state=opt_state, weighting=weighting)
        return new_state, {"train_loss": loss, **meta_metrics}

    def segment_step(
        self,
        state: MetaState,
        target_batches: Batch | BatchStack,
        related_batches: Batch | BatchStack,
        outer_batch: Batch,
    ) -> tuple[MetaState, dict[str, jax.Array]]:
        """``estimator.real_steps`` real updates (batch ``k`` of the stacks at update ``k``; ``metadial.stacks``),
        then one meta update with the gradient of the outer loss at the end through all of them
        (``metadial.estimators.Trajectory``)."""
        num_steps = self.estimator.real_steps
        check_stacked(num_steps, target_batches, related_batches)

        def one_step(carry, batches):
            params, opt_state, meta_params = carry
            target_batch, related_batch = batches
            weights = self.weights(params, meta_params, related_batch)
            params, opt_state, loss = self.model_update(params, opt_state, weights, target_batch, related_batch)
            return (params, opt_state, meta_params), (loss, pool_mean(weights, related_batch))

        if self.estimator.remat:
            one_step = jax.checkpoint(one_step)

        def outer_after_segment(meta_params):
            (params, opt_state, _), per_step = scan_stacks(
                one_step, (state.params, state.opt_state, meta_params), (target_batches, related_batches), num_steps
            )
            return self.problem.outer_loss(params, outer_batch), (params, opt_state, per_step)

        (outer, (params, opt_state, (losses, mean_weights))), grads = jax.value_and_grad(
            outer_after_segment, has_aux=True
        )(state.meta_params)
        meta_params, meta_opt_state = self.weighting.apply_meta_update(
            self.meta_optimizer,
            grads,
            state.weighting.meta_opt_state,
            state.meta_params,
            self.estimator.meta_update_batch(related_batches),
        )
        weighting = WeightingState(meta_params, meta_opt_state, state.weighting.estimator_state)
        new_state = MetaState(step=state.step + num_steps, params=params, opt_state=opt_state, weighting=weighting)
        metrics = {
            "train_loss": jnp.mean(losses),
            "outer_loss": outer,
            "mean_weight": jnp.mean(mean_weights),
            "meta_grad_norm": optax.tree.norm(grads),
        }
        return new_state, metrics

    def jit_step(self) -> Callable:
        return jax.jit(self.step)


class FrozenWeightingState(flax.struct.PyTreeNode):
    """Model parameters and optimizer state, and the weighting's parameters (held fixed)."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    meta_params: PyTree


@dataclasses.dataclass(frozen=True)
class FrozenWeighting:
    """Training with a weighting that no longer learns: each step is :meth:`MetaReweighting.model_update` with
    the related batch's weights under fixed ``meta_params`` (the weights a meta run learned). Used for a final
    fit of a fresh model on all the target data after a meta run whose outer loss held part of it out.

    ``FrozenWeighting.of(trainer)`` takes a :class:`MetaReweighting`'s loss, weighting, optimizer, real update
    and normalisation, so the weighted objective is the one the meta run trained its model on.
    """

    meta: MetaReweighting

    @classmethod
    def of(cls, trainer: MetaReweighting) -> FrozenWeighting:
        if not isinstance(trainer, MetaReweighting):
            raise TypeError(f"FrozenWeighting.of needs a MetaReweighting trainer, got {type(trainer).__name__}")
        return cls(trainer)

    steps_per_call = 1  # model updates per call of ``step``

    def init(self, params: PyTree, meta_params: PyTree) -> FrozenWeightingState:
        return FrozenWeightingState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.meta.optimizer.init(params),
            meta_params=meta_params,
        )

    def step(
        self, state: FrozenWeightingState, target_batch: Batch, related_batch: Batch
    ) -> tuple[FrozenWeightingState, dict[str, jax.Array]]:
        weights = jax.lax.stop_gradient(self.meta.weights(state.params, state.meta_params, related_batch))
        params, opt_state, loss = self.meta.model_update(
            state.params, state.opt_state, weights, target_batch, related_batch
        )
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, {"train_loss": loss, "mean_weight": pool_mean(weights, related_batch)}

    def jit_step(self) -> Callable:
        return jax.jit(self.step)


@dataclasses.dataclass(frozen=True)
class LearningToReweight:
    """Learning to reweight (Ren et al., 2018): fresh weights every step, no persistent meta-parameters.

    The weights are ``max(-g, 0)`` normalised to sum to 1 over the batch, where ``g`` is the gradient of
    the outer loss (target loss on ``outer_batch`` after one ``lookahead`` step on ``sum_i eps_i * l_i``)
    w.r.t. ``eps`` at ``eps = 0``. The default look-ahead is plain SGD, as in Ren et al.; after the
    normalisation its learning rate cancels, so the weights are the clipped, normalised alignments
    ``<grad outer loss, grad l_i>``. A look-ahead with global-norm clipping would differentiate a norm at
    exactly 0 (the gradient at ``eps = 0``) and give NaN, so it is not used by default.
    """

    loss_fn: LossFn
    optimizer: optax.GradientTransformation
    target_in_update: bool = True
    lookahead: optax.GradientTransformation = dataclasses.field(default_factory=lambda: optax.sgd(1.0))

    steps_per_call = 1  # model updates per call of ``step``

    def init(self, params: PyTree) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params))

    def example_weights(
        self, state: TrainState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> jax.Array:
        """Returns the ``(B,)`` weights of the related batch, non-negative, summing to 1 (or all 0)."""
        batch_size = jax.eval_shape(self.loss_fn, state.params, related_batch).shape[0]

        lookahead_state = self.lookahead.init(state.params)

        def outer(eps):
            params, _ = optimizer_steps(
                self.loss_fn,
                self.lookahead,
                state.params,
                lookahead_state,
                eps,
                target_batch,
                related_batch,
                num_steps=1,
                include_target=False,
                normalize=False,
            )
            return mean_loss(self.loss_fn, params, outer_batch)

        eps = jnp.zeros((batch_size,), jnp.result_type(float))
        raw = jnp.maximum(-jax.grad(outer)(eps), 0.0)
        total = jnp.sum(raw)
        return jnp.where(total > 0, raw / jnp.where(total > 0, total, 1.0), 0.0)

    def step(
        self, state: TrainState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        weights = jax.lax.stop_gradient(self.example_weights(state, target_batch, related_batch, outer_batch))

        def total_loss(params):
            # weights sum to 1 (or are all 0), so the weighted sum is already a weighted mean.
            loss = jnp.sum(weights * self.loss_fn(params, related_batch))
            if self.target_in_update:
                loss = loss + mean_loss(self.loss_fn, params, target_batch)
            return loss

        loss, grads = jax.value_and_grad(total_loss)(state.params)
        params, opt_state = optax_update(self.optimizer, grads, state.opt_state, state.params)
        new_state = TrainState(state.step + 1, params, opt_state)
        return new_state, {"train_loss": loss, "mean_weight": jnp.mean(weights), "grad_norm": optax.tree.norm(grads)}

    def jit_step(self) -> Callable:
        return jax.jit(self.step)
