"""metadial: meta-learned weighting of related-task examples (Rajendran, Kummerfeld & Singh, 2021) in JAX."""

from metadial.steps import (
    LearningToReweight,
    MetaReweighting,
    MetaState,
    PlainTrainer,
    TrainState,
    inner_objective,
    optimizer_steps,
    weighted_mean,
)
from metadial.weighting import MLPScorer, NetWeighting, TableWeighting, Weighting

__all__ = [
    "LearningToReweight",
    "MetaReweighting",
    "MetaState",
    "MLPScorer",
    "NetWeighting",
    "PlainTrainer",
    "TableWeighting",
    "TrainState",
    "Weighting",
    "inner_objective",
    "optimizer_steps",
    "weighted_mean",
]
