"""Small fixtures for the data tests: tiny PNG images and records written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeyolo.data.records import ImageRecord

NAMES = ("cat", "dog", "bird")


def write_image(path: Path, width: int, height: int, value: int = 200) -> Path:
    """A ``width`` x ``height`` RGB PNG, filled with ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def sample_records(tmp_path: Path) -> list[ImageRecord]:
    """Three images in ``tmp_path/ds/images/train``: fractional boxes, a box touching the
    border, and an image without boxes."""
    folder = tmp_path / "ds" / "images" / "train"
    a = write_image(folder / "a.png", 64, 48)
    b = write_image(folder / "b.png", 50, 70)
    c = write_image(folder / "c.png", 40, 40)
    return [
        ImageRecord(a, [[1.25, 2.5, 30.75, 40.125], [10, 11, 63.5, 47]], [0, 2], 64, 48),
        ImageRecord(b, [[0, 0, 50, 70]], [1], 50, 70),
        ImageRecord(c, np.zeros((0, 4)), [], 40, 40),
    ]


def assert_same_records(
    got: list[ImageRecord], want: list[ImageRecord], *, atol: float = 1e-3
) -> None:
    """Same images (resolved paths, sizes), classes exactly, boxes to ``atol`` pixels."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.path.resolve() == w.path.resolve()
        assert (g.width, g.height) == (w.width, w.height)
        assert g.boxes.dtype == np.float32 and g.classes.dtype == np.int64
        np.testing.assert_array_equal(g.classes, w.classes)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=atol, rtol=0)
