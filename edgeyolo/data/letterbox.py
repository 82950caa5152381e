"""One letterbox for training, evaluation and every inference backend (numpy + OpenCV, no torch).

Letterbox geometry (:func:`letterbox_params`), for an image of ``width`` x ``height`` and a target
of ``size`` (an int for a square, or ``(height, width)`` as in torchvision)::

    scale    = min(target_w / width, target_h / height)
    resized  = round(width * scale) x round(height * scale)      (Python round, at least 1 px)
    pad_x    = (target_w - resized_w) // 2                      (left padding, whole pixels)
    pad_y    = (target_h - resized_h) // 2                      (top padding; the rest goes
                                                                 right / bottom)
    x_letterboxed = x * scale + pad_x,   y_letterboxed = y * scale + pad_y

Boxes use the single ``scale``; the resized image's own scale along its shorter side differs
from it by the rounding to whole pixels, i.e. by at most half a pixel across the whole image.

:func:`edgeyolo.data.transforms.eval_transforms` runs literally the same code as :func:`letterbox` +
:func:`boxes_to_letterbox` (through its ``Letterbox`` transform), so training, evaluation and the
ONNX/TensorRT backends see the same pixels. Box functions take numpy arrays or torch tensors
(duck-typed: torch is not imported here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeyolo.detections import Detections, Prediction
from edgeyolo.lazy import CV2 as cv2

__all__ = [
    "PAD_VALUE",
    "LetterboxParams",
    "Size",
    "boxes_from_letterbox",
    "boxes_to_letterbox",
    "letterbox",
    "letterbox_params",
    "target_hw",
    "to_frame",
    "to_input",
]

Size = int | tuple[int, int]
LetterboxParams = tuple[float, float, float]  # (scale, pad_x, pad_y)
Boxes = Any  # numpy float[N, 4] or a torch Tensor[N, 4]

PAD_VALUE = 114


def target_hw(size: Size) -> tuple[int, int]:
    """``(height, width)`` of a target ``size`` (an int for a square)."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _resized_wh(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox_params(width: int, height: int, size: Size) -> LetterboxParams:
    """``(scale, pad_x, pad_y)`` that map original pixels to letterboxed ones (module docstring).

    ``pad_x``/``pad_y`` are the left/top padding in whole pixels (returned as floats).
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    target_h, target_w = target_hw(size)
    scale = min(target_w / width, target_h / height)
    new_w, new_h = _resized_wh(width, height, scale)
    return scale, float((target_w - new_w) // 2), float((target_h - new_h) // 2)


def letterbox(
    image: np.ndarray, size: Size, *, pad_value: int = PAD_VALUE
) -> tuple[np.ndarray, LetterboxParams]:
    """Resize keeping the aspect ratio (cv2 INTER_LINEAR), then pad with ``pad_value``.

    Args:
        image: ``uint8[H, W, C]`` or ``uint8[H, W]`` (any channel order; it is kept).
        size: target size, an int (square) or ``(height, width)``.

    Returns:
        ``uint8[S_h, S_w, C]`` (or ``[S_h, S_w]``) and ``(scale, pad_x, pad_y)``.
    """
    height, width = image.shape[:2]
    params = letterbox_params(width, height, size)
    scale, pad_x, pad_y = params
    new_w, new_h = _resized_wh(width, height, scale)
    if (new_w, new_h) != (width, height):
        resized = cv2.resize(
            np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR
        ).reshape((new_h, new_w, *image.shape[2:]))
    else:
        resized = image
    target_h, target_w = target_hw(size)
    out = np.full((target_h, target_w, *image.shape[2:]), pad_value, dtype=image.dtype)
    out[int(pad_y) : int(pad_y) + new_h, int(pad_x) : int(pad_x) + new_w] = resized
    return out, params


def _offsets(boxes: Boxes, params: LetterboxParams) -> tuple[float, Boxes]:
    scale, pad_x, pad_y = params
    pad = [pad_x, pad_y, pad_x, pad_y]
    if isinstance(boxes, np.ndarray):
        return scale, np.asarray(pad, dtype=np.float32)
    return scale, boxes.new_tensor(pad)  # a torch tensor: same dtype and device


def boxes_to_letterbox(boxes: Boxes, params: LetterboxParams) -> Boxes:
    """``float32[N, 4]`` xyxy original pixels -> letterboxed pixels (numpy or torch)."""
    scale, pad = _offsets(boxes, params)
    return boxes * scale + pad


def boxes_from_letterbox(
    boxes: Boxes, params: LetterboxParams, *, width: int, height: int
) -> Boxes:
    """``float32[N, 4]`` xyxy letterboxed pixels -> original pixels, clipped to the image."""
    scale, pad = _offsets(boxes, params)
    out = (boxes - pad) / scale
    if not isinstance(out, np.ndarray):  # a torch tensor
        out[..., 0::2] = out[..., 0::2].clamp(0, width)
        out[..., 1::2] = out[..., 1::2].clamp(0, height)
        return out
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
    return out


def to_frame(det: Detections, params: LetterboxParams, *, width: int, height: int) -> Prediction:
    """Detections in letterboxed input pixels mapped back to a ``width`` x ``height`` frame:
    ``(float32[K, 4] xyxy, float32[K] scores, int64[K] labels)``."""
    boxes, scores, labels = det.numpy()
    boxes = boxes_from_letterbox(boxes.copy(), params, width=width, height=height)
    return boxes.astype(np.float32), scores, labels


def to_input(boxed: np.ndarray) -> np.ndarray:
    """Letterboxed RGB ``uint8[..., S, S, 3]`` → the network input ``float32[..., 3, S, S]`` in
    0..1, as the evaluation transform computes it (torchvision's ``ToDtype(scale=True)``:
    ``x * (1 / 255)`` in float32), so every backend receives the same floats, bit for bit."""
    chw = np.ascontiguousarray(np.moveaxis(boxed, -1, -3), dtype=np.float32)
    chw *= np.float32(1.0 / 255.0)
    return chw
