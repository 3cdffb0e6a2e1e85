"""Meta-gradient estimators (metadial/estimators.py) against exact answers on a weighted ridge regression."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from metadial import MetaReweighting, MLPScorer, NetWeighting, TableWeighting
from metadial.estimators import Implicit, Lookahead, Trajectory, gauss_newton_product, inner_objective
from metadial.losses import OutputLoss, cross_entropy
from metadial.models.mlp import MLPClassifier, classification_loss_fn
from metadial.sampling import IMPORTANCE
from metadial.steps import stack_batches
from metadial.weighting import MetaWeightNet
from tests import tiny
from tests.test_meta_gradient import KINDS, central_difference, rel_err, setup

NUM_FEATURES, NUM_RELATED, NUM_TARGET = 3, 12, 8


def squared_error(params, batch):
    """Per-example 0.5 (x.w + b - y)^2: a linear model, so the inner problem has a closed-form solution."""
    return 0.5 * (batch["x"] @ params["w"] + params["b"] - batch["y"]) ** 2


def regression_batches():
    """Target, related and outer batches of a linear teacher; the related labels of a second teacher."""
    keys = jax.random.split(jax.random.key(0), 7)
    teacher, other = jax.random.normal(keys[0], (NUM_FEATURES,)), jax.random.normal(keys[1], (NUM_FEATURES,))

    def batch(key, noise_key, n, w):
        x = jax.random.normal(key, (n, NUM_FEATURES))
        return {"x": x, "y": x @ w + 0.1 * jax.random.normal(noise_key, (n,)), "id": jnp.arange(n)}

    return (
        batch(keys[2], keys[3], NUM_TARGET, teacher),
        batch(keys[4], keys[5], NUM_RELATED, other),
        batch(keys[6], keys[2], NUM_TARGET, teacher),
    )


def design(batch):
    return jnp.concatenate([batch["x"], jnp.ones((batch["x"].shape[0], 1))], axis=1)


def exact_hypergradient(weighting, meta_params, target, related, outer):
    """d F(theta*(lam)) / d lam, with theta* the closed-form minimiser of the weighted least squares
    ``mean_r(w * l) + mean_t(l)`` and F the outer batch's mean loss."""

    def outer_at_solution(m):
        w = weighting.weights(m, related)
        a_r, a_t = design(related), design(target)
        lhs = a_r.T @ (a_r * (w / NUM_RELATED)[:, None]) + a_t.T @ a_t / NUM_TARGET
        rhs = a_r.T @ (w * related["y"]) / NUM_RELATED + a_t.T @ target["y"] / NUM_TARGET
        theta = jnp.linalg.solve(lhs, rhs)
        return jnp.mean(squared_error({"w": theta[:-1], "b": theta[-1]}, outer))

    return jax.grad(outer_at_solution)(meta_params)


WEIGHTINGS = {
    "table": lambda: TableWeighting(NUM_RELATED),
    "mwnet": lambda: MetaWeightNet((4,)),
    "net": lambda: NetWeighting(MLPScorer(hidden_sizes=(4,)), lambda b: jnp.concatenate([b["x"], b["y"][:, None]], -1)),
}


# the same loss with its outputs apart: for a linear model and a squared error, Gauss-Newton is the Hessian
LINEAR_SQUARED_ERROR = OutputLoss(
    lambda params, batch: batch["x"] @ params["w"] + params["b"], lambda out, batch: 0.5 * (out - batch["y"]) ** 2
)


@pytest.mark.parametrize("gauss_newton", [False, True], ids=["hessian", "gauss_newton"])
@pytest.mark.parametrize("kind", ["table", "net"])
def test_implicit_converges_to_the_implicit_function_theorem_hypergradient(kind, gauss_newton):
    """Weights held fixed (meta learning rate 0), full batches: the model converges to the inner solution, v to
    H^-1 grad F, and the estimate to the exact hypergradient (Gauss-Newton: the same, as the model is linear)."""
    with jax.enable_x64(True):
        target, related, outer = regression_batches()
        weighting = WEIGHTINGS[kind]()
        meta_params = jax.tree.map(lambda a: a.astype(jnp.float64), weighting.init(jax.random.key(1), related))
        if kind == "table":
            meta_params = jax.random.normal(jax.random.key(2), (NUM_RELATED,))
        learner = MetaReweighting(
            LINEAR_SQUARED_ERROR if gauss_newton else squared_error,
            weighting,
            optax.sgd(0.3),
            optax.sgd(0.0),
            estimator=Implicit(learning_rate=0.3, damping=0.0, gauss_newton=gauss_newton),
        )
        params = {"w": jnp.zeros(NUM_FEATURES), "b": jnp.zeros(())}
        state = learner.init(params, meta_params)
        step = jax.jit(learner.step)
        for _ in range(3000):
            state, metrics = step(state, target, related, outer)
        estimate = jax.jit(learner.meta_gradient)(state, target, related, outer).grads
        exact = exact_hypergradient(weighting, meta_params, target, related, outer)
        got, want = ravel_pytree(estimate)[0], ravel_pytree(exact)[0]
        assert np.linalg.norm(want) > 1e-3
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-3
        assert float(metrics["v_residual_norm"]) < 1e-8


