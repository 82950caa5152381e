"""Mosaic augmentation (YOLOv4, Ultralytics): four training images tiled around a random point.

Each of the four images is resized as the letterbox would (longest side to ``size``, aspect kept,
cv2 ``INTER_LINEAR``) and placed in one quadrant of a ``size`` x ``size`` canvas so that one of its
corners touches the split point ``(xc, yc)``, as Ultralytics' ``load_mosaic`` does within its crop
window::

    +---------------+---------+        image 0: its bottom-right corner at (xc, yc)
    |   0 (its      | 1 (its  |        image 1: its bottom-left corner at (xc, yc)
    |  bottom-right)| b-left) |        image 2: its top-right corner at (xc, yc)
    +------- (xc, yc) --------+        image 3: its top-left corner at (xc, yc)
    |   2 (top-r.)  | 3 (t-l) |
    +---------------+---------+

The rest of the canvas is :data:`~edgeyolo.data.letterbox.PAD_VALUE` grey. Boxes move with their
pixels, are clipped to their quadrant, and are dropped when less than :data:`MIN_VISIBLE` of their
(resized) area remains or when narrower or lower than :data:`MIN_SIDE` pixels.
torchvision.transforms.v2 has no mosaic (it transforms one sample at a time), hence numpy + cv2
here; the dataset then applies its usual v2 pipeline (affine, colour, clamp, sanitize).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeyolo.data.letterbox import PAD_VALUE
from edgeyolo.errors import ConfigError

__all__ = ["MIN_SIDE", "MIN_VISIBLE", "mosaic4", "mosaic_centre_range"]

#: Smallest part of a box's area that must stay inside its quadrant for the box to be kept
#: (Ultralytics' ``box_candidates`` keeps 10 %; a quarter of a digit is already hard to read, so
#: more is asked here: a box kept is a box a person could still label).
MIN_VISIBLE: float = 0.25
#: Smallest width and height (pixels) of a kept box (Ultralytics' ``wh_thr`` is 2).
MIN_SIDE: float = 2.0


def mosaic_centre_range(size: int) -> tuple[int, int]:
    """The range ``[low, high]`` (inclusive) the split point's x and y are drawn from: the middle
    half of the canvas, so that every quadrant is at least a quarter of ``size`` wide."""
    return size // 4, size - size // 4


def _resize_long_side(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``image`` with its longest side made ``size`` (the letterbox's scale), and that scale."""
    height, width = image.shape[:2]
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) == (width, height):
        return image, scale
    resized = cv2.resize(
        np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR
    )
    return resized.reshape(new_h, new_w, *image.shape[2:]), scale


def _quadrant(
    k: int, w: int, h: int, xc: int, yc: int, size: int
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Canvas region ``(x1, y1, x2, y2)`` of quadrant ``k`` for a ``w`` x ``h`` image, and the
    image's top-left corner on the canvas (may be negative: the image is cropped there)."""
    left, top = xc - w, yc - h  # image corner when it ends at the split point
    ox = left if k in (0, 2) else xc
    oy = top if k in (0, 1) else yc
    x1, x2 = (max(0, left), xc) if k in (0, 2) else (xc, min(size, xc + w))
    y1, y2 = (max(0, top), yc) if k in (0, 1) else (yc, min(size, yc + h))
    return (x1, y1, x2, y2), (ox, oy)


def _place_boxes(
    boxes: np.ndarray, scale: float, offset: tuple[int, int], region: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``boxes`` (original pixels) scaled, shifted by ``offset`` and clipped to ``region``; and
    the mask of those kept (visible share >= MIN_VISIBLE, sides >= MIN_SIDE)."""
    moved = boxes.astype(np.float32) * np.float32(scale)
    moved += np.asarray([*offset, *offset], dtype=np.float32)
    x1, y1, x2, y2 = region
    clipped = moved.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x1, x2)
    clipped[:, 1::2] = clipped[:, 1::2].clip(y1, y2)
    wh = clipped[:, 2:] - clipped[:, :2]
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = wh[:, 0] * wh[:, 1]
    keep = (wh >= MIN_SIDE).all(axis=1) & (visible >= MIN_VISIBLE * np.maximum(area, 1e-9))
    return clipped, keep


def mosaic4(
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    *,
    size: int,
    centre: tuple[int, int],
    pad_value: int = PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile four images around ``centre`` into one ``size`` x ``size`` image (module docstring).

    Args:
        images: four ``uint8[H_k, W_k, C]`` images (same ``C``), any sizes.
        boxes: per image ``float[N_k, 4]`` xyxy in that image's pixels.
        classes: per image ``int[N_k]``.
        size: the side of the output square.
        centre: the split point ``(xc, yc)``, each in ``[0, size]``.
        pad_value: fill of the canvas where no image lands.

    Returns:
        ``(uint8[size, size, C], float32[K, 4] xyxy boxes, int64[K] classes)``, the boxes of
        image 0 first, then 1, 2, 3, each in its original order.

    Raises:
        ConfigError: not four images, boxes or classes, or ``centre`` outside the canvas.
    """
    if not len(images) == len(boxes) == len(classes) == 4:
        raise ConfigError(
            f"mosaic4 needs 4 images, boxes and classes; got {len(images)}, {len(boxes)} "
            f"and {len(classes)}"
        )
    xc, yc = (int(v) for v in centre)
    if not (0 <= xc <= size and 0 <= yc <= size):
        raise ConfigError(f"mosaic centre ({xc}, {yc}) is outside the {size} x {size} canvas")
    canvas = np.full((size, size, *images[0].shape[2:]), pad_value, dtype=np.uint8)
    out_boxes, out_classes = [], []
    for k, (image, b, c) in enumerate(zip(images, boxes, classes, strict=True)):
        resized, scale = _resize_long_side(image, size)
        h, w = resized.shape[:2]
        region, (ox, oy) = _quadrant(k, w, h, xc, yc, size)
        x1, y1, x2, y2 = region
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = resized[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
        placed, keep = _place_boxes(np.asarray(b).reshape(-1, 4), scale, (ox, oy), region)
        out_boxes.append(placed[keep])
        out_classes.append(np.asarray(c, dtype=np.int64).reshape(-1)[keep])
    return canvas, np.concatenate(out_boxes), np.concatenate(out_classes)
