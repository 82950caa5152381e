"""Annotation formats, the MNIST-detection builder, letterbox transforms and the Dataset.

Names are re-exported lazily: ``from edgeyolo.data import read_split`` does not import torch;
``DetectionDataset`` or the transforms do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeyolo.data.records import DatasetSpec, ImageRecord, Problem, Split

if TYPE_CHECKING:
    from edgeyolo.data.dataset import DetectionDataset, collate, read_rgb
    from edgeyolo.data.formats import (
        image_size,
        load_data_yaml,
        read_coco,
        read_seed,
        read_split,
        read_yolo,
        write_coco,
        write_seed,
        write_yolo,
        yolo_label_path,
    )
    from edgeyolo.data.letterbox import (
        boxes_from_letterbox,
        boxes_to_letterbox,
        letterbox,
        letterbox_params,
    )
    from edgeyolo.data.mnist import build_mnist_detection, load_mnist, read_idx
    from edgeyolo.data.transforms import Letterbox, eval_transforms, train_transforms

_LAZY = {
    "formats": (
        "image_size",
        "load_data_yaml",
        "read_coco",
        "read_seed",
        "read_split",
        "read_yolo",
        "write_coco",
        "write_seed",
        "write_yolo",
        "yolo_label_path",
    ),
    "mnist": ("build_mnist_detection", "load_mnist", "read_idx"),
    "letterbox": ("boxes_from_letterbox", "boxes_to_letterbox", "letterbox", "letterbox_params"),
    "transforms": ("Letterbox", "eval_transforms", "train_transforms"),
    "dataset": ("DetectionDataset", "collate", "read_rgb"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "DatasetSpec",
    "DetectionDataset",
    "ImageRecord",
    "Letterbox",
    "Problem",
    "Split",
    "boxes_from_letterbox",
    "boxes_to_letterbox",
    "build_mnist_detection",
    "collate",
    "eval_transforms",
    "image_size",
    "letterbox",
    "letterbox_params",
    "load_data_yaml",
    "load_mnist",
    "read_coco",
    "read_idx",
    "read_rgb",
    "read_seed",
    "read_split",
    "read_yolo",
    "train_transforms",
    "write_coco",
    "write_seed",
    "write_yolo",
    "yolo_label_path",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