def test_implicit_damping_solves_the_damped_system():
    """After convergence v solves (H + damping I) v = grad F at the current parameters."""
    with jax.enable_x64(True):
        target, related, outer = regression_batches()
        weighting = TableWeighting(NUM_RELATED)
        learner = MetaReweighting(
            squared_error, weighting, optax.sgd(0.0), optax.sgd(0.0), estimator=Implicit(0.3, damping=0.5)
        )
        params = {"w": jnp.ones(NUM_FEATURES), "b": jnp.ones(())}
        state = learner.init(params, jnp.zeros(NUM_RELATED))
        step = jax.jit(learner.step)
        for _ in range(500):
            state, _ = step(state, target, related, outer)
        flat, unravel = ravel_pytree(params)
        objective = lambda p: learner.problem.objective(unravel(p), state.meta_params, target, related, True)
        hessian = jax.hessian(objective)(flat)
        grad_outer = jax.grad(lambda p: learner.problem.outer_loss(unravel(p), outer))(flat)
        v = ravel_pytree(state.weighting.estimator_state.v)[0]
        np.testing.assert_allclose(v, np.linalg.solve(hessian + 0.5 * np.eye(flat.size), grad_outer), rtol=1e-9)


@pytest.mark.parametrize("kind", ["net", "mwnet"])
@pytest.mark.parametrize(
    "estimator", [Lookahead(2), Implicit(), Trajectory(3)], ids=["lookahead", "implicit", "trajectory"]
)
def test_every_estimator_traces_once(estimator, kind):
    traces = []

    def counting_loss(params, batch):
        traces.append(1)
        return squared_error(params, batch)

    target, related, outer = regression_batches()
    weighting = WEIGHTINGS[kind]()
    learner = MetaReweighting(
        counting_loss, weighting, optax.adam(0.1, eps_root=1e-8), optax.adam(0.01), estimator=estimator
    )
    params = {"w": jnp.zeros(NUM_FEATURES), "b": jnp.zeros(())}
    state = learner.init(params, weighting.init(jax.random.key(1), related))
    if estimator.real_steps:  # a segment of real steps takes stacked batches
        target, related = (
            stack_batches([target] * estimator.real_steps),
            stack_batches([related] * estimator.real_steps),
        )
    step = learner.jit_step()
    state, _ = step(state, target, related, outer)
    after_first = len(traces)
    for _ in range(4):
        state, metrics = step(state, target, related, outer)
    assert len(traces) == after_first > 0
    assert int(state.step) == 5 * max(estimator.real_steps, 1) and np.isfinite(float(metrics["meta_grad_norm"]))


