"""Training: the loop (``train``, ``Trainer``), its schedule, EMA and checkpoints."""

from edgeyolo.train.trainer import Trainer, TrainResult, train

__all__ = ["TrainResult", "Trainer", "train"]
