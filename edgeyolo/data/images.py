"""Decoding an annotated image, and the network input every backend receives (no torch here)."""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeyolo.data.letterbox import LetterboxParams, letterbox, to_input
from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import DataError

__all__ = ["network_input", "read_rgb"]


def read_rgb(path: str, *, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Decode an image file as ``uint8[H, W, 3]`` RGB (EXIF orientation is not applied, as
    the annotation readers take the size from the header). Raises DataError naming the file
    if it cannot be decoded or its size differs from the expected ``width`` x ``height``."""
    try:
        with Image.open(path) as im:
            array = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image: {e}", file=path) from e
    if width is not None and height is not None and array.shape[:2] != (height, width):
        h, w = array.shape[:2]
        raise DataError(f"image is {w}x{h} but its annotation says {width}x{height}", file=path)
    return array


def network_input(record: ImageRecord, img_size: int) -> tuple[np.ndarray, LetterboxParams]:
    """The image of ``record`` as every backend receives it: ``float32[3, S, S]`` RGB in 0..1,
    letterboxed to ``img_size`` (the pixels of the evaluation transform, bit for bit), and its
    ``(scale, pad_x, pad_y)``."""
    rgb = read_rgb(str(record.path), width=record.width, height=record.height)
    boxed, params = letterbox(rgb, img_size)
    return to_input(boxed), params
