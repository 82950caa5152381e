"""The in-memory form every annotation reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The image files every reader of folders accepts (data sets, calibration sets, ``detect``).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)


@dataclass
class ImageRecord:
    """One annotated image.

    Attributes:
        path: the image file.
        boxes: ``float32[N, 4]``, xyxy in pixels of the original image, origin top-left.
        classes: ``int64[N]``, class ids in ``[0, num_classes)``.
        width, height: image size in pixels (read from the file header when not in the annotation).
    """

    path: Path
    boxes: np.ndarray
    classes: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.classes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.classes)} classes")


@dataclass
class Problem:
    """A bad input that was skipped because ``skip_bad`` was asked for."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class Split:
    """The records of one split plus what was skipped while reading it."""

    records: list[ImageRecord]
    problems: list[Problem] = field(default_factory=list)


@dataclass
class DatasetSpec:
    """A parsed ``data.yaml``: where each split lives and the class names."""

    root: Path
    train: str
    val: str
    names: tuple[str, ...]
    test: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)


def describe_problems(name: str, problems: list[Problem], *, limit: int = 20) -> list[str]:
    """Lines telling what ``skip_bad`` skipped in split ``name`` (empty when nothing was)."""
    if not problems:
        return []
    lines = [f"skipped {len(problems)} bad input(s) in {name}:"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return lines
