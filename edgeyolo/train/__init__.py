"""Training: the loop (``train``, ``Trainer``), its hooks, schedule, EMA and checkpoints."""

from edgeyolo.train.hooks import EpochResult, Hook
from edgeyolo.train.trainer import TrainData, Trainer, TrainResult, train

__all__ = ["EpochResult", "Hook", "TrainData", "TrainResult", "Trainer", "train"]
