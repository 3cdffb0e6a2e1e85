"""The method table's building blocks: each method is a ``Method`` (how its trainer is built and which
batches its step takes); an experiment's ``METHODS`` maps names to them.

Adding a method means adding a row to an experiment's table (and, for a new kind of trainer, a builder
here); nothing else in the launchers tests method names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import optax

from experiments.shared.config import mwnet_hidden
from metadial.estimators import Estimator, Implicit, Lookahead, Trajectory
from metadial.steps import FrozenWeighting, LearningToReweight, MetaReweighting, PlainTrainer
from metadial.weighting import MetaWeightNet, TableWeighting, Weighting

TARGET, RELATED, OUTER = "target", "related", "outer"  # the batches a step can take


@dataclasses.dataclass(frozen=True)
class TrainerParts:
    """What a trainer builder gets: the model's loss, the config, and the experiment's weighting network."""

    loss_fn: Callable
    config: ml_collections.ConfigDict
    num_related: int  # related examples (rows of a weight table)
    weight_net: Callable[[], Weighting]  # builds the experiment's weighting network
    remat: bool = False


Trainer = Any  # PlainTrainer, LearningToReweight or MetaReweighting: init(...), step(state, *batches)
Builder = Callable[[TrainerParts], tuple[Trainer, Weighting | None]]


def model_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (with ``eps_root`` for finite meta-gradients), after optional global-norm clipping."""
    adam = optax.adam(config.learning_rate, eps_root=config.eps_root)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip > 0 else adam


def plain(parts: TrainerParts) -> tuple[Trainer, None]:
    """Unweighted training on the step's batches."""
    return PlainTrainer(parts.loss_fn, model_optimizer(parts.config)), None


def learning_to_reweight(parts: TrainerParts) -> tuple[Trainer, None]:
    """Ren et al. (2018): per-step weights from the look-ahead gradient, no meta-parameters."""
    return LearningToReweight(parts.loss_fn, model_optimizer(parts.config)), None


def estimator(config: ml_collections.ConfigDict, remat: bool = False) -> Estimator:
    """The meta-gradient estimator of ``config.estimator``."""
    if config.estimator == "implicit":
        return Implicit(
            config.implicit_learning_rate,
            config.implicit_damping,
            mirror_negative=config.implicit_mirror_negative,
            gauss_newton=config.implicit_gauss_newton,
        )
    if config.estimator == "trajectory":
        return Trajectory(config.trajectory_steps)
    return Lookahead(config.inner_steps, config.target_in_inner, config.fresh_inner_batches, remat)


def meta_optimizer(config: ml_collections.ConfigDict, learning_rate: float) -> optax.GradientTransformation:
    """Adam on the weighting's parameters; with ``config.meta_max_nonfinite``, an update whose meta-gradient is
    not finite is skipped (up to that many in a row, ``optax.apply_if_finite``)."""
    adam = optax.adam(learning_rate)
    return optax.apply_if_finite(adam, config.meta_max_nonfinite) if config.meta_max_nonfinite else adam


def _meta(parts: TrainerParts, weighting: Weighting, meta_learning_rate: float) -> tuple[Trainer, Weighting]:
    c = parts.config
    trainer = MetaReweighting(
        parts.loss_fn,
        weighting,
        model_optimizer(c),
        meta_optimizer(c, meta_learning_rate),
        estimator=estimator(c, parts.remat),
        real_update="alternate" if c.separate_target_step else "joint",
        normalize=c.normalize_weights,
    )
    return trainer, weighting


def meta_table(parts: TrainerParts) -> tuple[Trainer, Weighting]:
    """Meta-learned weights, one free logit per related example."""
    return _meta(parts, TableWeighting(parts.num_related), parts.config.table_meta_learning_rate)


def meta_net(parts: TrainerParts) -> tuple[Trainer, Weighting]:
    """Meta-learned weights from the experiment's weighting network."""
    return _meta(parts, parts.weight_net(), parts.config.meta_learning_rate)


def mwnet(parts: TrainerParts) -> tuple[Trainer, Weighting]:
    """Meta-Weight-Net (Shu et al., 2019): weights from each related example's current loss alone."""
    return _meta(parts, MetaWeightNet(mwnet_hidden(parts.config)), parts.config.mwnet_meta_learning_rate)


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of a method table.

    ``build`` makes the trainer (and the weighting, for meta methods); the step takes the batches named in
    ``batches`` in that order. With ``finetune_batches`` the method has two phases: ``batches`` for the first
    ``pretrain_fraction`` of the steps, then ``finetune_batches``. Related batches come from the pool
    ``related_pool``. ``weights`` says how the related examples' weights are read after training: ``None``
    (unweighted), ``"learned"`` (the meta-parameters) or ``"recomputed"`` (l2rw, at the final parameters).
    """

    build: Builder
    batches: tuple[str, ...]
    finetune_batches: tuple[str, ...] = ()
    related_pool: str = "related"
    weights: str | None = None

    @property
    def meta(self) -> bool:
        """Whether the method has meta-parameters (and so fresh inner batches and logged weight means)."""
        return self.weights == "learned"

    def first_phase_steps(self, train_steps: int, config: ml_collections.ConfigDict) -> int:
        """Steps of the first phase of a two-phase method (``pretrain_fraction`` of ``train_steps``), else 0."""
        return int(train_steps * config.pretrain_fraction) if self.finetune_batches else 0

    def phase(self, step: int, train_steps: int, config: ml_collections.ConfigDict) -> str:
        """``"finetune"`` once a two-phase method has finished its first phase, else ``"main"``."""
        if self.finetune_batches and step >= self.first_phase_steps(train_steps, config):
            return "finetune"
        return "main"

    def step_batches(self, phase: str) -> tuple[str, ...]:
        """The batches the step takes in ``phase``."""
        return self.finetune_batches if phase == "finetune" else self.batches


def refit(method: Method) -> Method:
    """The final fit after a meta method's run (``config.meta_holdout_refit``): a fresh model trained on the target
    batches (all the target data) and the related batches, weighted by the meta method's weighting with the
    parameters its run learned, held fixed (``metadial.steps.FrozenWeighting``)."""
    if not method.meta:
        raise ValueError("only a method with learned weights has a final fit")

    def build(parts: TrainerParts) -> tuple[Trainer, Weighting | None]:
        trainer, weighting = method.build(parts)
        return FrozenWeighting.of(trainer), weighting

    return Method(build, (TARGET, RELATED), related_pool=method.related_pool)


# The rows both experiments share.
TARGET_ONLY = Method(plain, (TARGET,))
UNION = Method(plain, (TARGET, RELATED))
PRETRAIN_FINETUNE = Method(plain, (RELATED,), finetune_batches=(TARGET,))
ORACLE = Method(plain, (TARGET, RELATED), related_pool="related_correct")
L2RW = Method(learning_to_reweight, (TARGET, RELATED, OUTER), weights="recomputed")
META_TABLE = Method(meta_table, (TARGET, RELATED, OUTER), weights="learned")
META_NET = Method(meta_net, (TARGET, RELATED, OUTER), weights="learned")
MWNET = Method(mwnet, (TARGET, RELATED, OUTER), weights="learned")