def test_implicit_settings_are_checked():
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        Implicit(learning_rate=0.0)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        Implicit(damping=-0.1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_trajectory_meta_gradient_matches_finite_differences_through_five_real_steps(kind, optimizer_name):
    """The step's meta-gradient is d/dlam of the outer loss after T = 5 real updates with the weights of lam,
    and its new parameters are those 5 ordinary updates with the weights held fixed."""
    num_steps = 5
    with jax.enable_x64(True):
        learner, state, (_, _, outer) = setup(kind, optimizer_name, 1)
        learner = dataclasses.replace(learner, estimator=Trajectory(num_steps))
        pairs = [tiny.make_batches(10 + k)[:2] for k in range(num_steps)]
        targets, relateds = stack_batches([t for t, _ in pairs]), stack_batches([r for _, r in pairs])
        new_state, metrics = jax.jit(learner.step)(state, targets, relateds, outer)  # meta optimizer: sgd(1.0)
        step_grad = -(ravel_pytree(new_state.meta_params)[0] - ravel_pytree(state.meta_params)[0])

        def outer_after(meta_params, params=state.params, opt_state=state.opt_state):
            for t, r in pairs:
                w = learner.weights(params, meta_params, r)
                params, opt_state, _ = learner.model_update(params, opt_state, w, t, r)
            return learner.problem.outer_loss(params, outer)

        fd = central_difference(outer_after, state.meta_params)
        assert np.abs(fd).max() > 1e-6
        assert rel_err(step_grad, fd) <= 1e-4
        np.testing.assert_allclose(float(metrics["outer_loss"]), float(outer_after(state.meta_params)), rtol=1e-12)
        params, opt_state = state.params, state.opt_state
        for t, r in pairs:
            w = learner.weights(params, state.meta_params, r)
            params, opt_state, _ = learner.model_update(params, opt_state, w, t, r)
        tiny.assert_trees_close((new_state.params, new_state.opt_state), (params, opt_state), rtol=1e-10, atol=1e-12)
        assert int(new_state.step) == int(state.step) + num_steps


def test_trajectory_needs_stacked_batches_and_has_no_per_step_meta_update():
    with jax.enable_x64(True):
        learner, state, (target, related, outer) = setup("net", "sgd", 1)
    learner = dataclasses.replace(learner, estimator=Trajectory(3))
    with pytest.raises(ValueError, match="leading axis of length"):
        learner.step(state, target, related, outer)
    with pytest.raises(NotImplementedError, match="stacked along a leading axis of real_steps=3"):
        learner.meta_update(state.params, state.opt_state, state.weighting, target, related, outer)
    with pytest.raises(ValueError, match="real_steps must be >= 1"):
        Trajectory(0)


def test_implicit_step_cap_keeps_v_stable_where_the_plain_step_diverges():
    """A step far above 2 / (largest eigenvalue of H): the plain iteration of v diverges; capped at 1 / (curvature
    along v) it converges, and the estimate reaches the exact hypergradient."""
    with jax.enable_x64(True):
        target, related, outer = regression_batches()
        weighting = TableWeighting(NUM_RELATED)
        meta_params = jax.random.normal(jax.random.key(2), (NUM_RELATED,))
        params = {"w": jnp.zeros(NUM_FEATURES), "b": jnp.zeros(())}

        def run(estimator):
            learner = MetaReweighting(squared_error, weighting, optax.sgd(0.3), optax.sgd(0.0), estimator=estimator)
            state, step = learner.init(params, meta_params), jax.jit(learner.step)
            for _ in range(3000):
                state, metrics = step(state, target, related, outer)
            return jax.jit(learner.meta_gradient)(state, target, related, outer).grads, metrics

        _, plain = run(Implicit(learning_rate=50.0, damping=0.0, cap_step=False))
        assert not np.isfinite(float(plain["v_norm"])) or float(plain["v_norm"]) > 1e6
        estimate, capped = run(Implicit(learning_rate=50.0, damping=0.0))
        exact = exact_hypergradient(weighting, meta_params, target, related, outer)
        assert float(capped["v_step"]) < 50.0 and float(capped["v_residual_norm"]) < 1e-8
        np.testing.assert_allclose(estimate, exact, rtol=1e-6)


def test_implicit_mirror_negative_keeps_v_bounded_under_negative_curvature():
    """Related losses of negative sign make H indefinite (params held fixed): plain v grows without bound along
    the negative direction, whatever the step; with ``mirror_negative`` the damping grows to cover the most
    negative curvature seen along v, H + damping I becomes positive definite, and v converges to the solution of
    that damped system."""
    with jax.enable_x64(True):
        target, related, outer = regression_batches()
        sign = jnp.where(jnp.arange(NUM_RELATED) % 2 == 0, -3.0, 1.0)
        related = dict(related, sign=sign)
        target = dict(target, sign=jnp.ones(NUM_TARGET))
        outer = dict(outer, sign=jnp.ones(outer["y"].shape[0]))

        def signed_error(params, batch):
            return batch["sign"] * squared_error(params, batch)

        weighting = TableWeighting(NUM_RELATED)
        params = {"w": jnp.ones(NUM_FEATURES), "b": jnp.ones(())}

        def run(estimator):
            learner = MetaReweighting(signed_error, weighting, optax.sgd(0.0), optax.sgd(0.0), estimator=estimator)
            state, step = learner.init(params, jnp.zeros(NUM_RELATED)), jax.jit(learner.step)
            for _ in range(2000):
                state, metrics = step(state, target, related, outer)
            return learner, state, metrics

        flat, unravel = ravel_pytree(params)
        learner, _, plain = run(Implicit(learning_rate=0.1, damping=0.01))
        objective = lambda p: learner.problem.objective(unravel(p), jnp.zeros(NUM_RELATED), target, related, True)
        hessian = jax.hessian(objective)(flat)
        assert np.linalg.eigvalsh(hessian)[0] < -0.1  # indefinite, beyond the damping
        assert not np.isfinite(float(plain["v_norm"])) or float(plain["v_norm"]) > 1e6

        learner, state, mirrored = run(Implicit(learning_rate=0.1, damping=0.01, mirror_negative=True))
        damping = float(mirrored["v_damping"])
        assert np.linalg.eigvalsh(hessian + damping * np.eye(flat.size))[0] > 0.0
        grad_outer = jax.grad(lambda p: learner.problem.outer_loss(unravel(p), outer))(flat)
        v = ravel_pytree(state.weighting.estimator_state.v)[0]
        np.testing.assert_allclose(v, np.linalg.solve(hessian + damping * np.eye(flat.size), grad_outer), rtol=1e-6)


@pytest.mark.parametrize("include_target", [True, False])
def test_gauss_newton_product_is_j_transpose_h_j_and_positive_where_the_hessian_is_not(include_target):
    """On a small MLP classifier (importance factors, normalized weights): the product equals J' H_o J v built
    from explicit Jacobians, and v' G v >= 0 for every v while the Hessian has a negative direction."""
    with jax.enable_x64(True):
        module = MLPClassifier(hidden_sizes=(4,), num_classes=3)
        loss_fn = classification_loss_fn(module, lambda b: b["x"])
        keys = jax.random.split(jax.random.key(3), 6)

        def batch(key, n):
            kx, ky = jax.random.split(key)
            return {"x": jax.random.normal(kx, (n, 2)), "y": jax.random.randint(ky, (n,), 0, 3)}

        target, related = batch(keys[0], 5), batch(keys[1], 6)
        related[IMPORTANCE] = jax.random.uniform(keys[2], (6,), minval=0.5, maxval=2.0)
        params = module.init(keys[3], target["x"])
        params = jax.tree.map(lambda a: 2.0 * a.astype(jnp.float64), params)
        weights = jax.random.uniform(keys[4], (6,))
        flat, unravel = ravel_pytree(params)

        @jax.jit
        def product(vector):
            args = (loss_fn, unravel(flat), weights, target, related, include_target, True, unravel(vector))
            return ravel_pytree(gauss_newton_product(*args))[0]

        batches = [related, target] if include_target else [related]
        outputs = lambda p: jnp.concatenate([loss_fn.outputs(unravel(p), b).ravel() for b in batches])
        shapes = [(b["x"].shape[0], 3) for b in batches]

        def objective_of_outputs(o):
            parts = np.cumsum([0] + [a * b for a, b in shapes])
            outs = [o[i:j].reshape(shape) for i, j, shape in zip(parts[:-1], parts[1:], shapes)]
            related_losses = loss_fn.loss(outs[0], related) * weights * related[IMPORTANCE]
            value = jnp.sum(related_losses) / jnp.sum(weights * related[IMPORTANCE])
            return value + (jnp.mean(loss_fn.loss(outs[1], target)) if include_target else 0.0)

        jacobian = jax.jit(jax.jacobian(outputs))(flat)
        gauss_newton = jacobian.T @ jax.jit(jax.hessian(objective_of_outputs))(outputs(flat)) @ jacobian
        vectors = jax.random.normal(keys[5], (4, flat.size))
        for vector in vectors:
            np.testing.assert_allclose(product(vector), gauss_newton @ vector, rtol=1e-8, atol=1e-12)
        assert np.linalg.eigvalsh(gauss_newton)[0] > -1e-10
        objective = lambda p: inner_objective(loss_fn, unravel(p), weights, target, related, include_target, True)
        hessian = jax.jit(jax.hessian(objective))(flat)
        assert np.linalg.eigvalsh(hessian)[0] < -1e-3


def test_implicit_gauss_newton_needs_an_output_loss():
    with jax.enable_x64(True):
        target, related, outer = regression_batches()
        learner = MetaReweighting(
            squared_error, TableWeighting(NUM_RELATED), optax.sgd(0.1), optax.sgd(0.0), Implicit(gauss_newton=True)
        )
        state = learner.init({"w": jnp.zeros(NUM_FEATURES), "b": jnp.zeros(())}, jnp.zeros(NUM_RELATED))
        with pytest.raises(TypeError, match=r"needs the model.s loss as a metadial\.losses\.OutputLoss"):
            learner.step(state, target, related, outer)
    assert cross_entropy("y")(jnp.zeros((2, 4)), {"y": jnp.array([0, 3])}).shape == (2,)
