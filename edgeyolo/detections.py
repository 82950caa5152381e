"""Per-image detections, the one result type of every backend (numpy only: no torch here).

The deploy side (ONNX Runtime, TensorRT, :class:`edgeyolo.Detector`) fills :class:`Detections`
with numpy arrays from an exported graph's padded outputs (:func:`from_outputs`). The PyTorch
post-processing (:func:`edgeyolo.postprocess.postprocess`) fills the same type with torch tensors
on the model's device; :meth:`Detections.numpy` gives numpy arrays for either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Detections", "Prediction", "from_outputs", "from_padded"]

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(boxes float[K, 4] xyxy, scores float[K], labels int[K])`` for one image, in its pixels."""


@dataclass(frozen=True)
class Detections:
    """The detections of one image.

    Attributes:
        boxes (array[K, 4]): xyxy in the pixels of the image the boxes were decoded in.
        scores (array[K]): objectness x class probability, sorted descending.
        labels (array[K]): class indices, int64.

    The arrays are numpy (``float32``/``int64``) from the deploy-side backends, or torch tensors
    from the PyTorch post-processing; the methods below work for both without importing torch.
    """

    boxes: Any
    scores: Any
    labels: Any

    @classmethod
    def empty(cls) -> Detections:
        """No detections (numpy)."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            labels=np.zeros((0,), np.int64),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: Any) -> Detections:
        """The same detections on torch ``device`` (torch-backed detections only)."""
        if isinstance(self.boxes, np.ndarray):
            raise TypeError("Detections.to(device) needs torch tensors; these are numpy arrays")
        return Detections(
            boxes=self.boxes.to(device),
            scores=self.scores.to(device),
            labels=self.labels.to(device),
        )

    def numpy(self) -> Prediction:
        """``(boxes float32[K, 4], scores float32[K], labels int64[K])`` as numpy arrays."""
        return (
            _as_numpy(self.boxes).astype(np.float32, copy=False).reshape(-1, 4),
            _as_numpy(self.scores).astype(np.float32, copy=False).reshape(-1),
            _as_numpy(self.labels).astype(np.int64, copy=False).reshape(-1),
        )


def _as_numpy(a: Any) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (duck-typed: torch is not imported)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def from_padded(num_dets: Any, boxes: Any, scores: Any, classes: Any) -> list[Detections]:
    """:class:`Detections` (numpy) per image from the exported graph's padded outputs.

    Args:
        num_dets (int[B, 1]): valid entries per image.
        boxes (float[B, K, 4]): xyxy input pixels; scores (float[B, K]); classes (int[B, K]).
    """
    n, b, s, c = (_as_numpy(a) for a in (num_dets, boxes, scores, classes))
    return [
        Detections(
            boxes=b[i, : int(n[i, 0])].astype(np.float32),
            scores=s[i, : int(n[i, 0])].astype(np.float32),
            labels=c[i, : int(n[i, 0])].astype(np.int64),
        )
        for i in range(n.shape[0])
    ]


def from_outputs(outputs: Mapping[str, Any]) -> list[Detections]:
    """:func:`from_padded` on an exported graph's outputs, looked up by name."""
    return from_padded(outputs["num_dets"], outputs["boxes"], outputs["scores"], outputs["classes"])
