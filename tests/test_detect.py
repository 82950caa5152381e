from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rich.console import Console

import edgeyolo.detect_live as detect_live
from edgeyolo.detect import iter_sources, run_detect
from edgeyolo.errors import ConfigError, DataError, EdgeYoloError
from edgeyolo.runtime.capture import CSI_PIPELINE
from tests.export.conftest import busy_checkpoint  # noqa: F401 (a session fixture)

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


def test_frames_stops_after_that_many_and_keeps_every_output(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    results = run_detect(
        video, fake_predict, NAMES, out=out, save_json=True, show_progress=False, max_frames=2
    )
    assert [r["frame"] for r in results] == [0, 1]
    assert len(json.loads((out / "detections.json").read_text())) == 2
    assert _count_frames(out / "clip.mp4") == 2
    with pytest.raises(ConfigError, match="--frames must be 1 or more"):
        run_detect(video, fake_predict, NAMES, out=None, show_progress=False, max_frames=0)


def test_an_interrupt_while_writing_leaves_count_json_and_video_agreeing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C inside the third frame's write: two frames counted, recorded and in the video
    (the record used to be kept before the frame was written, so JSON said three)."""
    from edgeyolo import detect_live

    real_write = detect_live.Outputs.write
    calls: list[int] = []

    def write(self: detect_live.Outputs, *args: Any) -> bool:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(self, *args)

    monkeypatch.setattr(detect_live.Outputs, "write", write)
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    results = run_detect(video, fake_predict, NAMES, out=out, save_json=True, show_progress=False)
    assert [r["frame"] for r in results] == [0, 1]
    assert len(json.loads((out / "detections.json").read_text())) == 2
    assert _count_frames(out / "clip.mp4") == 2


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
    with pytest.raises(ConfigError, match="out"):
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
    with pytest.raises(DataError, match="cannot open camera 99"):
        iter_sources("99")
    with pytest.raises(EdgeYoloError, match="GStreamer"):  # not OSError: file name too long
        iter_sources("videotestsrc ! capsfilter name=" + "c" * 300 + " ! appsink")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unsupported"):
        iter_sources(tmp_path / "x.csv")


# ------------------------------------------------------------------ damaged inputs


def _truncated_jpeg(path: Path) -> Path:
    """A real JPEG cut in the middle of its image data (libjpeg: "Premature end of JPEG file")."""
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([x * 2, y * 2, x + y], axis=-1).astype(np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _counting(calls: list[int]):
    def predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(1)
        return fake_predict(image)

    return predict


def test_truncated_jpeg_stops_the_run_at_that_file(
    folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _truncated_jpeg(folder / "e_cut.jpg")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"e_cut\.jpg: cannot read image: .*truncated.*--skip-bad"):
        run_detect(folder, fake_predict, NAMES, out=out, save_json=True, show_progress=False)
    assert not (out / "detections.json").exists()  # no result file that looks complete
    with pytest.raises(DataError, match=r"e_cut\.jpg: cannot read image: .*truncated"):
        list(iter_sources(folder / "e_cut.jpg"))
    assert "Premature end of JPEG file" not in capfd.readouterr().err


def test_files_that_are_not_images_stop_the_run_before_anything_is_written(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "fake.jpg").write_text("this is a text file")
    calls: list[int] = []
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"fake\.jpg: cannot read image: not an image file"):
        run_detect(folder, _counting(calls), NAMES, out=out, save_json=True, show_progress=False)
    assert calls == [] and not out.exists()
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        run_detect(folder, _counting(calls), NAMES, out=out, show_progress=False)
    message = str(info.value)
    assert message.startswith(f"{folder}: 2 of 6 images cannot be read")
    assert "empty.png: cannot read image: the file is empty" in message
    assert "fake.jpg: cannot read image: not an image file" in message
    assert "--skip-bad" in message and calls == []


def test_skip_bad_names_counts_and_records_every_skipped_file(
    folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import io

    from rich.console import Console

    _truncated_jpeg(folder / "e_cut.jpg")  # found when decoded
    (folder / "fake.jpg").write_text("this is a text file")  # found before the run
    text = io.StringIO()
    calls: list[int] = []
    out = tmp_path / "out"
    results = run_detect(
        folder,
        _counting(calls),
        NAMES,
        out=out,
        save_json=True,
        show_progress=False,
        skip_bad=True,
        console=Console(file=text, width=60),
    )
    assert [r["image"] for r in results] == [
        "a.png",
        "b.png",
        "c.png",
        "d.jpg",
        "e_cut.jpg",
        "fake.jpg",
    ]
    skipped = {r["image"]: r["skipped"] for r in results if "skipped" in r}
    assert set(skipped) == {"e_cut.jpg", "fake.jpg"} and len(calls) == 4
    assert "truncated" in skipped["e_cut.jpg"] and "not an image" in skipped["fake.jpg"]
    assert json.loads((out / "detections.json").read_text()) == results
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    said = " ".join(text.getvalue().split())
    assert f"warning: skipped 1 bad input(s) in {folder}: {folder / 'fake.jpg'}: cannot" in said
    assert f"warning: skipped {folder / 'e_cut.jpg'}: cannot read image" in said
    assert said.count("fake.jpg") == 1  # named once, before the run
    assert "Premature end of JPEG file" not in capfd.readouterr().err


def test_skip_bad_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(DataError, match="none of its 1 image"):
        run_detect(tmp_path, fake_predict, NAMES, out=None, show_progress=False, skip_bad=True)


def test_images_are_read_upright_and_16_bit_images_scaled(tmp_path: Path) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (80, 40), (255, 0, 0)).save(tmp_path / "rotated.jpg", exif=exif)
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((8, 8), 32768, np.uint16))
    frames = {name: frame for name, frame, _ in iter_sources(tmp_path)}
    assert frames["rotated.jpg"].shape == (80, 40, 3)  # as OpenCV and viewers show it
    assert (frames["wide.png"] == 128).all()  # 32768 / 256, not clipped to 255


def test_a_video_that_ends_early_is_reported(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        writer.write(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = (tmp_path / "v.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])
    text = io.StringIO()
    console = Console(file=text, width=60)
    results = run_detect(tmp_path / "cut.avi", fake_predict, NAMES, out=None, console=console)
    assert 0 < len(results) < 10
    said = " ".join(text.getvalue().split())
    assert f"the video ended after {len(results)} of the 10 frames its header announces" in said


# ------------------------------------------------------------- live sources, timing, window


def _grey_clip(path: Path, frames: int, fps: float) -> Path:
    """MJPG clip whose frame ``i`` is flat grey ``5 * i``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    writer.release()
    return path


def _text_console() -> tuple[io.StringIO, Console]:
    text = io.StringIO()
    return text, Console(file=text, width=60)


def test_a_live_video_drops_frames_for_a_slow_model_and_records_capture_numbers(
    tmp_path: Path,
) -> None:
    video = _grey_clip(tmp_path / "clip.avi", frames=30, fps=25.0)
    seen: list[int] = []

    def slow(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen.append(round(float(image.mean()) / 5))  # which frame the model was given
        time.sleep(3 / 25.0)
        return fake_predict(image)

    text, console = _text_console()
    out = tmp_path / "out"
    results = run_detect(video, slow, NAMES, out=out, save_json=True, live=True, console=console)
    frames = [r["frame"] for r in results]
    assert frames == sorted(set(frames)) and frames[-1] == 29 and len(frames) < 30
    assert frames == seen  # the record's number is the frame the model saw
    assert _count_frames(out / "clip.mp4") == len(frames)
    said = " ".join(text.getvalue().split())
    assert f"timing: {len(frames)} frame(s) in" in said
    assert f"30 captured, {30 - len(frames)} dropped (the model is slower than the source" in said


def test_stage_times_come_from_the_detector_and_the_video_carries_them(tmp_path: Path) -> None:
    class Timed:
        last_times = {"pre": 1.0, "infer": 2.0, "post": 3.0}

    video = _video(tmp_path / "clip.mp4")
    text, console = _text_console()
    run_detect(video, fake_predict, NAMES, out=None, stages=Timed(), console=console)
    said = " ".join(text.getvalue().split())
    assert "per frame pre 1.0 ms, infer 2.0 ms, post 3.0 ms" in said  # nothing drawn: post as is
    assert "captured" not in said  # a file read in order drops nothing
    run_detect(video, fake_predict, NAMES, out=tmp_path / "o", show_progress=False)
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip.mp4"))
    first = cap.read()[1]
    cap.release()
    red = (first[..., 2] > 180) & (first[..., 1] < 80) & (first[..., 0] < 80)
    assert red[:20].any() and not red[30:].any()  # the FPS / stage line at the top, in red


def test_show_without_a_display_says_so_and_still_writes(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_window(*_a: object) -> None:
        raise AssertionError("imshow called without a display")

    monkeypatch.setattr(detect_live, "display_problem", lambda: "no display ($DISPLAY is not set)")
    monkeypatch.setattr(cv2, "imshow", no_window)
    text, console = _text_console()
    out = tmp_path / "out"
    results = run_detect(folder, fake_predict, NAMES, out=out, show=True, console=console)
    assert len(results) == 4 and len(list(out.glob("*.jpg"))) == 4
    said = " ".join(text.getvalue().split())
    assert (
        f"warning: no window: no display ($DISPLAY is not set); the annotated output goes to {out}"
        in said
    )


def test_show_with_a_display_shows_each_frame_and_q_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[np.ndarray] = []
    keys = iter([-1, ord("q")])
    monkeypatch.setattr(detect_live, "display_problem", lambda: None)
    monkeypatch.setattr(cv2, "imshow", lambda _name, img: shown.append(img))
    monkeypatch.setattr(cv2, "waitKey", lambda _ms: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    video = _video(tmp_path / "clip.mp4")
    text, console = _text_console()
    out = tmp_path / "out"
    results = run_detect(
        video, fake_predict, NAMES, out=out, save_json=True, show=True, console=console
    )
    assert len(shown) == 2 and [r["frame"] for r in results] == [0, 1]
    assert shown[0].shape == (48, 64, 3) and (shown[0] == (0, 0, 255)).all(axis=-1).any()
    assert "stopped at the window after 2 frames" in " ".join(text.getvalue().split())
    assert len(json.loads((out / "detections.json").read_text())) == 2


# ------------------------------------------------------------- errors through the CLI


def _cli(args: list[object], columns: int):
    from typer.testing import CliRunner

    from edgeyolo.cli import app

    runner = CliRunner()
    return runner.invoke(
        app, [str(a) for a in args], env={"COLUMNS": str(columns)}, terminal_width=columns
    )


def _one_error_line(result, says: str) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and says in errors[0], result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash


def _bad_sources(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Source argument and what the error must say, per case."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 50)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "fake.jpg").write_text("text")
    return {
        "video": (str(tmp_path / "bad.mp4"), "bad.mp4: cannot open this video"),
        "camera": ("99", "cannot open camera 99"),
        "url": ("rtsp://u:pw@127.0.0.1:9/x", "rtsp://u:***@127.0.0.1:9/x: cannot open this stream"),
        "pipeline": (CSI_PIPELINE, "this OpenCV build has no GStreamer support"),
        "empty folder": (str(tmp_path / "empty"), "empty: no images"),
        "not an image": (str(tmp_path / "pics"), "fake.jpg: cannot read image: not an image"),
    }


@pytest.mark.parametrize("columns", [60, 200])
@pytest.mark.parametrize(
    "case", ["video", "camera", "url", "pipeline", "empty folder", "not an image"]
)
def test_detect_cli_names_a_bad_source_in_one_line(
    busy_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    case: str,
    columns: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "    GStreamer:  NO\n")  # as pip's
    source, says = _bad_sources(tmp_path)[case]
    args = ["detect", source, "--model", busy_checkpoint, "--device", "cpu"]
    _one_error_line(_cli([*args, "--out", tmp_path / "o"], columns), says)


def _corrupt_onnx(tmp_path: Path, *, manifest: bool) -> Path:
    from edgeyolo.runtime.manifest import write_manifest

    folder = tmp_path / ("with_manifest" if manifest else "bare")
    folder.mkdir()
    path = folder / "model_fp32.onnx"
    path.write_bytes(b"\x08\x07\x12\x04half" + bytes(range(256)) * 4)
    if manifest:
        nms = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100}
        data = {"input": {"shape": ["batch", 3, 64, 64]}, "outputs": [], "classes": ["a"]}
        write_manifest(folder, {**data, "nms": nms, "artifacts": []})
    return path


@pytest.mark.parametrize("columns", [60, 200])
def test_detect_cli_names_a_bad_model_in_one_line(tmp_path: Path, columns: int) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(10))
    cases = [
        (_corrupt_onnx(tmp_path, manifest=False), "model_fp32.onnx: "),
        (_corrupt_onnx(tmp_path, manifest=True), "ONNX Runtime cannot load this graph"),
        (tmp_path / "nope.onnx", "nope.onnx: no such model file"),
        (tmp_path / "nope.engine", "nope.engine: no such model file"),
    ]
    for model, says in cases:
        result = _cli(["detect", image, "--model", model, "--out", tmp_path / "o"], columns)
        _one_error_line(result, says)
        assert "edgeyolo export" in result.output or "no such" in result.output  # what to do


def test_detect_cli_skip_bad_reports_and_counts(
    busy_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"{i}.png"), _image(60 * i))
    _truncated_jpeg(src / "cut.jpg")
    (src / "fake.jpg").write_text("text")
    out = tmp_path / "out"
    args = ["detect", src, "--model", busy_checkpoint, "--device", "cpu", "--out", out, "--json"]
    stopped = _cli(args, 60)
    _one_error_line(stopped, "fake.jpg: cannot read image: not an image file")
    assert "--skip-bad" in stopped.output and not out.exists()
    result = _cli([*args, "--skip-bad"], 60)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "fake.jpg" in said and f"skipped {src / 'cut.jpg'}" in said
    assert "2 frame(s)" in said and "2 skipped (unreadable, named above)" in said
    assert "pytorch on cpu, conf 0.25, IoU 0.45, max_det 100" in said
    records = json.loads((out / "detections.json").read_text())
    assert [r.get("skipped", "")[:19] for r in records] == [
        "",
        "",
        "cannot read image: ",
        "cannot read image: ",
    ]


def test_detect_and_the_threshold_rules_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, edgeyolo.detect, edgeyolo.runtime.thresholds, edgeyolo.runtime.onnxruntime\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr
