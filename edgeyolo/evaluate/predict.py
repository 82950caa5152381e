"""The one loop every backend is scored through (numpy only: the deploy side runs it without torch).

Records are read (:func:`edgeyolo.data.images.network_input`), letterboxed into batches of
``float32[B, 3, S, S]``, handed to a batch detector, and the detections mapped back to each
image's pixels, so the letterbox and the mapping are the same for PyTorch, ONNX Runtime and
TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rich.progress import track

from edgeyolo.data.images import network_input
from edgeyolo.data.letterbox import to_frame
from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Detections, Prediction

__all__ = ["BatchDetector", "letterboxed_batch", "predict_with"]

#: Detects on a batch of letterboxed images (``float32[B, 3, S, S]``, 0..1); boxes in input pixels.
BatchDetector = Callable[[np.ndarray], list[Detections]]


def letterboxed_batch(records: Sequence[ImageRecord], img_size: int) -> np.ndarray:
    """``float32[B, 3, S, S]``: ``records`` as every backend receives them."""
    if not records:
        return np.zeros((0, 3, img_size, img_size), np.float32)
    return np.stack([network_input(r, img_size)[0] for r in records])


def predict_with(
    detect: BatchDetector,
    records: Sequence[ImageRecord],
    *,
    img_size: int,
    batch: int = 16,
    progress: bool = False,
    description: str = "evaluating",
) -> list[Prediction]:
    """Detections per record, mapped to original pixels, from any backend's batch detector.

    Args:
        detect: a batch detector (``float32[B, 3, S, S]`` in, one :class:`Detections` per image
            in input pixels out).
        records: the images, in order.
        img_size: the network's input size ``S``.
        batch: images per call of ``detect``.
        progress: show a progress bar (rich).

    Returns:
        ``(float32[K, 4] xyxy, float32[K] scores, int64[K] labels)`` per record, in its pixels.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    starts = range(0, len(records), batch)
    if progress:
        starts = track(starts, description=description, transient=True)
    out: list[Prediction] = []
    for start in starts:
        chunk = records[start : start + batch]
        inputs = [network_input(r, img_size) for r in chunk]
        dets = detect(np.stack([x for x, _ in inputs]))
        if len(dets) != len(chunk):
            raise ValueError(f"the detector returned {len(dets)} results for {len(chunk)} images")
        for det, rec, (_, params) in zip(dets, chunk, inputs, strict=True):
            out.append(to_frame(det, params, width=rec.width, height=rec.height))
    return out
