"""One letterbox for training, evaluation and every inference backend, plus augmentation.

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

:func:`eval_transforms` runs literally the same code as :func:`letterbox` +
:func:`boxes_to_letterbox` (through :class:`Letterbox`), so training, evaluation and the
ONNX/TensorRT backends see the same pixels.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeyolo.config import AugmentConfig
from edgeyolo.postprocess import Detections, Prediction

Size = int | tuple[int, int]
LetterboxParams = tuple[float, float, float]  # (scale, pad_x, pad_y)
Boxes = TypeVar("Boxes", np.ndarray, torch.Tensor)

PAD_VALUE = 114


def _target_hw(size: Size) -> tuple[int, int]:
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
    target_h, target_w = _target_hw(size)
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
    target_h, target_w = _target_hw(size)
    out = np.full((target_h, target_w, *image.shape[2:]), pad_value, dtype=image.dtype)
    out[int(pad_y) : int(pad_y) + new_h, int(pad_x) : int(pad_x) + new_w] = resized
    return out, params


def _offsets(boxes: Boxes, params: LetterboxParams) -> tuple[float, Boxes]:
    scale, pad_x, pad_y = params
    pad = [pad_x, pad_y, pad_x, pad_y]
    if isinstance(boxes, torch.Tensor):
        return scale, torch.tensor(pad, dtype=boxes.dtype, device=boxes.device)
    return scale, np.asarray(pad, dtype=np.float32)


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
    if isinstance(out, torch.Tensor):
        out[..., 0::2] = out[..., 0::2].clamp(0, width)
        out[..., 1::2] = out[..., 1::2].clamp(0, height)
        return out
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
    return out


def to_frame(det: Detections, params: LetterboxParams, *, width: int, height: int) -> Prediction:
    """Detections in letterboxed input pixels mapped back to a ``width`` x ``height`` frame:
    ``(float32[K, 4] xyxy, float32[K] scores, int64[K] labels)``."""
    boxes = boxes_from_letterbox(det.boxes.cpu().numpy(), params, width=width, height=height)
    return (
        boxes.astype(np.float32),
        det.scores.cpu().numpy().astype(np.float32),
        det.labels.cpu().numpy().astype(np.int64),
    )


class Letterbox(v2.Transform):
    """v2 transform: :func:`letterbox` on a uint8 ``tv_tensors.Image`` and
    :func:`boxes_to_letterbox` on its ``tv_tensors.BoundingBoxes`` (XYXY); the rest passes."""

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes)

    def __init__(self, size: Size, *, pad_value: int = PAD_VALUE) -> None:
        super().__init__()
        self.size = size
        self.pad_value = pad_value

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError(f"Letterbox expects XYXY boxes, got {inpt.format}")
            height, width = inpt.canvas_size
            lb = letterbox_params(width, height, self.size)
            out = boxes_to_letterbox(inpt.as_subclass(torch.Tensor), lb)
            return tv_tensors.wrap(out, like=inpt, canvas_size=_target_hw(self.size))
        if inpt.dtype != torch.uint8 or inpt.ndim != 3:
            raise TypeError(
                f"Letterbox expects a uint8 [C, H, W] image, got {inpt.dtype} {tuple(inpt.shape)}"
            )
        hwc = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).cpu().numpy()
        out, _ = letterbox(hwc, self.size, pad_value=self.pad_value)
        return tv_tensors.wrap(torch.from_numpy(out).permute(2, 0, 1), like=inpt)


def eval_transforms(size: int) -> v2.Compose:
    """Letterbox to ``size`` and scale to float32 0..1; takes ``(Image, {"boxes", "labels"})``.

    Pixels and boxes are exactly those of :func:`letterbox` and :func:`boxes_to_letterbox`.
    """
    return v2.Compose([Letterbox(size), v2.ToDtype(torch.float32, scale=True)])


def train_transforms(size: int, aug: AugmentConfig) -> v2.Compose:
    """Letterbox, then random affine (fill 114), colour jitter and flips as ``aug`` says; boxes
    are clamped to the image and those under 2 px dropped together with their labels.
    ``aug.enabled`` False gives :func:`eval_transforms`."""
    if not aug.enabled:
        return eval_transforms(size)
    steps: list[v2.Transform] = [
        Letterbox(size),
        v2.RandomAffine(
            degrees=aug.degrees,
            translate=(aug.translate, aug.translate) if aug.translate > 0 else None,
            scale=tuple(aug.scale),
            fill=PAD_VALUE,
        ),
    ]
    if any((aug.brightness, aug.contrast, aug.saturation, aug.hue)):
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=aug.vflip))
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)
