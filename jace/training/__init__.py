"""Training with optax: settings, losses, optimisers, the loop, checkpoints, statistics, data parallelism,
committees."""

from jace.training.checkpoint import CheckpointError
from jace.training.committee import Committee, CommitteeSettings, train_committee
from jace.training.loop import TrainingError, TrainResult, train
from jace.training.optim import StageTwo
from jace.training.settings import TrainSettings
from jace.training.statistics import DatasetStatistics, dataset_statistics
from jace.training.steps import evaluate

__all__ = [
    "CheckpointError",
    "Committee",
    "CommitteeSettings",
    "DatasetStatistics",
    "StageTwo",
    "TrainResult",
    "TrainSettings",
    "TrainingError",
    "dataset_statistics",
    "evaluate",
    "train",
    "train_committee",
]
