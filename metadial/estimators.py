"""How the meta-gradient of the weighting parameters is estimated: one class per estimator, one interface.

A meta step (``metadial.steps.MetaReweighting``) differentiates a *target* loss on an outer batch with respect
to the weighting parameters ``lam`` through the model's training on the weighted *inner* objective

    G(theta, lam) = weighted related loss (w = sigmoid(scores(lam))) [+ mean target loss].

Estimators differ in how far ahead they look:

* :class:`Lookahead` simulates ``K`` optax updates of the model from its current parameters and
  differentiates the outer loss at the simulated parameters exactly (second order, through the optimizer).
  Its horizon is ``K`` steps.
* :class:`Trajectory` runs ``T`` real training steps in one jitted segment and differentiates the outer loss at
  its end through them; the weighting is updated once per segment. Its horizon is ``T`` real steps.
* :class:`Implicit` estimates the hypergradient at the inner problem's *solution* by the implicit function
  theorem, online (SOBA, Dagréou et al., 2022): a parameter-shaped vector ``v`` is moved one step per meta
  step towards the solution of ``(H + damping I) v = grad_theta F``, ``H`` the Hessian of ``G`` in theta, and
  the meta-gradient is ``-d/d lam <grad_theta G(theta, lam), v>``. Its horizon is the whole run.

Every estimator has ``init(params) -> state`` (its own state, carried between steps) and
``meta_gradient(problem, params, opt_state, meta_params, state, target, related, outer)``
returning a :class:`MetaGradient`. Batches for the real update and for the weighting's meta update come from
``real_batches`` and ``meta_update_batch`` (a look-ahead over fresh batches takes stacked batches).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from metadial.losses import OutputLoss
from metadial.optim import optax_update
from metadial.sampling import importance_corrected
from metadial.stacks import BatchStack, check_stacked, first_of_stack, map_stack, merge_stack, scan_stacks
from metadial.weighting import Batch, PyTree, Weighting, with_losses

LossFn = Callable[[PyTree, Batch], jax.Array]


def weighted_mean(losses: jax.Array, weights: jax.Array, normalize: bool) -> jax.Array:
    """``mean(w * l)``, or ``sum(w * l) / sum(w)`` when ``normalize`` (as in learning-to-reweight)."""
    if normalize:
        return jnp.sum(weights * losses) / jnp.sum(weights)
    return jnp.mean(weights * losses)


def mean_loss(loss_fn: LossFn, params: PyTree, batch: Batch) -> jax.Array:
    """The mean of ``loss_fn``'s per-example losses on ``batch``."""
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
    """The weighted related loss, plus the mean target loss when ``include_target``. A related batch drawn by
    weight (``metadial.sampling``) carries importance factors under ``IMPORTANCE``; they multiply the weights."""
    # related losses traced first: the order fixes XLA's floating-point results, so runs reproduce bit for bit
    related_losses = loss_fn(params, related_batch)
    target_losses = loss_fn(params, target_batch) if include_target else None
    return combine_losses(related_losses, target_losses, weights, related_batch, normalize)


def combine_losses(
    related_losses: jax.Array,
    target_losses: jax.Array | None,
    weights: jax.Array,
    related_batch: Batch,
    normalize: bool,
) -> jax.Array:
    """``inner_objective`` from the per-example losses: the weighted related loss (weights times the batch's
    importance factors, if any), plus the mean target loss unless ``target_losses`` is None."""
    _check_losses(related_losses)
    loss = weighted_mean(related_losses, importance_corrected(weights, related_batch), normalize)
    if target_losses is not None:
        loss = loss + jnp.mean(target_losses)
    return loss


def gauss_newton_product(
    loss_fn: OutputLoss,
    params: PyTree,
    weights: jax.Array,
    target_batch: Batch,
    related_batch: Batch,
    include_target: bool,
    normalize: bool,
    vector: PyTree,
) -> PyTree:
    """``J' H_o J vector``: the Gauss-Newton matrix of ``inner_objective`` (weights held fixed) times ``vector``,
    ``J`` the Jacobian of the model's outputs in ``params`` and ``H_o`` the Hessian of the objective in the
    outputs. Positive semi-definite where the loss is convex in the outputs (cross-entropy on logits) and the
    weights are non-negative; it drops the Hessian's term ``sum dL/do d2o/dparams2``, which makes it indefinite."""
    batches = (related_batch, target_batch) if include_target else (related_batch,)

    def outputs(p):
        return tuple(loss_fn.outputs(p, b) for b in batches)

    def objective(outs):
        losses = [loss_fn.loss(o, b) for o, b in zip(outs, batches)]
        return combine_losses(losses[0], losses[1] if include_target else None, weights, related_batch, normalize)

    outs, jvp = jax.linearize(outputs, params)
    _, h_jv = jax.jvp(jax.grad(objective), (outs,), (jvp(vector),))
    (product,) = jax.linear_transpose(jvp, params)(h_jv)
    return product


