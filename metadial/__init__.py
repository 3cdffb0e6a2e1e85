"""metadial: meta-learned weighting of related-task examples (Rajendran, Kummerfeld & Singh, 2021) in JAX."""

from metadial.models.mlp import MLPScorer
from metadial.steps import (
    FrozenWeighting,
    LearningToReweight,
    MetaReweighting,
    MetaState,
    PlainTrainer,
    TrainState,
    inner_objective,
    optimizer_steps,
    weighted_mean,
)
from metadial.weighting import MetaWeightNet, NetWeighting, TableWeighting, Weighting

__all__ = [
    "FrozenWeighting",
    "LearningToReweight",
    "MLPScorer",
    "MetaReweighting",
    "MetaState",
    "MetaWeightNet",
    "NetWeighting",
    "PlainTrainer",
    "TableWeighting",
    "TrainState",
    "Weighting",
    "inner_objective",
    "optimizer_steps",
    "weighted_mean",
]
