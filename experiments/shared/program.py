"""The base of each experiment's program: one method's jit-compiled training step, built once and reused
for every run (size, seed) of that method."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.shared.methods import OUTER, RELATED, TARGET, Method, TrainerParts, refit
from metadial import sampling
from metadial.holdout import Folds, draw_from_fold, fold_at, target_folds
from metadial.parallel import check_batch_size, data_mesh, replicate, shard_batch
from metadial.sampling import IMPORTANCE
from metadial.stacks import BatchStack, first_of_stack
from metadial.weighting import Weighting

Batch = dict[str, Any]
Pools = dict[str, Any]  # pool name ("target", "related", ...) -> the examples batches are drawn from


class Program(abc.ABC):
    """One method's trainer and jitted step; subclasses say how a batch is drawn and the model initialised.

    ``train_step(state, key, pools, probabilities, phase)`` draws the step's batches from ``pools`` (keys split the same
    way for every method, so methods see the same target batches) and calls the trainer's step on the
    batches its row of the method table names.
    """

    def __init__(
        self,
        name: str,
        method: Method,
        config: ml_collections.ConfigDict,
        loss_fn: Callable,
        num_related: int,
        weight_net: Callable[[], Weighting],
        remat: bool = False,
    ):
        self.name, self.method, self.config, self.loss_fn = name, method, config, loss_fn
        self.trainer, self.weighting = method.build(TrainerParts(loss_fn, config, num_related, weight_net, remat))
        self.mesh = data_mesh()
        check_batch_size(config.batch_size, self.mesh)
        self.steps_per_call: int = self.trainer.steps_per_call  # model updates per call of train_step
        self.train_step = jax.jit(self._train_step, static_argnames="phase")
        self._refit: Program | None = None  # the final fit's program, built when first needed

    @abc.abstractmethod
    def batch_at(self, pools: Pools, pool: str, idx: jax.Array) -> Batch:
        """The batch of examples ``idx`` of ``pools[pool]``, sharded over the mesh."""

    @abc.abstractmethod
    def pool_size(self, pools: Pools, pool: str) -> int:
        """The number of examples in ``pools[pool]``."""

    # batch entries every example shares (e.g. a candidate table examples index into): a stack of batches keeps
    # them once, not once per step
    shared_keys: tuple[str, ...] = ()

    def batch_size(self, pool: str) -> int:
        """The size of a training batch drawn from ``pool``."""
        del pool
        return self.config.batch_size

    def batch(self, pools: Pools, pool: str, key: jax.Array) -> Batch:
        """A training batch drawn uniformly with replacement from ``pools[pool]`` with ``key``."""
        return self.batch_at(pools, pool, self.uniform_indices(pools, pool, key))

    def uniform_indices(self, pools: Pools, pool: str, key: jax.Array) -> jax.Array:
        """A batch's indices drawn uniformly with replacement from ``pools[pool]`` with ``key``."""
        return jax.random.randint(key, (self.batch_size(pool),), 0, self.pool_size(pools, pool))

    def related_indices(
        self, pools: Pools, key: jax.Array, probabilities: jax.Array | None
    ) -> tuple[jax.Array, jax.Array | None]:
        """A related batch's indices: uniform, or drawn with ``probabilities`` (weight-aware sampling) with the
        importance factors that keep the weighted objective the same (``metadial.sampling``)."""
        pool = self.method.related_pool
        if probabilities is None:
            return self.uniform_indices(pools, pool, key), None
        return sampling.draw(key, probabilities, self.batch_size(pool))

    def target_indices(self, pools: Pools, key: jax.Array, holdout: tuple[Folds, jax.Array] | None) -> jax.Array:
        """A target batch's indices for the model: from all target examples, or from the current fold's training
        part."""
        if holdout is None:
            return self.uniform_indices(pools, TARGET, key)
        folds, fold = holdout
        return draw_from_fold(key, folds.train, folds.train_size, fold, self.batch_size(TARGET))

    def drawn_batch(self, pools: Pools, pool: str, idx: jax.Array, importance: jax.Array | None = None) -> Batch:
        """The batch of examples ``idx`` of ``pools[pool]``, with the importance factors if drawn by weight."""
        batch = self.batch_at(pools, pool, idx)
        if importance is None:
            return batch
        return {**batch, **shard_batch({IMPORTANCE: importance}, self.mesh)}

    def drawn_stack(self, pools: Pools, pool: str, idx: jax.Array, importance: jax.Array | None = None) -> BatchStack:
        """The batches of ``(num_steps, B)`` indices ``idx`` of ``pools[pool]`` as one gather, stacked; the entries
        every example shares (``shared_keys``) are kept once."""
        num_steps, size = idx.shape
        batch = self.drawn_batch(pools, pool, idx.reshape(-1), None if importance is None else importance.reshape(-1))
        per_step = {
            k: jax.tree.map(lambda x: x.reshape(num_steps, size, *x.shape[1:]), v)
            for k, v in batch.items()
            if k not in self.shared_keys
        }
        return BatchStack(per_step, {k: batch[k] for k in self.shared_keys if k in batch})

    def related_batch(self, pools: Pools, key: jax.Array, probabilities: jax.Array | None) -> Batch:
        """A related batch: uniform, or drawn by weight with importance factors (``related_indices``)."""
        return self.drawn_batch(pools, self.method.related_pool, *self.related_indices(pools, key, probabilities))

    def all_related_weights(self, state: Any, pools: Pools) -> jax.Array:
        """The current weight of every example of the related pool (meta methods; weight-aware sampling)."""
        raise NotImplementedError(f"{type(self).__name__} does not compute the weights of all related examples")

    def target_groups(self, pools: Pools) -> np.ndarray:
        """A group id per target training example; held-out folds never split a group (default: each example
        its own group)."""
        return np.arange(self.pool_size(pools, TARGET))

    @property
    def takes_outer_batch(self) -> bool:
        """Whether the method has an outer loss (meta methods, l2rw)."""
        return OUTER in self.method.batches

    @property
    def holds_out(self) -> bool:
        """Whether the outer loss uses held-out target folds (``config.meta_holdout > 0``, methods with one)."""
        return self.config.meta_holdout > 0 and self.takes_outer_batch

    @property
    def refits(self) -> bool:
        """Whether a run ends with a final fit on all the target data (``config.meta_holdout_refit``: meta methods
        whose outer loss held a fold out)."""
        return bool(self.config.meta_holdout_refit) and self.holds_out and self.method.meta

    def meta_fields(self) -> dict[str, Any]:
        """The record fields that say how a method learns its weights: ``estimator`` and ``related_sampling``
        (meta methods; else None) and ``meta_holdout`` (methods with an outer loss; else None)."""
        c, meta = self.config, self.method.meta
        return {
            "estimator": c.estimator if meta else None,
            "related_sampling": c.related_sampling if meta else None,
            "meta_holdout": c.meta_holdout if self.takes_outer_batch else None,
        }

    def add_optional_fields(self, record: dict[str, Any], before_refit: dict[str, Any] | None) -> None:
        """Adds to ``record`` the fields only some runs have: ``implicit_gauss_newton`` (True for ``implicit`` with
        the Gauss-Newton matrix; absent means False) and ``before_refit`` (the meta run's scores, with a final
        fit)."""
        c = self.config
        if self.method.meta and c.estimator == "implicit" and c.implicit_gauss_newton:
            record["implicit_gauss_newton"] = True
        if before_refit is not None:
            record["before_refit"] = before_refit

    def refit_program(self) -> Program:
        """The program of this method's final fit (``experiments.shared.methods.refit``), built once."""
        if self._refit is None:
            self._refit = self.with_method(refit_name(self.name), refit(self.method))
        return self._refit

    @abc.abstractmethod
    def with_method(self, name: str, method: Method) -> Program:
        """A program of the same experiment (model, data) for ``method``, named ``name``."""

    def target_batch(self, pools: Pools, key: jax.Array, holdout: tuple[Folds, jax.Array] | None) -> Batch:
        """A target batch for the model: from all target examples, or from the current fold's training part."""
        return self.drawn_batch(pools, TARGET, self.target_indices(pools, key, holdout))

    @property
    def samples_by_weight(self) -> bool:
        """Whether related batches are drawn by weight (``config.related_sampling``, meta methods only)."""
        return self.method.meta and self.config.related_sampling == "weighted"

    def step_fn(self, pools: Pools, train_steps: int, seed: int) -> Callable[[Any, jax.Array, int], Any]:
        """``(state, key, step) -> (state, metrics)`` for ``metadial.loop.train_loop``: the jitted step in the
        method's phase at ``step``; with weight-aware sampling, the sampling probabilities are recomputed from
        all related weights every ``sampling_every`` steps (and on a run's first call, e.g. after a resume);
        with ``meta_holdout``, the outer loss draws from the held-out fold of ``step`` (folds seeded by
        ``seed``, rotating every ``meta_holdout_rotation`` steps) and the model from the other folds."""
        c = self.config
        cache: dict[str, Any] = {}
        folds = None
        if self.holds_out:
            folds = replicate(target_folds(self.target_groups(pools), c.meta_holdout, seed), self.mesh)

        def step(state, key, step_index):
            probabilities = None
            if self.samples_by_weight:
                if step_index % c.sampling_every == 0 or "p" not in cache:
                    weights = self.all_related_weights(state, pools)
                    cache["p"] = replicate(
                        sampling.sampling_probabilities(weights, c.sampling_uniform_share), self.mesh
                    )
                probabilities = cache["p"]
            holdout = None
            if folds is not None:
                holdout = (folds, jnp.asarray(fold_at(step_index, c.meta_holdout_rotation, folds.num_folds)))
            return self.train_step(state, key, pools, probabilities, holdout, phase=self.phase(step_index, train_steps))

        return step

    @abc.abstractmethod
    def init_params(self, key: jax.Array, batch: Batch) -> Any:
        """Fresh model parameters (``batch`` gives the input shapes)."""

    def init(self, key: jax.Array, pools: Pools) -> Any:
        """The trainer's initial state (model and, for meta methods, weighting parameters), replicated over the
        mesh as the jitted step returns it, so that the step compiles once, not again on its second call."""
        k_model, k_meta = jax.random.split(key)
        params = self.init_params(k_model, self.batch(pools, TARGET, k_model))
        if self.weighting is None:
            state = self.trainer.init(params)
        else:
            state = self.trainer.init(params, self.weighting.init(k_meta, self.batch(pools, RELATED, k_meta)))
        return replicate(state, self.mesh)

    def phase(self, step: int, train_steps: int) -> str:
        """The method's phase at ``step`` of a run of ``train_steps`` (``Method.phase``)."""
        return self.method.phase(step, train_steps, self.config)

    def _train_step(
        self,
        state,
        key: jax.Array,
        pools: Pools,
        probabilities: jax.Array | None = None,
        holdout: tuple[Folds, jax.Array] | None = None,
        phase: str = "main",
    ):
        c, method = self.config, self.method
        names = method.step_batches(phase)
        k_t, k_r, k_o = jax.random.split(key, 3)
        stacked, salt = 0, 0
        if self.steps_per_call > 1:
            # a segment of real steps (Trajectory): one target and related batch per step, one outer batch
            stacked, salt = self.steps_per_call, 2
        elif method.meta and c.fresh_inner_batches:
            # the look-ahead's later steps draw batches of their own; the real update uses batch 0
            stacked, salt = c.inner_steps, 1
        batches: dict[str, Any] = {}
        if stacked:
            # batch 0 from k_t / k_r, the others from keys of their own; all indices drawn, then gathered, at once
            k_more = jax.random.split(jax.random.fold_in(key, salt), 2 * (stacked - 1))
            keys_t = jnp.concatenate([k_t[None], k_more[0::2]])
            keys_r = jnp.concatenate([k_r[None], k_more[1::2]])
            target_idx = jax.vmap(lambda k: self.target_indices(pools, k, holdout))(keys_t)
            batches[TARGET] = self.drawn_stack(pools, TARGET, target_idx)
            first_target = first_of_stack(batches[TARGET])
            if RELATED in names:
                related_idx, importance = jax.vmap(lambda k: self.related_indices(pools, k, probabilities))(keys_r)
                batches[RELATED] = self.drawn_stack(pools, method.related_pool, related_idx, importance)
        else:
            batches[TARGET] = first_target = self.target_batch(pools, k_t, holdout)
            if RELATED in names:
                batches[RELATED] = self.related_batch(pools, k_r, probabilities)
        if OUTER in names and holdout is not None:
            folds, fold = holdout
            idx = draw_from_fold(k_o, folds.outer, folds.outer_size, fold, self.batch_size(TARGET))
            batches[OUTER] = self.batch_at(pools, TARGET, idx)
        elif OUTER in names:
            batches[OUTER] = first_target if c.outer_batch == "target" else self.batch(pools, TARGET, k_o)
        state, metrics = self.trainer.step(state, *(batches[n] for n in names))
        if c.meta_max_nonfinite and "meta_grad_norm" in metrics:
            metrics = skipped_meta_updates(state, metrics)
        return state, metrics


def refit_name(method: str) -> str:
    """The name of ``method``'s final fit (with ``meta_holdout_refit``): its runs' checkpoint folders and tags."""
    return f"{method}-refit"


def skipped_meta_updates(state: Any, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``metrics`` with ``meta_skipped``, the meta updates skipped so far for a non-finite meta-gradient (the
    ``optax.apply_if_finite`` state's count), and ``meta_grad_norm`` 0 where this step's update was skipped, so
    that the loop's non-finite guard stops a run only when the skips run out or the model itself diverges."""
    norm = metrics["meta_grad_norm"]
    skipped = jnp.sum(optax.tree_utils.tree_get(state, "total_notfinite"))
    return {**metrics, "meta_grad_norm": jnp.where(jnp.isfinite(norm), norm, 0.0), "meta_skipped": skipped}
