from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeyolo.detect import iter_sources, run_detect
from edgeyolo.errors import DataError

NAMES = ("zero", "one", "two")
BOX = np.array([[4.123, 5.0, 30.0, 40.556]])


def fake_predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    return BOX.copy(), np.array([0.97123]), np.array([2])


def _image(value: int) -> np.ndarray:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, :, 2] = value  # red in RGB
    return image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(["c.png", "a.png", "b.png"]):
        cv2.imwrite(str(src / name), _image(50 * i))
    cv2.imwrite(str(src / "d.jpg"), _image(200))
    (src / "notes.txt").write_text("not an image")
    return src


def _video(path: Path, frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(_image(40 * i))
    writer.release()
    return path


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_iter_sources_folder_sorted_rgb(folder: Path) -> None:
    frames = list(iter_sources(folder))
    assert [name for name, _, _ in frames] == ["a.png", "b.png", "c.png", "d.jpg"]
    assert all(index is None for _, _, index in frames)
    _, a_img, _ = frames[0]  # a.png was written (BGR) with channel 2 = 50: red 50 in RGB
    assert a_img.shape == (48, 64, 3) and a_img.dtype == np.uint8
    assert a_img[0, 0].tolist() == [50, 0, 0]


def test_run_detect_folder_writes_images_and_json(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    results = run_detect(folder, fake_predict, NAMES, out=out, save_json=True, show_progress=False)
    for stem in "abcd":
        assert (out / f"{stem}.jpg").is_file()
        assert cv2.imread(str(out / f"{stem}.jpg")).shape == (48, 64, 3)
    saved = json.loads((out / "detections.json").read_text())
    assert saved == results
    assert [r["image"] for r in saved] == ["a.png", "b.png", "c.png", "d.jpg"]
    expected = [{"label": "two", "bbox": [4.12, 5.0, 30.0, 40.56], "score": 0.9712}]
    assert all(r["detections"] == expected for r in saved)
    assert all("frame" not in r for r in saved)


def test_annotated_image_shows_the_box(folder: Path, tmp_path: Path) -> None:
    run_detect(folder / "a.png", fake_predict, NAMES, out=tmp_path / "o", show_progress=False)
    drawn = cv2.imread(str(tmp_path / "o" / "a.jpg"))
    background = cv2.imread(str(folder / "a.png"))
    assert np.abs(drawn[25, 4].astype(int) - background[25, 4]).max() > 40  # box's left edge


def test_single_image_json_is_a_list(folder: Path, tmp_path: Path) -> None:
    run_detect(
        folder / "d.jpg",
        fake_predict,
        NAMES,
        out=tmp_path / "o",
        save_json=True,
        show_progress=False,
    )
    saved = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert isinstance(saved, list) and len(saved) == 1 and saved[0]["image"] == "d.jpg"


def test_video_in_video_out(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.mp4")
    frames = list(iter_sources(video))
    assert [index for _, _, index in frames] == [0, 1, 2, 3, 4]
    out = tmp_path / "out"
    results = run_detect(video, fake_predict, NAMES, out=out, save_json=True, show_progress=True)
    assert [(r["image"], r["frame"]) for r in results] == [("clip.mp4", i) for i in range(5)]
    assert _count_frames(out / "clip.mp4") == 5
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    cap.release()


def test_keyboard_interrupt_keeps_what_was_done(folder: Path, tmp_path: Path) -> None:
    calls = []

    def interrupted(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fake_predict(image)

    out = tmp_path / "out"
    results = run_detect(folder, interrupted, NAMES, out=out, save_json=True, show_progress=False)
    assert [r["image"] for r in results] == ["a.png", "b.png"]
    assert len(json.loads((out / "detections.json").read_text())) == 2


def test_no_output_folder_writes_nothing(folder: Path, tmp_path: Path) -> None:
    results = run_detect(folder, fake_predict, NAMES, out=None, show_progress=False)
    assert len(results) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(ValueError, match="out"):
        run_detect(folder, fake_predict, NAMES, out=None, save_json=True, show_progress=False)


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(DataError, match="nowhere.jpg"):
        iter_sources(missing)
    with pytest.raises(DataError, match="nowhere.jpg"):
        run_detect(missing, fake_predict, NAMES, out=None, show_progress=False)


def test_corrupt_image_is_named(folder: Path) -> None:
    (folder / "broken.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(DataError, match="broken.png"):
        list(iter_sources(folder))


def test_unopenable_video_and_empty_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match="bad.mp4"):
        iter_sources(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        iter_sources(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unsupported"):
        iter_sources(tmp_path / "x.csv")
