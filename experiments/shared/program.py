"""The base of each experiment's program: one method's jit-compiled training step, built once and reused
for every run (size, seed) of that method."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from experiments.shared.methods import OUTER, RELATED, TARGET, Method, TrainerParts
from metadial.parallel import check_batch_size, data_mesh
from metadial.steps import stack_batches
from metadial.weighting import Weighting

Batch = dict[str, Any]
Pools = dict[str, Any]  # pool name ("target", "related", ...) -> the examples batches are drawn from


class Program(abc.ABC):
    """One method's trainer and jitted step; subclasses say how a batch is drawn and the model initialised.

    ``train_step(state, key, pools, phase)`` draws the step's batches from ``pools`` (keys split the same
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

    @abc.abstractmethod
    def batch(self, pools: Pools, pool: str, key: jax.Array) -> Batch:
        """A training batch drawn from ``pools[pool]`` with ``key``, sharded over the mesh."""

    @abc.abstractmethod
    def init_params(self, key: jax.Array, batch: Batch) -> Any:
        """Fresh model parameters (``batch`` gives the input shapes)."""

    def init(self, key: jax.Array, pools: Pools) -> Any:
        """The trainer's initial state (model and, for meta methods, weighting parameters)."""
        k_model, k_meta = jax.random.split(key)
        params = self.init_params(k_model, self.batch(pools, TARGET, k_model))
        if self.weighting is None:
            return self.trainer.init(params)
        return self.trainer.init(params, self.weighting.init(k_meta, self.batch(pools, RELATED, k_meta)))

    def phase(self, step: int, train_steps: int) -> str:
        """The method's phase at ``step`` of a run of ``train_steps`` (``Method.phase``)."""
        return self.method.phase(step, train_steps, self.config)

    def _train_step(self, state, key: jax.Array, pools: Pools, phase: str = "main"):
        c, method = self.config, self.method
        names = method.step_batches(phase)
        k_t, k_r, k_o = jax.random.split(key, 3)
        batches = {TARGET: self.batch(pools, TARGET, k_t)}
        if RELATED in names:
            batches[RELATED] = self.batch(pools, method.related_pool, k_r)
        if OUTER in names:
            batches[OUTER] = batches[TARGET] if c.outer_batch == "target" else self.batch(pools, TARGET, k_o)
        if self.steps_per_call > 1:
            # a segment of real steps (Trajectory): one target and related batch per step, one outer batch
            k_more = jax.random.split(jax.random.fold_in(key, 2), 2 * (self.steps_per_call - 1))
            batches[TARGET] = stack_batches([batches[TARGET]] + [self.batch(pools, TARGET, k) for k in k_more[0::2]])
            batches[RELATED] = stack_batches(
                [batches[RELATED]] + [self.batch(pools, method.related_pool, k) for k in k_more[1::2]]
            )
        elif method.meta and c.fresh_inner_batches:
            # the look-ahead's later steps draw batches of their own; the real update uses batch 0
            k_more = jax.random.split(jax.random.fold_in(key, 1), 2 * (c.inner_steps - 1))
            batches[TARGET] = stack_batches([batches[TARGET]] + [self.batch(pools, TARGET, k) for k in k_more[0::2]])
            batches[RELATED] = stack_batches(
                [batches[RELATED]] + [self.batch(pools, method.related_pool, k) for k in k_more[1::2]]
            )
        return self.trainer.step(state, *(batches[n] for n in names))
