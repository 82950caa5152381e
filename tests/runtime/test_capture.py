"""Frame sources for camera apps: what a source string names, the one-slot live capture that a
slow model cannot fall behind, the errors that name the source, and the loop's timing figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgeyolo.detections import Detections
from edgeyolo.errors import DataError, MissingDependencyError
from edgeyolo.runtime.backends import Backend
from edgeyolo.runtime.capture import (
    CSI_PIPELINE,
    Capture,
    LatestFrame,
    LoopStats,
    display_problem,
    draw_stats,
    opencv_gui,
    opencv_has_gstreamer,
    parse_source,
)
from edgeyolo.runtime.detector import Detector

FPS = 25.0
FRAMES = 40
STEP = 5  # frame i is a flat grey of value STEP * i: its pixels say which frame it is


def _clip(path: Path, frames: int = FRAMES, fps: float = FPS) -> Path:
    """A real video file (MJPG in AVI) whose frame ``i`` is flat grey ``STEP * i``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), STEP * i, np.uint8))
    writer.release()
    return path


def _frame_number(image: np.ndarray) -> int:
    return round(float(image.mean()) / STEP)


class SlowBackend(Backend):
    """A model that takes ``delay`` seconds per call and finds nothing."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.img_size = 32
        self.class_names = ("thing",)
        self.calls = 0

    def infer(self, images: np.ndarray) -> list[Detections]:
        time.sleep(self.delay)
        self.calls += 1
        self.last_times = {"compute": self.delay * 1e3}
        return [Detections.empty() for _ in range(len(images))]


# ------------------------------------------------------------------ the slow-model property


def test_a_slow_model_always_gets_the_newest_frame_and_drops_the_rest(tmp_path: Path) -> None:
    # A 25 fps file read live (paced at its FPS, as a camera sends frames) and a model 3 frame
    # periods slow. Each frame the loop takes must be the newest captured, or one behind when a
    # frame arrived between the take and the look: never an older one (no queue builds up).
    video = _clip(tmp_path / "clip.avi")
    taken: list[tuple[int, int]] = []  # (sequence number taken, newest captured at that moment)
    shown_at: list[int] = []  # newest captured when the result was ready (not asserted: timing)
    start = time.perf_counter()
    with Detector(SlowBackend(delay=3 / FPS)) as det, Capture(video, live=True) as cap:
        assert cap.live and cap.fps == pytest.approx(FPS)
        for f in cap:
            taken.append((f.seq, cap.newest_seq))
            assert _frame_number(f.image) == f.seq  # the number names the right image
            det(f.image)
            shown_at.append(cap.newest_seq)
            assert set(det.last_times) == {"pre", "infer", "post"}
    elapsed = time.perf_counter() - start
    seqs = [s for s, _ in taken]
    # Paced: frame n is not read before n / FPS (a lower bound; a loaded machine only adds).
    assert elapsed >= (FRAMES - 1) / FPS * 0.95
    assert all(newest - seq <= 1 for seq, newest in taken), (taken, shown_at)
    assert seqs == sorted(set(seqs))  # in capture order, none twice
    assert cap.captured == FRAMES and seqs[-1] == FRAMES - 1  # the last frame is still shown
    assert len(seqs) < FRAMES and cap.dropped == FRAMES - len(seqs) > 0
    assert cap.delivered == len(seqs) and not cap.running


def test_a_file_is_read_in_order_by_default(tmp_path: Path) -> None:
    video = _clip(tmp_path / "clip.avi")
    with Capture(video) as cap:
        assert not cap.live and cap.total == FRAMES
        frames = [(f.seq, _frame_number(f.image)) for f in cap]
    assert frames == [(i, i) for i in range(FRAMES)]
    assert cap.dropped == 0 and cap.captured == FRAMES


def test_latest_frame_keeps_one_and_counts_the_replaced() -> None:
    buf = LatestFrame()
    assert buf.newest_seq == -1
    for i in range(3):
        assert buf.put(np.full((2, 2, 3), i, np.uint8)) == i
    got = buf.take(timeout=0)
    assert got is not None and got.seq == 2 and int(got.image[0, 0, 0]) == 2
    assert buf.dropped == 2 and buf.captured == 3
    with pytest.raises(TimeoutError):
        buf.take(timeout=0)
    buf.put(np.zeros((2, 2, 3), np.uint8))
    buf.end(DataError("gone"))
    last = buf.take(timeout=0)
    assert last is not None and last.seq == 3  # the frame before the error is still given
    with pytest.raises(DataError, match="gone"):
        buf.take(timeout=0)


# --------------------------------------------------------------------------- sources


def test_parse_source_names_each_kind(tmp_path: Path) -> None:
    assert (parse_source("0").kind, parse_source("0").target, parse_source("0").stem) == (
        "camera",
        0,
        "camera0",
    )
    assert parse_source(2).name == "camera 2"
    url = parse_source("rtsp://admin:secret@192.168.1.10:554/live?x=1")
    assert url.kind == "url" and url.live and url.target.startswith("rtsp://admin:secret@")
    assert url.name == "rtsp://admin:***@192.168.1.10:554/live?x=1"
    assert parse_source("http://cam.local/video.mjpg").name == "http://cam.local/video.mjpg"
    gst = parse_source(CSI_PIPELINE)
    assert gst.kind == "gstreamer" and gst.target == CSI_PIPELINE and "nvarguscamerasrc" in gst.name
    long = "videotestsrc ! capsfilter name=" + "c" * 300 + " ! appsink"  # a 300-char "file name"
    assert parse_source(long).kind == "gstreamer"
    odd = tmp_path / "wow!.avi"
    odd.write_bytes(b"x")
    assert parse_source(str(odd)).kind == "file"  # an existing path is a path, "!" or not
    clip = parse_source("clips/missing.mp4")
    assert (clip.kind, clip.live, clip.stem) == ("file", False, "missing")


def test_opencv_build_information_is_read() -> None:
    assert opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    assert not opencv_has_gstreamer("    GStreamer:                   NO\n")
    assert not opencv_has_gstreamer("  Video I/O:\n    FFMPEG: YES\n")
    assert opencv_gui("  GUI:                           NONE\n  Media I/O:\n") == ""
    assert opencv_gui("  GUI:                           GTK3\n    GTK+: YES (ver 3.24)\n") == "GTK3"
    old = "  GUI: \n    GTK+:                        YES (ver 3.24.20)\n  Media I/O:\n"
    assert opencv_gui(old) == "GTK+"  # OpenCV 4.5's layout
    assert opencv_gui("  GUI: \n  Media I/O: \n    ZLib: YES\n") == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="$DISPLAY is a Linux matter")
def test_display_problem_says_why_no_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "currentUIFramework", lambda: "", raising=False)
    assert "opencv-python-headless" in str(display_problem())
    monkeypatch.setattr(cv2, "currentUIFramework", lambda: "GTK3", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_problem() == "no display ($DISPLAY is not set)"
    monkeypatch.setenv("DISPLAY", ":0")
    assert display_problem() is None


def test_gstreamer_without_support_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "    GStreamer:  NO\n")
    with pytest.raises(MissingDependencyError) as info:
        Capture(CSI_PIPELINE).open()
    message = str(info.value)
    assert message.startswith(f"GStreamer pipeline '{CSI_PIPELINE}': this OpenCV build has no")
    assert "JetPack's OpenCV" in message and "--system-site-packages" in message


class FakeVideo:
    """Stands in for ``cv2.VideoCapture``: ``frames`` frames, then the end (or a wait on
    ``block`` before each read, when given)."""

    made: list[FakeVideo] = []

    def __init__(self, target, api=None, params=None, *, frames: int = 3, block=None) -> None:
        self.args = (target, api)
        self.left, self.block, self.released, self.n = frames, block, False, 0
        FakeVideo.made.append(self)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else -1.0

    def read(self):
        if self.block is not None:
            self.block.wait()
        if self.left == 0:
            return False, None
        self.left -= 1
        self.n += 1
        return True, np.full((4, 4, 3), self.n, np.uint8)

    def release(self) -> None:
        self.released = True


def _fake(monkeypatch: pytest.MonkeyPatch, **kw) -> None:
    FakeVideo.made = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: FakeVideo(*a, **kw))


def test_a_gstreamer_pipeline_opens_through_cap_gstreamer_and_its_end_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "    GStreamer:  YES (1.20.3)\n")
    _fake(monkeypatch, frames=2)
    seqs = []
    with (
        pytest.raises(DataError, match=r"'.*appsink drop=1': the stream ended after 2 frame"),
        Capture(CSI_PIPELINE, reconnect_s=None) as cap,
    ):
        for f in cap:  # the error comes after the last frame
            seqs.append(f.seq)
    assert FakeVideo.made[0].args == (CSI_PIPELINE, cv2.CAP_GSTREAMER)
    assert seqs[-1] == 1 and FakeVideo.made[0].released and not cap.running
    with pytest.raises(DataError, match="must end in appsink"):
        Capture("videotestsrc ! autovideosink").open()


def test_a_camera_that_stops_sending_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, frames=3)
    seqs = []
    with (
        pytest.raises(DataError, match=r"^camera 0: the camera ended after 3 frame"),
        Capture("0", reconnect_s=None) as cap,
    ):
        for f in cap:
            seqs.append(f.seq)
    assert seqs[-1] == 2 and FakeVideo.made[0].released and not cap.running
    _fake(monkeypatch, frames=0)
    with (
        pytest.raises(DataError, match=r"^camera 0: opened, but not one frame"),
        Capture(0, live=False) as cap,
    ):
        list(cap)


def test_the_thread_is_joined_when_the_loop_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, frames=10**9)
    with pytest.raises(ValueError, match="the app failed"), Capture(0) as cap:
        for _ in cap:
            raise ValueError("the app failed")
    assert not cap.running and FakeVideo.made[0].released


def test_a_stalled_stream_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    never = threading.Event()
    _fake(monkeypatch, frames=1, block=never)
    try:
        with (
            pytest.raises(DataError, match=r"^camera 0: no new frame for 0.2 s"),
            Capture(0, stall_timeout=0.2, join_timeout=0.1, reconnect_s=None) as cap,
        ):
            list(cap)
    finally:
        never.set()  # the read returns; the thread ends and releases its capture
    cap._thread.join(5)
    assert not cap.running and FakeVideo.made[0].released


# ---------------------------------------------------------------------------- reconnecting


class FlakySource:
    """A live source that can go away and come back, behind a stand-in ``cv2.VideoCapture``:
    opens fail while it is down; a capture opened before it went down fails its next read and
    stays failed (as OpenCV's do), so only a reopen brings frames back. ``block`` (when given)
    holds the reads of the first capture, as a GStreamer read with no timeout does."""

    def __init__(self, block: threading.Event | None = None) -> None:
        self.up, self.epoch, self.block = True, 0, block
        self.opens: list[float] = []  # perf_counter of every open tried
        self.made: list[FlakyVideo] = []

    def down(self) -> None:
        self.up, self.epoch = False, self.epoch + 1

    def video(self, *args: object) -> FlakyVideo:
        self.opens.append(time.perf_counter())
        made = FlakyVideo(self, stuck=self.block is not None and not self.made)
        self.made.append(made)
        return made


class FlakyVideo:
    def __init__(self, src: FlakySource, *, stuck: bool) -> None:
        self.src, self.epoch, self.stuck = src, src.epoch, stuck
        self.opened, self.released = src.up, False

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else -1.0  # no frame count: endless

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.stuck and self.src.block is not None:
            self.src.block.wait()
            return False, None
        time.sleep(0.01)  # ~100 fps
        if not self.src.up or self.epoch != self.src.epoch:
            self.opened = False
        return (True, np.zeros((4, 4, 3), np.uint8)) if self.opened else (False, None)

    def release(self) -> None:
        self.released = True


URL = "rtsp://user:secret@10.0.0.9/cam"


def _flaky(monkeypatch: pytest.MonkeyPatch, **kw: threading.Event) -> FlakySource:
    src = FlakySource(**kw)
    monkeypatch.setattr(cv2, "VideoCapture", src.video)
    return src


def _capture_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edgeyolo-capture"]


@pytest.mark.parametrize("live", [True, False])
def test_a_lost_stream_is_reopened_with_backoff_and_numbered_on(
    monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    src = _flaky(monkeypatch)
    lines: list[str] = []
    seqs: list[int] = []
    back = None
    with Capture(URL, live=live, reconnect_s=5, on_status=lines.append) as cap:
        for f in cap:
            seqs.append(f.seq)
            if len(seqs) == 5:
                src.down()  # back 1.2 s later: the tries at 0.5 s fails, at 1.5 s opens
                back = threading.Timer(1.2, lambda: setattr(src, "up", True))
                back.start()
            if len(seqs) == 15:
                break
    assert back is not None
    back.join()
    assert seqs == sorted(set(seqs)) and len(seqs) == 15  # never reset, never twice
    assert len(lines) == 2, lines
    assert re.fullmatch(
        r"rtsp://user:\*\*\*@10\.0\.0\.9/cam: lost after frame \d+ \(it ended\); reconnecting "
        r"\(retries 0\.5 s apart, doubling to 5 s; giving up after 5 s\)",
        lines[0],
    ), lines[0]
    m = re.fullmatch(
        r"rtsp://.*: reconnected after (\d+\.\d) s \(2 attempt\(s\)\); frames go on from (\d+)",
        lines[1],
    )
    assert m is not None, lines[1]
    assert 1.4 <= float(m.group(1)) < 3.0 and int(m.group(2)) > seqs[4]
    gaps = [b - a for a, b in zip(src.opens[1:], src.opens[2:], strict=False)]
    assert len(src.opens) == 3 and 0.9 < gaps[0] < 1.5, src.opens  # the wait doubled
    assert cap.reconnects == 1 and cap.offline_s == pytest.approx(float(m.group(1)), abs=0.1)
    assert all(v.released for v in src.made) and not cap.running and not _capture_threads()


def test_a_source_not_back_in_time_raises_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    src = _flaky(monkeypatch)
    lines: list[str] = []
    seqs: list[int] = []
    start = time.perf_counter()
    with (
        pytest.raises(DataError) as info,
        Capture(URL, reconnect_s=1.0, on_status=lines.append) as cap,
    ):
        for f in cap:
            seqs.append(f.seq)
            if len(seqs) == 3:
                src.down()  # and never up again
                lost_at = time.perf_counter()
    waited = time.perf_counter() - lost_at
    assert 0.9 < waited < 2.0 and time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith("rtsp://user:***@10.0.0.9/cam: lost after frame ")
    assert re.search(r"not back after 1\.\d s \(2 reconnection attempt\(s\)\)", message), message
    assert "0 never gives up" in message and "secret" not in message
    assert len(lines) == 1 and "giving up after 1 s" in lines[0]
    assert not cap.running and not _capture_threads()


def test_close_stops_a_reconnect_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    src = _flaky(monkeypatch)
    lines: list[str] = []
    cap = Capture(URL, reconnect_s=0, on_status=lines.append).open()
    frames = iter(cap)
    next(frames)
    src.down()
    deadline = time.perf_counter() + 5
    while not lines and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert lines and lines[0].endswith("never giving up)"), lines
    time.sleep(0.7)  # past the first try, into the 1 s wait
    t0 = time.perf_counter()
    cap.close()
    assert time.perf_counter() - t0 < 0.3 and not cap.running and not _capture_threads()
    assert all(v.released for v in src.made)


def test_a_read_that_blocks_is_left_and_the_source_reopened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeyolo.runtime import capture

    monkeypatch.setattr(capture, "STALL_GRACE", 0.1)
    block = threading.Event()
    src = _flaky(monkeypatch, block=block)
    lines: list[str] = []
    try:
        with Capture(URL, stall_timeout=0.2, reconnect_s=5, on_status=lines.append) as cap:
            seqs = [f.seq for _, f in zip(range(5), cap, strict=False)]
            stuck = src.made[0]
            assert not stuck.released  # its thread is still in the read
            block.set()  # the read returns: the old thread releases its capture and ends
            deadline = time.perf_counter() + 5
            while not stuck.released and time.perf_counter() < deadline:
                time.sleep(0.01)
            assert stuck.released
            seqs += [f.seq for _, f in zip(range(5), cap, strict=False)]
    finally:
        block.set()
    assert seqs == sorted(set(seqs)), seqs
    assert seqs[0] == 0  # the stuck capture gave nothing; the new one numbers from 0
    assert len(lines) == 2 and "(no new frame for 0.2 s)" in lines[0], lines
    assert "reconnected after" in lines[1] and cap.reconnects == 1
    assert not _capture_threads()


def test_files_end_and_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reconnect_s must be 0"):
        Capture(URL, reconnect_s=-1)
    video = _clip(tmp_path / "clip.avi", frames=5)
    lines: list[str] = []
    with Capture(video, live=True, on_status=lines.append) as cap:
        assert not cap.reconnecting and len(list(cap)) >= 1
    assert lines == []


def test_sources_that_cannot_be_opened_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot open camera 99: no such camera"):
        Capture("99").open()
    with pytest.raises(DataError) as info:
        Capture("rtsp://user:secret@127.0.0.1:9/live").open()  # nothing listens on port 9
    assert str(info.value).startswith("rtsp://user:***@127.0.0.1:9/live: cannot open this stream")
    assert "secret" not in str(info.value)
    with pytest.raises(DataError, match=r"nope\.mp4: no such file"):
        Capture(tmp_path / "nope.mp4").open()
    with pytest.raises(DataError, match="a folder, not a video file"):
        Capture(tmp_path).open()
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match=r"bad\.mp4: cannot open this video"):
        Capture(tmp_path / "bad.mp4").open()
    with pytest.raises(RuntimeError, match="not open"):
        iter(Capture(tmp_path / "bad.mp4"))


# ----------------------------------------------------------------------------- timing


def test_loop_stats_fps_stage_means_and_summary() -> None:
    now = [0.0]
    stats = LoopStats(window=2, clock=lambda: now[0])
    assert stats.fps == 0.0 and stats.text() == "0.0 FPS  pre 0.0  infer 0.0  post 0.0 ms"
    for t, infer in [(1.0, 10.0), (1.1, 20.0), (1.2, 40.0)]:
        now[0] = t
        stats.tick({"pre": 1.0, "infer": infer, "post": 3.0, "compute": 99.0})
    assert stats.fps == pytest.approx(10.0)  # the last 2 frames: 0.1 s apart
    assert stats.mean_ms("infer") == pytest.approx(30.0)  # (20 + 40) / 2
    assert stats.text() == "10.0 FPS  pre 1.0  infer 30.0  post 3.0 ms"
    line = stats.summary(captured=9, dropped=6)
    assert line.startswith("3 frame(s) in 1.2 s, 2.5 FPS; per frame pre 1.0 ms, infer 23.3 ms")
    assert "9 captured, 6 dropped (the model is slower than the source" in line
    assert "captured" not in stats.summary()


def test_draw_stats_writes_red_text_in_place() -> None:
    for h in (120, 720):
        image = np.zeros((h, h * 4 // 3, 3), np.uint8)
        assert draw_stats(image, "12.3 FPS  pre 1.0  infer 2.0  post 3.0 ms") is image
        red = (image == (0, 0, 255)).all(axis=-1)
        assert red.any() and not red[h // 2 :].any()  # at the top only


def test_capture_and_the_detector_import_no_torch() -> None:
    code = (
        "import sys, edgeyolo.runtime.capture, edgeyolo.runtime.detector, edgeyolo.detect\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr


class _OpenCvWithoutLogging:
    """Debian's / Ubuntu's ``python3-opencv`` 4.6 as the capture code sees it: a ``cv2.utils``
    without ``logging`` (pip's builds have it); everything else is the real cv2."""

    utils = SimpleNamespace(dumpInt=cv2.utils.dumpInt)

    def __getattr__(self, name: str) -> object:
        return getattr(cv2, name)


def test_video_reads_on_an_opencv_without_its_logging_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Capture on a system OpenCV 4.6 crashed with ``module 'cv2.utils' has no attribute
    'logging'`` before any frame was read; FFmpeg's level is still lowered and restored."""
    from edgeyolo.runtime import capture

    clip = tmp_path / "c.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    monkeypatch.setattr(capture, "cv2", _OpenCvWithoutLogging())
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    with capture.quiet_opencv():
        assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "8"
    assert "OPENCV_FFMPEG_LOGLEVEL" not in os.environ
    with Capture(str(clip)) as cap:
        frames = [f.image for f in cap]
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_without_any_opencv_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ``cv2`` at all (the plain deploy install on a machine without a system OpenCV): one
    error naming the ``opencv`` extra and the system's OpenCV, not an ImportError."""
    import sys

    from edgeyolo.lazy import CV2

    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"cv2.*edgeyolo\[opencv\].*system"):
        CV2.load()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)  # a file is checked for before OpenCV is asked to open it
    with pytest.raises(MissingDependencyError, match=r"edgeyolo\[opencv\]"), Capture(str(clip)):
        pass
