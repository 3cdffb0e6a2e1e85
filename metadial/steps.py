"""Functional training steps: plain, meta-learned example weights, and learning-to-reweight.

The model is given only through ``loss_fn(params, batch) -> (B,)`` per-example losses, so the steps work
with any Flax/haiku/plain-JAX model. Every optimizer is an ``optax.GradientTransformation``.

Each class's ``step`` is a pure function of (state, batches); wrap it with ``jax.jit`` once (``jit_step``)
and call it every step: shapes are static, so it traces once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import optax

from metadial.optim import optax_update
from metadial.weighting import Batch, PyTree, Weighting

LossFn = Callable[[PyTree, Batch], jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """Model parameters and their optimizer state."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree


class MetaState(flax.struct.PyTreeNode):
    """Model and weighting parameters, both optimizer states."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    meta_params: PyTree
    meta_opt_state: PyTree


def weighted_mean(losses: jax.Array, weights: jax.Array, normalize: bool) -> jax.Array:
    """``mean(w * l)``, or ``sum(w * l) / sum(w)`` when ``normalize`` (as in learning-to-reweight)."""
    if normalize:
        return jnp.sum(weights * losses) / jnp.sum(weights)
    return jnp.mean(weights * losses)


def mean_loss(loss_fn: LossFn, params: PyTree, batch: Batch) -> jax.Array:
    return jnp.mean(loss_fn(params, batch))


def _check_losses(losses: jax.Array) -> None:
    if losses.ndim != 1:
        raise ValueError(f"loss_fn must return per-example losses of shape (B,), got shape {losses.shape}")


def inner_objective(
    loss_fn: LossFn,
    params: PyTree,
    weights: jax.Array,
    target_batch: Batch,
    related_batch: Batch,
    include_target: bool,
    normalize: bool,
) -> jax.Array:
    """The weighted related loss, plus the mean target loss when ``include_target``."""
    related_losses = loss_fn(params, related_batch)
    _check_losses(related_losses)
    loss = weighted_mean(related_losses, weights, normalize)
    if include_target:
        loss = loss + mean_loss(loss_fn, params, target_batch)
    return loss


def optimizer_steps(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    weights: jax.Array,
    target_batch: Batch,
    related_batch: Batch,
    *,
    num_steps: int = 1,
    include_target: bool = False,
    normalize: bool = False,
    remat: bool = False,
    stacked: bool = False,
) -> tuple[PyTree, PyTree]:
    """``num_steps`` optax updates on the inner objective, differentiable in ``weights``.

    By default every step uses the same batches and ``(B,)`` weights. With ``stacked``, ``weights`` is
    ``(num_steps, B)`` and every leaf of both batches has a leading ``num_steps`` axis: step ``k`` uses
    batch ``k``. ``remat`` recomputes each step's activations in the backward pass (``jax.checkpoint``)."""

    def one_step(carry, xs):
        p, s = carry
        w, t, r = xs
        grads = jax.grad(inner_objective, argnums=1)(loss_fn, p, w, t, r, include_target, normalize)
        return optax_update(optimizer, grads, s, p), None

    if remat:
        one_step = jax.checkpoint(one_step)
    if stacked:
        _check_stacked(num_steps, weights, target_batch, related_batch)
        (params, opt_state), _ = jax.lax.scan(
            one_step, (params, opt_state), (weights, target_batch, related_batch), length=num_steps
        )
        return params, opt_state
    same = lambda carry, _: one_step(carry, (weights, target_batch, related_batch))
    if num_steps == 1:
        (params, opt_state), _ = same((params, opt_state), None)
        return params, opt_state
    (params, opt_state), _ = jax.lax.scan(same, (params, opt_state), None, length=num_steps)
    return params, opt_state


def _check_stacked(num_steps: int, *trees: PyTree) -> None:
    for leaf in jax.tree.leaves(trees):
        if leaf.ndim == 0 or leaf.shape[0] != num_steps:
            raise ValueError(
                f"with fresh inner batches every batch leaf needs a leading axis of length "
                f"inner_steps={num_steps}, got a leaf of shape {leaf.shape}"
            )


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """Batches of equal shapes stacked along a new leading axis (the input of ``fresh_inner_batches``)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches)


def first_of_stack(batch: Batch) -> Batch:
    """Batch 0 of a stack of batches (leading axis)."""
    return jax.tree.map(lambda x: x[0], batch)


def merge_stack(batch: Batch) -> Batch:
    """A stack of ``K`` batches of ``B`` examples as one batch of ``K * B``."""
    return jax.tree.map(lambda x: jnp.reshape(x, (-1, *x.shape[2:])), batch)


@dataclasses.dataclass(frozen=True)
class PlainTrainer:
    """Unweighted training: the loss is the sum over the given batches of each batch's mean loss."""

    loss_fn: LossFn
    optimizer: optax.GradientTransformation

    def init(self, params: PyTree) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params))

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


