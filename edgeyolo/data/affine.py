"""Letterbox and random affine in one OpenCV warp (numpy + OpenCV, no torch).

Training used to letterbox an image (one ``cv2.resize``) and then apply torchvision's
``RandomAffine`` to the letterboxed tensor (a second resampling): 0.7 + 2.6 ms a 320-px image on
one core. Both are affine maps, so their product is one 2x3 matrix and one ``cv2.warpAffine``
(bilinear, border :data:`~edgeyolo.data.letterbox.PAD_VALUE`) does both: about 0.3 ms
(bench/RESULTS.md, issue 22). Geometry, in continuous pixel coordinates (a pixel's centre at
``+0.5``)::

    letterbox:  x' = x * scale + pad_x                    (letterbox_params)
    affine:     x'' = R(angle) * s * (x' - c) + c + t      (c: the output's centre, t: shift)

Boxes go through the same matrix: their four corners are mapped and the new box is the corners'
bounds (as torchvision does for rotated boxes), then clamped and the small ones dropped by the
caller. The draws (angle, shift, zoom) are those of ``RandomAffine``: uniform angle in
``[-degrees, degrees]``, shift rounded to whole pixels, uniform zoom in ``[low, high]``.
"""

from __future__ import annotations

import math

import numpy as np

from edgeyolo.data.letterbox import PAD_VALUE, Size, letterbox_params, target_hw
from edgeyolo.lazy import CV2 as cv2

__all__ = ["affine_boxes", "letterbox_affine_matrix", "warp_letterbox_affine"]


def letterbox_affine_matrix(
    width: int,
    height: int,
    size: Size,
    *,
    angle: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    zoom: float = 1.0,
) -> np.ndarray:
    """``float64[3, 3]`` mapping an original ``width`` x ``height`` image's continuous pixel
    coordinates to the letterboxed (``size``), then rotated (``angle`` degrees, counter-clockwise
    on screen, as torchvision), zoomed (``zoom``) and shifted (``shift`` px) output's."""
    scale, pad_x, pad_y = letterbox_params(width, height, size)
    out_h, out_w = target_hw(size)
    lb = np.array([[scale, 0.0, pad_x], [0.0, scale, pad_y], [0.0, 0.0, 1.0]])
    a = math.radians(angle)
    cos, sin = math.cos(a) * zoom, math.sin(a) * zoom
    cx, cy = out_w / 2.0, out_h / 2.0
    # y points down: a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]]
    rot = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    to_centre = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + shift[0]], [0.0, 1.0, cy + shift[1]], [0.0, 0.0, 1.0]])
    return back @ rot @ to_centre @ lb


def warp_letterbox_affine(
    image: np.ndarray, matrix: np.ndarray, size: Size, *, pad_value: int = PAD_VALUE
) -> np.ndarray:
    """``image`` (``uint8[H, W, C]``) through ``matrix`` (:func:`letterbox_affine_matrix`) into
    a ``uint8[S_h, S_w, C]`` canvas, bilinear, the uncovered parts ``pad_value``."""
    out_h, out_w = target_hw(size)
    # cv2 indexes pixel centres at integers: shift continuous coordinates by half a pixel
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unhalf = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    m = (unhalf @ matrix @ half)[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    return cv2.warpAffine(
        image,
        m,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(pad_value,) * min(channels, 4),
    )


def affine_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``float[N, 4]`` xyxy boxes through ``matrix``: the bounds of their mapped corners,
    ``float32[N, 4]`` (not clamped)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xs = b[:, [0, 2, 2, 0]]
    ys = b[:, [1, 1, 3, 3]]
    mx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    my = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    out = np.stack([mx.min(1), my.min(1), mx.max(1), my.max(1)], axis=1)
    return out.astype(np.float32)
