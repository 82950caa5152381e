"""``examples/camera.py`` runs as written on a video file with a real exported graph."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "camera.py"


def test_camera_example_shows_every_frame_with_boxes_and_fps(
    exported: Path, mnist_small_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 4-frame video of real MNIST-detection images; the busy model finds boxes on them.
    files = sorted((mnist_small_yaml.parent / "images").rglob("*.jpg"))[:4]
    frames = [cv2.resize(cv2.imread(str(f)), (160, 120)) for f in files]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (160, 120))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()

    shown: list[np.ndarray] = []  # opencv-headless has no window: record what would be shown
    monkeypatch.setattr(cv2, "imshow", lambda _name, img: shown.append(img.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda _ms: -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(exported / "model_fp32.onnx"), str(video)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")

    assert len(shown) == 4 and all(s.shape == (120, 160, 3) for s in shown)
    # Pure red (0, 0, 255) is the FPS text; pure green (0, 200, 0) the boxes and labels. Neither
    # occurs in the grey-and-white MNIST frames.
    for s in shown:
        assert (s == (0, 0, 255)).all(axis=-1).any()
    assert sum((s == (0, 200, 0)).all(axis=-1).sum() for s in shown) > 0