@dataclasses.dataclass(frozen=True)
class MetaReweighting:
    """Meta-learned per-example weights of the related task (one step = meta update + model update).

    Each ``step(state, target_batch, related_batch, outer_batch)``:

    1. simulates ``inner_steps`` optax updates of the model on ``w * related loss`` (plus the target loss
       if ``target_in_inner``), with ``w = weighting.weights(meta_params, related_batch)``;
    2. takes the outer loss = mean target loss on ``outer_batch`` at the simulated parameters, and its exact
       (second-order) gradient w.r.t. the meta-parameters through the optax updates;
    3. updates the meta-parameters with ``meta_optimizer`` (via the weighting scheme);
    4. makes the model's real update with the new weights on the weighted related loss, plus the target
       loss if ``target_in_update``; with ``separate_target_step`` (the authors' research code) the real
       update is on the weighted related loss alone and is followed by a second optax update on the mean
       target loss of ``target_batch`` (``target_in_update`` is then ignored).

    With ``fresh_inner_batches`` the look-ahead runs over ``inner_steps`` different batches instead of
    repeating one: ``target_batch`` and ``related_batch`` then carry a leading ``inner_steps`` axis,
    simulated step ``k`` uses batch ``k`` (weighted by the weights of its own related batch), and the real
    update (4.) uses batch 0 only.

    With Adam as the inner optimizer, use ``eps_root > 0`` (e.g. ``optax.adam(lr, eps_root=1e-8)``):
    ``sqrt`` has an infinite derivative at 0, so parameters with zero gradient make NaN meta-gradients.
    """

    loss_fn: LossFn
    weighting: Weighting
    optimizer: optax.GradientTransformation
    meta_optimizer: optax.GradientTransformation
    inner_steps: int = 1
    target_in_inner: bool = False
    target_in_update: bool = True
    normalize: bool = False
    remat: bool = False
    separate_target_step: bool = False
    fresh_inner_batches: bool = False

    def __post_init__(self):
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")

    def init(self, params: PyTree, meta_params: PyTree) -> MetaState:
        return MetaState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.optimizer.init(params),
            meta_params=meta_params,
            meta_opt_state=self.weighting.init_meta_opt_state(self.meta_optimizer, meta_params),
        )

    def outer_loss(
        self, meta_params: PyTree, state: MetaState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> jax.Array:
        """Mean target loss on ``outer_batch`` after the simulated inner update(s)."""
        if self.fresh_inner_batches:
            _check_stacked(self.inner_steps, target_batch, related_batch)
            weights = jax.vmap(self.weighting.weights, in_axes=(None, 0))(meta_params, related_batch)
        else:
            weights = self.weighting.weights(meta_params, related_batch)
        params, _ = optimizer_steps(
            self.loss_fn,
            self.optimizer,
            state.params,
            state.opt_state,
            weights,
            target_batch,
            related_batch,
            num_steps=self.inner_steps,
            include_target=self.target_in_inner,
            normalize=self.normalize,
            remat=self.remat,
            stacked=self.fresh_inner_batches,
        )
        return mean_loss(self.loss_fn, params, outer_batch)

    def meta_gradient(
        self, state: MetaState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> tuple[jax.Array, PyTree]:
        """Returns ``(outer loss, d outer loss / d meta_params)``."""
        return jax.value_and_grad(self.outer_loss)(state.meta_params, state, target_batch, related_batch, outer_batch)

    def step(
        self, state: MetaState, target_batch: Batch, related_batch: Batch, outer_batch: Batch
    ) -> tuple[MetaState, dict[str, jax.Array]]:
        outer, meta_grads = self.meta_gradient(state, target_batch, related_batch, outer_batch)
        meta_params, meta_opt_state = self.weighting.apply_meta_update(
            self.meta_optimizer,
            meta_grads,
            state.meta_opt_state,
            state.meta_params,
            merge_stack(related_batch) if self.fresh_inner_batches else related_batch,
        )
        if self.fresh_inner_batches:
            target_batch, related_batch = first_of_stack(target_batch), first_of_stack(related_batch)
        weights = jax.lax.stop_gradient(self.weighting.weights(meta_params, related_batch))
        loss, grads = jax.value_and_grad(inner_objective, argnums=1)(
            self.loss_fn,
            state.params,
            weights,
            target_batch,
            related_batch,
            self.target_in_update and not self.separate_target_step,
            self.normalize,
        )
        params, opt_state = optax_update(self.optimizer, grads, state.opt_state, state.params)
        if self.separate_target_step:
            target_loss, grads = jax.value_and_grad(mean_loss, argnums=1)(self.loss_fn, params, target_batch)
            params, opt_state = optax_update(self.optimizer, grads, opt_state, params)
            loss = loss + target_loss
        new_state = MetaState(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            meta_params=meta_params,
            meta_opt_state=meta_opt_state,
        )
        metrics = {
            "train_loss": loss,
            "outer_loss": outer,
            "mean_weight": jnp.mean(weights),
            "meta_grad_norm": optax.tree.norm(meta_grads),
        }
        return new_state, metrics

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
