"""``examples/camera.py`` runs as written on a video file with a real exported graph: in a window
where there is a display, to a video file where there is none."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeyolo.runtime import capture

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "camera.py"


@pytest.fixture
def clip(mnist_small_yaml: Path, tmp_path: Path) -> Path:
    """A 4-frame video of real MNIST-detection images; the busy model finds boxes on them."""
    files = sorted((mnist_small_yaml.parent / "images").rglob("*.jpg"))[:4]
    frames = [cv2.resize(cv2.imread(str(f)), (160, 120)) for f in files]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (160, 120))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return video


def _has_stats_and_boxes(frames: list[np.ndarray]) -> None:
    # Pure red (0, 0, 255) is the FPS / stage-times text; pure green (0, 200, 0) the boxes and
    # labels. Neither occurs in the grey-and-white MNIST frames.
    for s in frames:
        assert (s == (0, 0, 255)).all(axis=-1).any()
    assert sum((s == (0, 200, 0)).all(axis=-1).sum() for s in frames) > 0


def test_camera_example_shows_every_frame_with_boxes_and_fps(
    exported: Path, clip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[np.ndarray] = []  # a display is pretended: record what would be shown
    monkeypatch.setattr(capture, "display_problem", lambda: None)
    monkeypatch.setattr(cv2, "imshow", lambda _name, img: shown.append(img.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda _ms: -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(exported / "model_fp32.onnx"), str(clip)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")

    assert len(shown) == 4 and all(s.shape == (120, 160, 3) for s in shown)  # a file: every frame
    _has_stats_and_boxes(shown)
    said = capsys.readouterr().out
    assert "4 frame(s) in" in said and "infer" in said and "captured" not in said


def test_camera_example_headless_writes_the_video(
    exported: Path,
    clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_window(*_a: object) -> None:
        raise AssertionError("cv2.imshow called without a display")

    monkeypatch.setattr(capture, "display_problem", lambda: "no display ($DISPLAY is not set)")
    monkeypatch.setattr(cv2, "imshow", no_window)
    out = tmp_path / "annotated.mp4"
    argv = [str(EXAMPLE), str(exported / "model_fp32.onnx"), str(clip), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")

    said = capsys.readouterr().out
    assert f"no window: no display ($DISPLAY is not set); writing {out}" in said
    cap = cv2.VideoCapture(str(out))
    written = []
    while (got := cap.read())[0]:
        written.append(got[1])
    cap.release()
    assert len(written) == 4 and written[0].shape == (120, 160, 3)
    # mp4v is lossy: look for strongly red pixels rather than exactly (0, 0, 255)
    red = [((w[..., 2] > 180) & (w[..., 1] < 80) & (w[..., 0] < 80)).any() for w in written]
    assert all(red)


def test_camera_example_runs_two_sources_in_one_batch(
    exported: Path,
    clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two sources: one video each (``annotated_0.mp4``, ``annotated_1.mp4``), every frame of
    both, and one summary line per source."""
    monkeypatch.setattr(capture, "display_problem", lambda: "no display ($DISPLAY is not set)")
    out = tmp_path / "annotated.mp4"
    model = str(exported / "model_fp32.onnx")
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), model, str(clip), str(clip), "--out", str(out)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    said = capsys.readouterr().out
    for i in range(2):
        cap = cv2.VideoCapture(str(tmp_path / f"annotated_{i}.mp4"))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n == 4
        assert f"clip_{i}.avi: 4 frame(s) in" in said
