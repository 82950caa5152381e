"""A loopback RTSP server in a subprocess (``scripts/rtsp_server.py``) and the OpenCV backends of
this interpreter that can read it. Imports neither edgeyolo nor torch: the direct-OpenCV tests
also run under the system python with its GStreamer-enabled cv2."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "rtsp_server.py"
#: The frame-counter codec (numpy only), loaded by its path so that no edgeyolo import is needed.
CODEC = ROOT / "edgeyolo" / "runtime" / "framecounter.py"
#: The Python that runs the server: it needs GStreamer's ``gi`` (Debian's python3-gi), which a
#: venv usually lacks. ``EDGEYOLO_RTSP_PYTHON`` overrides it.
SERVER_PYTHON = os.environ.get("EDGEYOLO_RTSP_PYTHON", "/usr/bin/python3")
#: Seconds to wait for the server's URL line.
START_TIMEOUT = 15.0
BACKENDS = ("ffmpeg", "gstreamer")
#: Set to 1 where every live source must be present (a twin of the device): what would skip
#: fails instead.
REQUIRE_ENV = "EDGEYOLO_REQUIRE_LIVE"

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
need = ["videotestsrc", "x264enc", "rtph264pay", "appsrc", "videoconvert"]
missing = [e for e in need if Gst.ElementFactory.find(e) is None]
print("missing GStreamer elements: " + ", ".join(missing) if missing else "")
"""
_probed: dict[str, str | None] = {}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it where ``EDGEYOLO_REQUIRE_LIVE=1``."""
    import pytest

    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: live sources are required here)")
    pytest.skip(reason)


def server_problem(python: str = SERVER_PYTHON) -> str | None:
    """Why ``python`` cannot run the RTSP server (``None``: it can). Probed once per python."""
    if python in _probed:
        return _probed[python]
    problem: str | None
    if not Path(python).is_file():
        problem = f"{python} not found (the RTSP test server needs a python with GStreamer's gi)"
    else:
        try:
            r = subprocess.run(
                [python, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False
            )
        except subprocess.TimeoutExpired:
            r = None
        if r is None:
            problem = f"{python} took over 30 s to import GStreamer"
        elif r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            problem = (
                f"{python} cannot import GStreamer's RTSP server ({last}); install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 (or set EDGEYOLO_RTSP_PYTHON)"
            )
        elif r.stdout.strip():
            problem = (
                f"{python}: {r.stdout.strip()} (gstreamer1.0-plugins-ugly has x264enc, "
                "-good rtph264pay, -base the rest)"
            )
        else:
            problem = None
    _probed[python] = problem
    return problem


class RtspServer:
    """``scripts/rtsp_server.py`` in a subprocess: :attr:`url` once :meth:`start` returns;
    :meth:`restart` brings it back on the same port (a camera that rebooted)."""

    def __init__(
        self,
        *,
        width: int = 320,
        height: int = 240,
        fps: int = 30,
        counter: bool = False,
        lifetime: float = 120.0,
        python: str = SERVER_PYTHON,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.counter, self.lifetime, self.python = counter, lifetime, python
        self.port = 0
        self.url = ""
        #: The exit status of the last run that was stopped (``None`` before any).
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        # the server's stderr: a file never fills up and blocks it, as a pipe would
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())

    @property
    def alive(self) -> bool:
        """Whether the server process is running."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """What the server wrote on stderr so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start it (on :attr:`port`; 0 picks a free one) and wait for its URL; returns the URL.
        A port still held by the previous run is retried until ``timeout``.

        Raises:
            RuntimeError: no URL within ``timeout`` s, or the server exited (with its log).
        """
        if self.alive:
            return self.url
        deadline = time.monotonic() + timeout
        while True:
            line = self._spawn(deadline)
            if line:
                break
            code = self._proc.poll() if self._proc is not None else None
            if code == 2 and self.port and time.monotonic() < deadline:  # port not free yet
                time.sleep(0.2)
                continue
            self.stop()
            raise RuntimeError(
                f"the RTSP server gave no URL within {timeout:g} s (exit status {code}): "
                f"{self.log().strip()[-2000:]}"
            )
        m = re.fullmatch(r"rtsp://127\.0\.0\.1:(\d+)/test", line)
        if m is None:
            self.stop()
            raise RuntimeError(f"the RTSP server printed {line!r}, not its URL")
        self.port, self.url = int(m.group(1)), line
        return line

    def _spawn(self, deadline: float) -> str:
        """Start the process; its first stdout line, or ``""`` if it exits or times out."""
        cmd = [
            self.python,
            str(SERVER),
            f"--port={self.port}",
            f"--width={self.width}",
            f"--height={self.height}",
            f"--fps={self.fps}",
            f"--lifetime={self.lifetime:g}",
        ] + (["--counter"] if self.counter else [])
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        self._proc = proc
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            remaining = deadline - time.monotonic()
            if remaining > 0 and sel.select(remaining):
                line = proc.stdout.readline().strip()
                if line:
                    return line
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop it (closes its stdin, then SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the server stops on its own when stdin closes
            proc.wait(timeout / 2)
        except (OSError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            self.returncode = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()

    def restart(self, timeout: float = START_TIMEOUT) -> str:
        """Stop it and start it again on the same port (same URL); returns the URL."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop it and drop its log."""
        self.stop()
        self._log.close()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load_frame_counter() -> ModuleType:
    """``edgeyolo/runtime/framecounter.py`` as a module (``encode_counter``,
    ``decode_counter``), loaded by its path: no edgeyolo import, as for the server."""
    name = "edgeyolo_test_frame_counter"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CODEC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ OpenCV readers


