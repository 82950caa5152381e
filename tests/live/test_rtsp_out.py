"""The RTSP output (:mod:`edgeyolo.runtime.rtsp_out`): its URL grammar and errors, which run
anywhere, and a real server on 127.0.0.1 serving frames that carry their index
(:mod:`edgeyolo.runtime.framecounter`), read back through each OpenCV backend of this
interpreter: in order, by a second client too, and nothing left behind by ``close()``.

The live tests need GStreamer's ``gi``, gst-rtsp-server and x264enc (the system python has
them, a pip venv does not): without them they skip saying why, or fail where
``EDGEYOLO_REQUIRE_LIVE=1``. Each is bounded to a few seconds."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pytest

from edgeyolo.errors import ConfigError, MissingDependencyError
from edgeyolo.runtime import rtsp_out
from edgeyolo.runtime.framecounter import decode_counter, encode_counter
from edgeyolo.runtime.rtsp_out import RtspServer, RtspStream, parse_rtsp_output
from tests.live.rtsp import BACKENDS, backend_problem, open_capture, read_frames, skip_or_fail

W, H, FPS = 320, 240, 30
#: Seconds to open a capture, and to read the frames of one test.
OPEN_TIMEOUT, READ_TIMEOUT = 5.0, 8.0
#: The longest a write may take while a client is connected (it must never wait for one).
WRITE_BOUND = 0.1
EXAMPLE = "e.g. rtsp://@:8554/live"

# ------------------------------------------------------------------------ the URL grammar


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://@:8554/my_output", ("0.0.0.0", 8554, "/my_output")),
        ("rtsp://:9000/out", ("0.0.0.0", 9000, "/out")),
        ("rtsp://0.0.0.0:8554/a/b/", ("0.0.0.0", 8554, "/a/b")),
        ("rtsp://@", ("0.0.0.0", 8554, "/live")),
        ("rtsp://@/", ("0.0.0.0", 8554, "/live")),
        ("rtsp://@:8555", ("0.0.0.0", 8555, "/live")),
        ("RTSP://127.0.0.1:0/cam-1.x_y~", ("127.0.0.1", 0, "/cam-1.x_y~")),
        ("rtsp://localhost/cam", ("127.0.0.1", 8554, "/cam")),
        ("rtsp://LocalHost:8554/cam", ("127.0.0.1", 8554, "/cam")),
        ("rtsp://192.168.1.5:554/out", ("192.168.1.5", 554, "/out")),
        (" rtsp://@:8554/live ", ("0.0.0.0", 8554, "/live")),
    ],
)
def test_parse_rtsp_output(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_rtsp_output(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://@:8554/live", "not an rtsp:// URL"),
        ("@:8554/live", "not an rtsp:// URL"),
        ("rtsp://@:port/live", "port 'port' is not a number"),
        ("rtsp://@:70000/live", "port '70000' is not a number from 0 to 65535"),
        ("rtsp://@:-1/live", "port '-1'"),
        ("rtsp://@:/live", "the port after ':' is empty"),
        ("rtsp://user:secret@:8554/live", "no user name or password"),
        ("rtsp://camera.local:8554/live", "host 'camera.local'"),
        ("rtsp://300.1.1.1:8554/live", "host '300.1.1.1'"),
        ("rtsp://[::]:8554/live", "IPv6"),
        ("rtsp://@:8554/my live", "path '/my live'"),
        ("rtsp://@:8554/a//b", "path '/a//b'"),
        ("rtsp://@:8554/live?x=1", "no query"),
    ],
)
def test_parse_rtsp_output_refuses(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_rtsp_output(url)
    message = str(e.value)
    assert says in message and EXAMPLE in message, message
    assert "secret" not in message and (repr(url) in message or "user:***@" in message), message


# ---------------------------------------------------- errors that need no GStreamer at all


def test_importing_it_imports_no_gstreamer() -> None:
    code = (
        "import sys, edgeyolo.runtime.rtsp_out\n"
        "heavy = {'gi', 'cv2', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _assert_says_what_to_install(message: str) -> None:
    for part in (
        "python3-gi",
        "gir1.2-gst-rtsp-server-1.0",
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-rtsp",
        "--system-site-packages",
        "the RTSP output",
    ):
        assert part in message, (part, message)


def test_missing_gi_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gi", None)  # `import gi` fails, as without python3-gi
    with pytest.raises(MissingDependencyError) as e:
        RtspServer("127.0.0.1", 0)
    message = str(e.value)
    assert message.startswith("gi (needed for the RTSP output) cannot be imported"), message
    _assert_says_what_to_install(message)


def test_missing_rtsp_server_typelib_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """python3-gi without gir1.2-gst-rtsp-server-1.0: ``require_version`` refuses."""

    def require_version(namespace: str, version: str) -> None:
        if namespace == "GstRtspServer":
            raise ValueError(f"Namespace {namespace} not available")

    fake = types.ModuleType("gi")
    fake.require_version = require_version  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gi", fake)
    with pytest.raises(MissingDependencyError) as e:
        rtsp_out.load_gstreamer()
    assert "GstRtspServer 1.0 introspection data cannot be loaded" in str(e.value)
    _assert_says_what_to_install(str(e.value))


def test_write_checks_the_frame() -> None:
    """A frame of another size or type is refused naming both; with no client it is dropped."""
    stream = RtspStream(types.SimpleNamespace(SECOND=10**9), "rtsp://x:1/live", W, H, FPS)
    with pytest.raises(ConfigError, match=r"is 320x240, this frame is 640x480: resize or letter"):
        stream.write(np.zeros((480, 640, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"with 4 channels"):
        stream.write(np.zeros((H, W, 4), np.uint8))
    with pytest.raises(ConfigError, match=r"uint8\[H, W, 3\] BGR array, got float32"):
        stream.write(np.zeros((H, W, 3), np.float32))
    assert stream.write(np.zeros((H, W, 3), np.uint8)) is False
    assert (stream.sent, stream.dropped, stream.watched, stream.medias) == (0, 1, False, 0)


# ------------------------------------------------------------------------- live: fixtures


@pytest.fixture(scope="module")
def gst() -> rtsp_out.GstModules:
    """GStreamer with gst-rtsp-server and the elements a stream needs, or a skip saying why."""
    try:
        return rtsp_out.load_gstreamer()
    except MissingDependencyError as e:
        skip_or_fail(str(e))


@pytest.fixture
def server(gst: rtsp_out.GstModules) -> Iterator[RtspServer]:
    with RtspServer("127.0.0.1", 0) as s:
        yield s


def _cv2(backend: str) -> Any:
    try:
        import cv2
    except ImportError as e:
        skip_or_fail(f"no OpenCV in {sys.executable} to read the stream back ({e})")
    problem = backend_problem(cv2, backend)
    if problem is not None:
        skip_or_fail(problem)
    return cv2


class Feeder:
    """Frames ``0, 1, 2, ...`` with their index drawn in, written to ``stream`` at ``fps`` by a
    thread; the longest :meth:`RtspStream.write` is kept."""

    def __init__(self, stream: RtspStream, fps: float = FPS) -> None:
        self.stream, self.fps = stream, fps
        gx = np.linspace(0, 255, stream.width, dtype=np.float32)
        self.base = np.broadcast_to(gx[None, :, None], (stream.height, stream.width, 3))
        self.base = self.base.astype(np.uint8)
        self.index = 0
        self.longest_write = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            image = self.base.copy()
            encode_counter(image, self.index)
            t0 = time.perf_counter()
            self.stream.write(image)
            self.longest_write = max(self.longest_write, time.perf_counter() - t0)
            self.index += 1
            self._stop.wait(max(start + self.index / self.fps - time.monotonic(), 0.0))

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5.0)


def _open(url: str, backend: str) -> Any:
    cv2 = _cv2(backend)
    cap = open_capture(cv2, url, backend, timeout_s=OPEN_TIMEOUT)
    if not cap.isOpened():
        cap.release()
        pytest.fail(f"OpenCV ({backend}) cannot open {url}")
    return cap


def _counters(cap: Any, n: int) -> list[int | None]:
    frames = read_frames(cap, n, READ_TIMEOUT)
    assert len(frames) == n, f"{len(frames)} of {n} frames in {READ_TIMEOUT:g} s"
    assert all(f.shape == (H, W, 3) for f in frames), [f.shape for f in frames]
    return [decode_counter(f) for f in frames]


def _assert_in_order(indices: list[int | None]) -> None:
    assert None not in indices, indices
    assert all(b > a for a, b in zip(indices, indices[1:], strict=False)), indices  # type: ignore[operator]


# --------------------------------------------------------------------------- live: serving


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_arrive_in_order(server: RtspServer, backend: str) -> None:
    _cv2(backend)
    stream = server.add_stream("/out", W, H, FPS)
    assert stream.url == server.url("/out") == f"rtsp://127.0.0.1:{server.port}/out"
    with Feeder(stream) as feeder:
        cap = _open(stream.url, backend)
        try:
            indices = _counters(cap, 20)
        finally:
            cap.release()
        _assert_in_order(indices)
        assert stream.sent >= 20
        assert feeder.longest_write < WRITE_BOUND, f"a write took {feeder.longest_write:.3f} s"
        deadline = time.monotonic() + 3.0  # the client left: its media goes, frames drop
        while stream.medias and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream.medias == 0 and not stream.watched
        sent = stream.sent
        time.sleep(0.2)
    assert stream.sent == sent and stream.dropped > 0


def test_a_second_client_sees_the_same_stream(server: RtspServer) -> None:
    """A client joining mid-stream decodes it (a key frame within a second) from the one
    shared media: the same encoder's frames, later indices."""
    stream = server.add_stream("/shared", W, H, FPS)
    with Feeder(stream):
        first = _open(stream.url, "ffmpeg")
        try:
            early = _counters(first, 5)
            second = _open(stream.url, "ffmpeg")
            try:
                assert stream.medias == 1  # both clients on one media, one encoder
                late = _counters(second, 10)
                more = _counters(first, 5)
            finally:
                second.release()
        finally:
            first.release()
    for indices in (early, late, early + more):
        _assert_in_order(indices)
    assert late[0] > early[-1], (early, late)  # type: ignore[operator]