@dataclasses.dataclass(frozen=True)
class Problem:
    """What an estimator differentiates: the model's loss, the weighting, the model's optimizer, and how the
    weighted objective is formed (``normalize``: weighted mean by the weights' sum; ``target_in_training``:
    whether the model's real updates also see the target batch)."""

    loss_fn: LossFn
    weighting: Weighting
    optimizer: optax.GradientTransformation
    normalize: bool = False
    target_in_training: bool = True

    def weights(self, params: PyTree, meta_params: PyTree, related_batch: Batch) -> jax.Array:
        """The ``(B,)`` weights of ``related_batch`` under ``meta_params`` for the model at ``params`` (a weighting
        that reads losses gets them at ``params``)."""
        return self.weighting.weights(meta_params, with_losses(self.weighting, self.loss_fn, params, related_batch))

    def objective(
        self, params: PyTree, meta_params: PyTree, target_batch: Batch, related_batch: Batch, include_target: bool
    ) -> jax.Array:
        """The weighted inner objective at ``params`` with the weights of ``meta_params`` (held constant in
        ``params``: a weighting that reads losses reads them at ``params`` without a gradient through them)."""
        weights = self.weights(jax.lax.stop_gradient(params), meta_params, related_batch)
        return inner_objective(
            self.loss_fn, params, weights, target_batch, related_batch, include_target, self.normalize
        )

    def outer_loss(self, params: PyTree, outer_batch: Batch) -> jax.Array:
        """The mean target loss on the outer batch."""
        return mean_loss(self.loss_fn, params, outer_batch)


class MetaGradient(flax.struct.PyTreeNode):
    """An estimator's answer: the outer loss, ``d outer / d meta_params``, its new state and its metrics."""

    outer_loss: jax.Array
    grads: PyTree
    state: PyTree
    metrics: dict[str, jax.Array]


class Estimator(abc.ABC):
    """Estimates the meta-gradient of the weighting parameters (see the module docstring)."""

    # > 0: the estimator differentiates through this many *real* steps, so one call of the step makes that many
    # model updates (on batches stacked along a leading axis) and one meta update (``Trajectory``)
    real_steps: int = 0
    # whether the steps the estimator differentiates through recompute their activations in the backward pass
    # (``jax.checkpoint``): less memory, more time
    remat: bool = False

    def init(self, params: PyTree) -> PyTree:
        """The estimator's state for a model with ``params`` (carried from step to step)."""
        del params
        return ()

    @abc.abstractmethod
    def meta_gradient(
        self,
        problem: Problem,
        params: PyTree,
        opt_state: PyTree,
        meta_params: PyTree,
        state: PyTree,
        target_batch: Batch,
        related_batch: Batch,
        outer_batch: Batch,
    ) -> MetaGradient:
        """The meta-gradient at the model's current ``params`` (and optimizer state)."""

    def real_batches(self, target_batch: Batch | BatchStack, related_batch: Batch | BatchStack) -> tuple[Batch, Batch]:
        """The batches of the model's real update, from the batches the step was given (by default, those)."""
        return as_batch(target_batch), as_batch(related_batch)

    def meta_update_batch(self, related_batch: Batch | BatchStack) -> Batch:
        """The related batch whose weighting parameters the meta update touches (the table's rows)."""
        return as_batch(related_batch)


