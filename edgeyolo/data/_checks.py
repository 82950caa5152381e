"""Validation shared by the annotation readers (see :mod:`edgeyolo.data.formats`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeyolo.data.records import ImageRecord, Problem, Split
from edgeyolo.errors import DataError

#: Boxes may stick out of the image by this many pixels (float rounding); they are clipped.
BOX_SLACK: float = 1.0

Where = tuple[Path, int | None]  # (file, 1-based line) to name in a DataError


def image_size(path: str | Path, *, where: Where | None = None) -> tuple[int, int]:
    """(width, height) of an image, read from its header only (cheap: no pixel decoding).

    Raises DataError naming ``where`` (default: the image itself) if the image is missing or
    not a readable image.
    """
    file, line = where if where is not None else (Path(path), None)
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}", file=file, line=line) from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}", file=file, line=line) from e


def check_box(
    box: Sequence[float],
    cls: int,
    width: int,
    height: int,
    num_classes: int | None,
    *,
    where: Where,
    what: str = "box",
) -> tuple[float, float, float, float]:
    """Validate one xyxy pixel box; returns it clipped to the image."""
    file, line = where
    if cls < 0 or (num_classes is not None and cls >= num_classes):
        limit = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{what}: unknown class id {cls}, expected {limit}", file=file, line=line)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise DataError(f"{what}: coordinates are not finite numbers", file=file, line=line)
    coords = f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{what} {coords} has zero or negative area", file=file, line=line)
    s = BOX_SLACK
    if x1 < -s or y1 < -s or x2 > width + s or y2 > height + s:
        raise DataError(
            f"{what} {coords} lies outside the {width}x{height} image", file=file, line=line
        )
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{what} {coords} has zero area inside the image", file=file, line=line)
    return x1, y1, x2, y2


def parse_class(text: str) -> int:
    value = float(text)  # accepts "3" and "3.0"; ValueError otherwise
    if not value.is_integer():
        raise ValueError(f"class id {text!r} is not an integer")
    return int(value)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError("annotation file not found", file=path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file: {e}", file=path) from e


def skip_or_raise(split: Split, error: DataError, skip_bad: bool) -> None:
    if not skip_bad:
        raise error
    split.problems.append(Problem(error.file or "", error.line, error.reason))


def make_record(
    path: Path, boxes: list, classes: list[int], width: int, height: int
) -> ImageRecord:
    return ImageRecord(Path(os.path.abspath(path)), boxes, classes, width, height)


def relative_path(path: Path, folder: Path) -> Path:
    """``path`` relative to ``folder`` when it lies inside it, else absolute."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    try:
        return path.relative_to(folder)
    except ValueError:
        return path


def float32_text(value: float) -> str:
    """Shortest text that reads back as the same float32 (``12`` rather than ``12.0``)."""
    return np.format_float_positional(np.float32(value), trim="-")