def test_no_client_drops_frames_without_waiting(server: RtspServer) -> None:
    stream = server.add_stream("/nobody", W, H, FPS)
    image = np.zeros((H, W, 3), np.uint8)
    start = time.perf_counter()
    assert not any(stream.write(image) for _ in range(100))
    assert time.perf_counter() - start < 1.0
    assert (stream.sent, stream.dropped, stream.watched) == (0, 100, False)


def test_close_leaves_no_thread_and_frees_the_port(gst: rtsp_out.GstModules) -> None:
    server = RtspServer("127.0.0.1", 0)
    port = server.port
    name = f"edgeyolo-rtsp-out:{port}"
    assert [t.name for t in threading.enumerate()].count(name) == 1
    stream = server.add_stream("/live", W, H, FPS)
    with Feeder(stream):
        cap = _open(server.url(), "ffmpeg")  # a client connected while it closes
        try:
            _assert_in_order(_counters(cap, 3))
            server.close()
            server.close()  # idempotent
        finally:
            cap.release()
    assert server.closed and name not in [t.name for t in threading.enumerate()]
    assert stream.write(np.zeros((H, W, 3), np.uint8)) is False  # dropped, no error
    with pytest.raises(ConfigError, match="is closed"):
        server.add_stream("/again", W, H, FPS)
    with RtspServer("127.0.0.1", port) as again:  # the port is free at once
        assert again.port == port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_a_port_in_use_says_so(gst: rtsp_out.GstModules) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError) as e:
            RtspServer("127.0.0.1", port)
    message = str(e.value)
    assert f"127.0.0.1:{port}" in message and f"port {port} is in use" in message, message
    assert "choose another port" in message