def as_batch(batch: Batch | BatchStack) -> Batch:
    """``batch``, which must be a plain batch here, not a :class:`metadial.stacks.BatchStack`."""
    if isinstance(batch, BatchStack):
        raise TypeError("this estimator takes one batch per step, got a BatchStack (for stacked estimators only)")
    return batch


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
    ``(num_steps, B)`` and both batches are stacks of ``num_steps`` batches (``metadial.stacks``): step ``k``
    uses batch ``k``. ``remat`` recomputes each step's activations in the backward pass (``jax.checkpoint``)."""

    def one_step(carry, xs):
        p, s = carry
        w, t, r = xs
        grads = jax.grad(inner_objective, argnums=1)(loss_fn, p, w, t, r, include_target, normalize)
        return optax_update(optimizer, grads, s, p), None

    if remat:
        one_step = jax.checkpoint(one_step)
    if stacked:
        check_stacked(num_steps, weights, target_batch, related_batch)
        (params, opt_state), _ = scan_stacks(
            one_step, (params, opt_state), (weights, target_batch, related_batch), num_steps
        )
        return params, opt_state
    same = lambda carry, _: one_step(carry, (weights, target_batch, related_batch))
    if num_steps == 1:
        (params, opt_state), _ = same((params, opt_state), None)
        return params, opt_state
    (params, opt_state), _ = jax.lax.scan(same, (params, opt_state), None, length=num_steps)
    return params, opt_state


@dataclasses.dataclass(frozen=True)
class Lookahead(Estimator):
    """``inner_steps`` simulated optax updates, differentiated exactly (a horizon of ``inner_steps`` steps).

    The simulated updates minimise the weighted related loss, plus the target loss when ``include_target``.
    With ``fresh_batches`` the simulated steps run over ``inner_steps`` different batches instead of repeating
    one: the target and related batches then carry a leading ``inner_steps`` axis, simulated step ``k`` uses
    batch ``k``, the real update uses batch 0 and a table's meta update touches the rows of all of them.
    ``remat`` recomputes each simulated step's activations in the backward pass (less memory, more time).

    With Adam as the inner optimizer, use ``eps_root > 0`` (e.g. ``optax.adam(lr, eps_root=1e-8)``): ``sqrt``
    has an infinite derivative at 0, so parameters with zero gradient make NaN meta-gradients.
    """

    inner_steps: int = 1
    include_target: bool = False
    fresh_batches: bool = False
    remat: bool = False

    def __post_init__(self):
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")

    def outer_loss(
        self,
        problem: Problem,
        params: PyTree,
        opt_state: PyTree,
        meta_params: PyTree,
        target_batch: Batch,
        related_batch: Batch,
        outer_batch: Batch,
    ) -> jax.Array:
        """The outer loss after the simulated updates, as a function of ``meta_params``."""
        if self.fresh_batches:
            check_stacked(self.inner_steps, target_batch, related_batch)
            weights = map_stack(lambda batch: problem.weights(params, meta_params, batch), related_batch)
        else:
            weights = problem.weights(params, meta_params, related_batch)
        params, _ = optimizer_steps(
            problem.loss_fn,
            problem.optimizer,
            params,
            opt_state,
            weights,
            target_batch,
            related_batch,
            num_steps=self.inner_steps,
            include_target=self.include_target,
            normalize=problem.normalize,
            remat=self.remat,
            stacked=self.fresh_batches,
        )
        return problem.outer_loss(params, outer_batch)

    def meta_gradient(self, problem, params, opt_state, meta_params, state, target_batch, related_batch, outer_batch):
        outer, grads = jax.value_and_grad(self.outer_loss, argnums=3)(
            problem, params, opt_state, meta_params, target_batch, related_batch, outer_batch
        )
        return MetaGradient(outer, grads, state, {})

    def real_batches(self, target_batch, related_batch):
        if self.fresh_batches:
            return first_of_stack(target_batch), first_of_stack(related_batch)
        return target_batch, related_batch

    def meta_update_batch(self, related_batch):
        return merge_stack(related_batch) if self.fresh_batches else related_batch


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The inner product of two pytrees of the same structure."""
    products = [jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return jnp.sum(jnp.stack(products))


class ImplicitState(flax.struct.PyTreeNode):
    """``Implicit``'s state: ``v`` (parameter-shaped) and the largest curvature along ``v`` seen so far."""

    v: PyTree
    curvature: jax.Array


class MirroredImplicitState(ImplicitState):
    """``Implicit(mirror_negative=True)``'s state: also the most negative curvature of ``H`` along ``v`` seen so
    far, as a magnitude (0 until one is negative)."""

    negative: jax.Array


