"""edgeyolo: YOLOv3 from labelled images to a TensorRT engine, with proof that the engine matches.

Importing this package is cheap and has no side effects: torch-based parts (training, models,
evaluation) and the optional GPU parts (tensorrt, pycuda) are imported on first use::

    from edgeyolo import TrainConfig, evaluate_checkpoint
    from edgeyolo.train import train

    result = train(TrainConfig(data="data/mnist/data.yaml", out="runs/tiny"))
    print(evaluate_checkpoint(result.best, "data/mnist/data.yaml").map50)
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeyolo._version import __version__

_LAZY = {
    "TrainConfig": "edgeyolo.config",
    "ModelConfig": "edgeyolo.config",
    "LossConfig": "edgeyolo.config",
    "AugmentConfig": "edgeyolo.config",
    "Trainer": "edgeyolo.train.trainer",
    "evaluate_checkpoint": "edgeyolo.evaluate.evaluator",
    "build_model": "edgeyolo.models",
    "load_model": "edgeyolo.models.checkpoint",
    "build_mnist_detection": "edgeyolo.data.mnist",
    "Detector": "edgeyolo.runtime.detector",
    "stream": "edgeyolo.runtime.stream",
    "Stream": "edgeyolo.runtime.stream",
    "ExportConfig": "edgeyolo.config",
    "export_model": "edgeyolo.export.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeyolo' has no attribute {name!r}")