def gstreamer_pipeline(url: str) -> str:
    """The GStreamer pipeline that reads ``url`` into OpenCV (newest frame only)."""
    return (
        f"rtspsrc location={url} latency=0 ! rtph264depay ! avdec_h264 ! videoconvert ! "
        "appsink drop=true max-buffers=1"
    )


def opencv_has_gstreamer(cv2: Any) -> bool:
    """Whether this OpenCV was built with GStreamer (``GStreamer: YES`` in its build info)."""
    m = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return m is not None and m.group(1).upper() == "YES"


def backend_problem(cv2: Any, backend: str) -> str | None:
    """Why this interpreter's OpenCV cannot read RTSP through ``backend`` (``None``: it can)."""
    where = f"OpenCV {cv2.__version__} in {sys.executable}"
    if backend == "ffmpeg":
        m = re.search(r"^\s*FFMPEG:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
        if m is None or m.group(1).upper() != "YES":
            return f"{where} was built without FFmpeg"
        return None
    if backend == "gstreamer":
        if not opencv_has_gstreamer(cv2):
            return (
                f"{where} was built without GStreamer (pip's opencv-python-headless never has "
                "it; Debian's python3-opencv and JetPack's OpenCV do)"
            )
        return None
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def open_capture(cv2: Any, url: str, backend: str, timeout_s: float = 10.0) -> Any:
    """``cv2.VideoCapture`` of ``url`` through ``backend`` (``ffmpeg``: the URL itself, with open
    and read timeouts; ``gstreamer``: :func:`gstreamer_pipeline`); it may not be opened."""
    if backend == "gstreamer":
        return cv2.VideoCapture(gstreamer_pipeline(url), cv2.CAP_GSTREAMER)
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def read_frames(cap: Any, n: int, timeout_s: float) -> list[np.ndarray]:
    """Up to ``n`` frames from an opened capture, in a thread bounded by ``timeout_s`` s (a
    stuck driver read cannot hang the test run); fewer when a read fails or time runs out.

    Raises:
        TimeoutError: a read still blocks 10 s after ``timeout_s`` (do not release ``cap``).
    """
    frames: list[np.ndarray] = []
    stop = threading.Event()

    def run() -> None:
        while len(frames) < n and not stop.is_set():
            ok, image = cap.read()
            if not ok:
                return
            frames.append(image)

    t = threading.Thread(target=run, name="read-frames", daemon=True)
    t.start()
    t.join(timeout_s)
    stop.set()
    t.join(10.0)  # a read under way ends at the backend's own read timeout
    if t.is_alive():
        raise TimeoutError(f"a read from the capture blocks for over {timeout_s + 10:g} s")
    return list(frames)