@dataclasses.dataclass(frozen=True)
class Implicit(Estimator):
    """Online implicit differentiation (SOBA; Dagréou et al., NeurIPS 2022): the hypergradient at the solution
    of the inner problem, so a horizon of the whole run.

    The state is a parameter-shaped vector ``v``. Each meta step, at the model's current parameters ``theta``
    and with ``G`` the inner objective of the real updates (weighted related loss, plus the target loss if the
    real updates include it) and ``F`` the outer loss:

    * the meta-gradient is ``-d/d lam <grad_theta G(theta, lam), v>`` (with the current ``v``);
    * ``v <- v - learning_rate * ((H + damping I) v - grad_theta F)``, ``H = d^2 G / d theta^2``: one gradient
      step on ``1/2 v' (H + damping I) v - v' grad_theta F``, whose minimum is ``(H + damping I)^-1 grad F``.

    Both come from one reverse-over-reverse pass of ``<grad_theta G, v>`` (its theta-gradient is ``H v``).

    It assumes what the implicit function theorem needs: the model's training drives ``theta`` close to a
    stationary point of ``G`` for the current weights (with any optimizer) where ``H`` is positive definite,
    and the weights move slowly compared with ``theta`` and ``v``. ``damping`` keeps the linear system well
    posed where ``H`` is singular or indefinite (neural networks); the step of ``v`` must stay below
    ``2 / (largest eigenvalue of H + damping)`` or ``v`` diverges. A network's curvature grows as it trains (on
    the dialog model ``v`` diverged within 1300 steps at 0.005), so with ``cap_step`` (the default) the step is
    ``min(learning_rate, 1 / rho)``, ``rho = v' (H + damping I) v / v' v`` the curvature along ``v`` (free: ``H v`` is
    computed anyway), or rather the largest ``rho`` seen so far (kept in the state): a component of ``v`` that
    starts to diverge comes to dominate ``v``, ``rho`` then approaches the top eigenvalue, and from then on the step
    stays below the stability limit. Until ``rho`` has been positive the step is ``learning_rate``.

    The cap does nothing for *negative* curvature, where ``H + damping I`` is indefinite: along an eigenvector of
    ``H`` with eigenvalue ``mu < -damping`` the iteration multiplies ``v`` by ``1 + step |mu + damping|`` every step,
    whatever the step. On the dialog model with the outer loss on a held-out fold ``v`` grew from 1 to 1e13 within
    12k steps this way. With ``mirror_negative`` the damping becomes ``damping + 2 n``, ``n`` the largest ``-v' H v
    / v' v`` seen so far (kept in the state): once a negative direction dominates ``v``, ``n`` approaches ``|mu|``
    and that direction then decays as a direction of curvature ``|mu|`` would (the damping mirrors it), so ``v``
    stays bounded. The price: every positive direction is damped by ``2 n`` as well, so ``v`` solves a more
    heavily damped system, whose answer leans towards the outer gradient itself (a shorter horizon). On the dialog
    model the damping so found grew past 1e6 (the Hessian along the held-out gradient is that negative).

    With ``gauss_newton``, ``H`` is the Gauss-Newton matrix ``J' H_o J`` instead (``gauss_newton_product``; the
    model's ``loss_fn`` must be an ``OutputLoss``, so the outputs are known): positive semi-definite for a loss
    convex in the outputs, so ``damping`` alone keeps the system well posed and the step cap keeps ``v`` stable.
    It is the Hessian without the term weighted by the loss's gradient in the outputs, which vanishes where the
    model fits its training examples: the usual stand-in for ``H`` in implicit differentiation of neural networks
    (as in influence functions). The meta-gradient keeps the exact mixed derivative.
    """

    learning_rate: float = 0.005
    damping: float = 0.01
    cap_step: bool = True
    mirror_negative: bool = False
    gauss_newton: bool = False

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"Implicit.learning_rate must be positive, got {self.learning_rate}")
        if self.damping < 0:
            raise ValueError(f"Implicit.damping must be >= 0, got {self.damping}")

    def init(self, params: PyTree) -> ImplicitState:
        dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else jnp.float32
        v, zero = jax.tree.map(jnp.zeros_like, params), jnp.zeros((), dtype)
        return MirroredImplicitState(v, zero, zero) if self.mirror_negative else ImplicitState(v, zero)

    def meta_gradient(self, problem, params, opt_state, meta_params, state, target_batch, related_batch, outer_batch):
        del opt_state
        v, curvature = state.v, state.curvature
        outer, outer_grads = jax.value_and_grad(problem.outer_loss)(params, outer_batch)

        def contracted(p, m):
            grads = jax.grad(problem.objective)(p, m, target_batch, related_batch, problem.target_in_training)
            return tree_vdot(grads, v)

        if self.gauss_newton:
            hv, mixed = self._gauss_newton(problem, params, meta_params, v, target_batch, related_batch)
        else:
            hv, mixed = jax.grad(contracted, argnums=(0, 1))(params, meta_params)
        vv, vhv = tree_vdot(v, v), tree_vdot(v, hv)
        safe_vv = jnp.where(vv > 0, vv, 1.0)
        damping, metrics = self.damping, {}
        if isinstance(state, MirroredImplicitState):
            along_v = jnp.where(vv > 0, vhv / safe_vv, 0.0)  # the curvature of H along v
            negative = jnp.maximum(state.negative, -along_v).astype(state.negative.dtype)
            damping = self.damping + 2.0 * negative
            metrics["v_damping"] = damping
        residual = jax.tree.map(lambda h, x, g: h + damping * x - g, hv, v, outer_grads)
        step = self.learning_rate
        if self.cap_step:
            rho = (vhv + damping * vv) / safe_vv
            curvature = jnp.maximum(curvature, jnp.where(vv > 0, rho, 0.0)).astype(curvature.dtype)
            step = jnp.where(curvature > 0, jnp.minimum(self.learning_rate, 1.0 / jnp.maximum(curvature, 1e-30)), step)
            metrics.update(v_curvature=curvature, v_step=step)
        new_v = jax.tree.map(lambda x, r: x - step * r, v, residual)
        grads = jax.tree.map(jnp.negative, mixed)
        metrics = {"v_norm": optax.tree.norm(v), "v_residual_norm": optax.tree.norm(residual), **metrics}
        if isinstance(state, MirroredImplicitState):
            return MetaGradient(outer, grads, MirroredImplicitState(new_v, curvature, negative), metrics)
        return MetaGradient(outer, grads, ImplicitState(new_v, curvature), metrics)

    @staticmethod
    def _gauss_newton(problem, params, meta_params, v, target_batch, related_batch) -> tuple[PyTree, PyTree]:
        """``(G v, d/d lam <grad_theta G, v>)`` with ``G`` the Gauss-Newton matrix of the inner objective."""
        if not isinstance(problem.loss_fn, OutputLoss):
            raise TypeError(
                "Implicit(gauss_newton=True) needs the model's loss as a metadial.losses.OutputLoss (outputs, then a "
                f"loss convex in them), got {type(problem.loss_fn).__name__}"
            )
        include = problem.target_in_training
        weights = problem.weights(jax.lax.stop_gradient(params), meta_params, related_batch)
        product = gauss_newton_product(
            problem.loss_fn, params, weights, target_batch, related_batch, include, problem.normalize, v
        )

        def directional(m):  # <grad_theta G(theta, m), v>, forward mode in theta
            return jax.jvp(lambda p: problem.objective(p, m, target_batch, related_batch, include), (params,), (v,))[1]

        return product, jax.grad(directional)(meta_params)


@dataclasses.dataclass(frozen=True)
class Trajectory(Estimator):
    """The meta-gradient through the last ``real_steps`` *real* training steps (a horizon of ``real_steps``).

    One call of ``MetaReweighting.step`` takes target and related batches stacked along a leading axis of
    length ``real_steps`` (and one outer batch), makes that many real model updates inside one ``lax.scan``
    with the weights of the current weighting parameters, differentiates the outer loss at the segment's end
    with respect to those parameters through all of the updates, and updates them once. With ``remat`` (the
    default) each step's activations are recomputed in the backward pass, so memory grows with
    ``real_steps`` only by one copy of the parameters and optimizer state per step.
    """

    real_steps: int = 100
    remat: bool = True

    def __post_init__(self):
        if self.real_steps < 1:
            raise ValueError(f"Trajectory.real_steps must be >= 1, got {self.real_steps}")

    def meta_gradient(self, problem, params, opt_state, meta_params, state, target_batch, related_batch, outer_batch):
        raise NotImplementedError(
            "Trajectory differentiates through the real updates themselves: call MetaReweighting.step with "
            f"target and related batches stacked along a leading axis of real_steps={self.real_steps}"
        )

    def meta_update_batch(self, related_batch):
        return merge_stack(related_batch)