def test_mount_errors_and_urls(server: RtspServer) -> None:
    with pytest.raises(ConfigError, match="must be even"):
        server.add_stream("/odd", 321, 240, FPS)
    with pytest.raises(ConfigError, match="fps 0"):
        server.add_stream("/still", W, H, 0)
    stream = server.add_stream("cam/", W, H, 29.97)
    assert stream.url == f"rtsp://127.0.0.1:{server.port}/cam"
    with pytest.raises(ConfigError, match="already mounted"):
        server.add_stream("/cam", W, H, FPS)
    with pytest.raises(ConfigError, match="mount path"):
        server.add_stream("/a b", W, H, FPS)
    server.host = rtsp_out.ALL_INTERFACES  # as bound for rtsp://@: clients use loopback here
    assert server.url("/x") == f"rtsp://127.0.0.1:{server.port}/x"


def test_missing_element_is_named(gst: rtsp_out.GstModules) -> None:
    with pytest.raises(MissingDependencyError) as e:
        rtsp_out.load_gstreamer(("x264enc", "edgeyolonosuchelement"))
    assert "edgeyolonosuchelement not found" in str(e.value)
    _assert_says_what_to_install(str(e.value))


# ------------------------------------------------------------------ live: detect --serve


def test_detect_serves_its_annotated_frames(gst: rtsp_out.GstModules, tmp_path: Path) -> None:
    """``run_detect(..., serve="rtsp://127.0.0.1:0/detect")`` on a video read live: a client
    reads the annotated frames (the box drawn where it was found, nothing elsewhere) while it
    runs."""
    import io
    import re

    from rich.console import Console

    from edgeyolo.detect import run_detect

    cv2 = _cv2("ffmpeg")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (W, H))
    for _ in range(120):  # 4 s read live
        writer.write(np.full((H, W, 3), 90, np.uint8))
    writer.release()
    text = io.StringIO()
    got: list[np.ndarray] = []

    def client() -> None:
        deadline = time.monotonic() + READ_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"at (rtsp://\S+)", text.getvalue())
            if found:
                cap = _open(found.group(1), "ffmpeg")
                got.extend(read_frames(cap, 10, READ_TIMEOUT))
                cap.release()
                return
            time.sleep(0.05)

    def predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.array([[40.0, 40.0, 200.0, 160.0]]), np.array([0.9]), np.array([0])

    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    results = run_detect(
        video,
        predict,
        ("digit",),
        out=None,
        live=True,
        serve="rtsp://127.0.0.1:0/detect",
        console=Console(file=text, width=200),
    )
    reader.join(READ_TIMEOUT)
    assert "serving clip.avi at rtsp://127.0.0.1:" in text.getvalue()
    assert len(got) == 10 and all(f.shape == (H, W, 3) for f in got), text.getvalue()
    # the frames are flat grey 90: the box, its caption and the stats line are what differs
    drawn = [np.abs(f.astype(int) - 90).max(axis=-1) > 60 for f in got]
    assert all(d[40:160, 40:200].any() and not d[180:, 220:].any() for d in drawn)
    assert 0 < len(results) <= 120
