"""Frames for camera apps: a camera, a video file, an RTSP/HTTP stream or a GStreamer pipeline.

A *live* source (a camera, a URL, a pipeline) is read in its own thread into a one-slot buffer
that keeps only the newest frame, each with a sequence number (0, 1, 2, ... in capture order):
a model slower than the source then skips frames instead of falling behind, and every frame it
takes is the newest one captured. A video file is read in order, every frame, unless asked to be
read live (``live=True``), when it is paced at its own FPS, as a camera would deliver it::

    from edgeyolo import Detector
    from edgeyolo.runtime.capture import Capture

    with Detector("export/tiny/model_int8.engine") as det, Capture("0") as cap:
        for f in cap:                      # f.seq, f.image (uint8[H, W, 3] BGR), f.time
            d = det(f.image)

A live source that stops sending (server gone, network cut, camera unplugged, or no new frame
for ``stall_timeout`` seconds) is reopened with backoff (0.5 s doubling to 5 s) for up to
``reconnect_s`` seconds (0: forever), saying so in one line when it is lost and one when it is
back; sequence numbers go on across the gap.

:class:`LoopStats` keeps the loop's FPS and per-stage times (pre / infer / post, ms) for an
overlay (:func:`draw_stats`) and the log. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edgeyolo.errors import DataError, MissingDependencyError
from edgeyolo.lazy import CV2 as cv2

__all__ = [
    "CSI_PIPELINE",
    "Capture",
    "CapturedFrame",
    "LatestFrame",
    "LoopStats",
    "VideoSource",
    "display_problem",
    "draw_stats",
    "opencv_gui",
    "opencv_has_gstreamer",
    "parse_source",
]

SourceKind = Literal["camera", "file", "url", "gstreamer"]

#: A Jetson CSI camera (IMX219/IMX477 and the like) through JetPack's GStreamer and OpenCV.
CSI_PIPELINE = (
    "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,"
    "framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
    "video/x-raw,format=BGR ! appsink drop=1"
)
#: The frame rate a file is paced at when its header gives none.
DEFAULT_FPS = 30.0
#: Seconds a lost live source is retried before :class:`Capture` gives up (0: never).
DEFAULT_RECONNECT = 30.0
#: The first wait before reopening a lost source, and the longest (the wait doubles each try).
BACKOFF_START, BACKOFF_MAX = 0.5, 5.0
#: Seconds past ``stall_timeout`` that a read may block before its thread is abandoned: a
#: backend with a read timeout (FFmpeg) reports the stall itself first.
STALL_GRACE = 2.0
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NO_GSTREAMER = (
    "this OpenCV build has no GStreamer support (cv2.getBuildInformation() says GStreamer: NO; "
    "pip's opencv-python and opencv-python-headless never have it), so it cannot open a "
    "GStreamer pipeline: on a Jetson use JetPack's OpenCV (a venv made with "
    "--system-site-packages, with no opencv-python pip-installed over it), elsewhere an OpenCV "
    "built with -DWITH_GSTREAMER=ON; or give a camera index, a video file or a URL"
)


# ------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class VideoSource:
    """What a source string names, before anything is opened.

    Attributes:
        kind: ``camera`` (an index), ``file`` (a video file), ``url`` (``rtsp://``,
            ``http://``, ...) or ``gstreamer`` (a pipeline ending in ``appsink``).
        target: what ``cv2.VideoCapture`` is given: the index, the path, the URL or the pipeline.
        name: how messages name it (``camera 0``, the path, the URL with its password masked,
            ``GStreamer pipeline '...'``).
    """

    kind: SourceKind
    target: str | int
    name: str

    @property
    def live(self) -> bool:
        """Whether frames arrive in real time (everything but a file)."""
        return self.kind != "file"

    @property
    def stem(self) -> str:
        """A file-name stem for output written from this source (``camera0``, ``clip``)."""
        if self.kind == "camera":
            return f"camera{self.target}"
        if self.kind == "file":
            return Path(str(self.target)).stem
        return "stream" if self.kind == "url" else "gstreamer"


def _mask_password(url: str) -> str:
    """``rtsp://user:secret@host/x`` → ``rtsp://user:***@host/x`` (messages name the URL)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_source(source: str | int | Path) -> VideoSource:
    """What ``source`` names: a camera index (``0`` or ``"0"``), a URL (``scheme://...``), a
    GStreamer pipeline (a string with ``!`` or ``appsink`` that is not an existing path) or
    else a video file. Checks nothing on disk or network (see :meth:`Capture.open`)."""
    if isinstance(source, int):
        return VideoSource("camera", source, f"camera {source}")
    text = str(source)
    if isinstance(source, Path) or os.path.exists(text):  # False, not OSError, for a long pipeline
        return VideoSource("file", text, text)
    if text.strip().isdigit():
        return VideoSource("camera", int(text), f"camera {int(text)}")
    if _URL.match(text.strip()):
        return VideoSource("url", text.strip(), _mask_password(text.strip()))
    if "!" in text or "appsink" in text:
        return VideoSource("gstreamer", text.strip(), f"GStreamer pipeline '{text.strip()}'")
    return VideoSource("file", text, text)


def opencv_has_gstreamer(build_information: str | None = None) -> bool:
    """Whether this OpenCV was built with GStreamer (``GStreamer: YES (1.20.3)`` in
    ``cv2.getBuildInformation()``; pip's wheels say ``NO``)."""
    info = cv2.getBuildInformation() if build_information is None else build_information
    m = re.search(r"^\s*GStreamer:\s*(\S+)", info, re.MULTILINE)
    return m is not None and m.group(1).upper() == "YES"


def opencv_gui(build_information: str | None = None) -> str:
    """This OpenCV's window toolkit (``GTK3``, ``QT5``, ``WIN32UI``, ``COCOA``), ``""`` for none
    (opencv-python-headless). From ``cv2.currentUIFramework()`` (OpenCV >= 4.7) unless a build
    information text is given, else from that text's ``GUI:`` section."""
    current = getattr(cv2, "currentUIFramework", None)
    if build_information is None and current is not None:
        return str(current())
    lines = (cv2.getBuildInformation() if build_information is None else build_information).split(
        "\n"
    )
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)GUI:\s*(.*)$", line)
        if m is None:
            continue
        value = m.group(2).strip()
        if value and value.upper() != "NONE":
            return value
        for sub in lines[i + 1 :]:  # OpenCV 4.5: "GUI:" then "  GTK+: YES (ver 3.24.20)"
            inner = re.match(r"^(\s*)([^:]+):\s*(.*)$", sub)
            if inner is None or len(inner.group(1)) <= len(m.group(1)):
                break
            if inner.group(3).upper().startswith("YES"):
                return inner.group(2).strip()
        return ""
    return ""


def display_problem() -> str | None:
    """Why no window can be shown here (``None``: ``cv2.imshow`` can work): an OpenCV without
    a GUI (pip's opencv-python-headless), or a Linux session without ``$DISPLAY`` /
    ``$WAYLAND_DISPLAY`` (ssh, a service)."""
    if not opencv_gui():
        return "this OpenCV has no window support (opencv-python-headless?)"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display ($DISPLAY is not set)"
    return None


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's log silenced for a block: a failed open prints "[ WARN:0@...] can't open camera
    by index" (OpenCV) or "moov atom not found" (FFmpeg) lines on stderr, where our own one-line
    error says it better. FFmpeg's level comes from ``OPENCV_FFMPEG_LOGLEVEL`` when OpenCV opens
    a file; a value the user set is left alone. OpenCV builds without ``cv2.utils.logging``
    (Debian's and Ubuntu's ``python3-opencv`` 4.6, which JetPack-like systems ship) keep their
    own log level: only FFmpeg's is lowered there."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logging.getLogLevel() if logging is not None else None
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    unset = "OPENCV_FFMPEG_LOGLEVEL" not in os.environ
    if unset:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "8"  # AV_LOG_FATAL
    try:
        yield
    finally:
        if logging is not None:
            logging.setLogLevel(level)
        if unset:
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)


def _url_params(timeout_s: float) -> list[int]:
    """Open and read timeouts for FFmpeg (OpenCV >= 4.6; older builds take none)."""
    props = ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC")
    if not all(hasattr(cv2, p) for p in props):
        return []
    ms = int(timeout_s * 1000)
    return [getattr(cv2, props[0]), ms, getattr(cv2, props[1]), ms]


def open_video(src: VideoSource, *, timeout_s: float = 10.0) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` for ``src``, opened (OpenCV's own log silenced).

    Raises:
        DataError: naming the source: no such file, or the camera, file, URL or pipeline
            cannot be opened (with what to check).
        MissingDependencyError: a GStreamer pipeline with an OpenCV built without GStreamer.
    """
    if src.kind == "file" and not Path(str(src.target)).is_file():
        what = "a folder, not a video file" if Path(str(src.target)).is_dir() else "no such file"
        raise DataError(what, file=src.name)
    if src.kind == "gstreamer":
        if not opencv_has_gstreamer():
            raise MissingDependencyError(f"{src.name}: {_NO_GSTREAMER}")
        if "appsink" not in str(src.target):
            raise DataError("a pipeline for OpenCV must end in appsink", file=src.name)
    with quiet_opencv():
        if src.kind == "gstreamer":
            cap = cv2.VideoCapture(str(src.target), cv2.CAP_GSTREAMER)
        elif src.kind == "url":
            cap = cv2.VideoCapture(str(src.target), cv2.CAP_ANY, _url_params(timeout_s))
        else:
            cap = cv2.VideoCapture(src.target)
        opened = cap.isOpened()
    if opened:
        return cap
    cap.release()
    raise _open_error(src)


def _open_error(src: VideoSource) -> DataError:
    if src.kind == "camera":
        return DataError(
            f"cannot open camera {src.target}: no such camera, or it is busy or not permitted "
            "(on Linux `ls /dev/video*` lists cameras; close other programs using it; a Jetson "
            "CSI camera is opened through a GStreamer pipeline, see the README); "
            "or give a video file, an image or a folder"
        )
    if src.kind == "url":
        return DataError(
            "cannot open this stream: the host is unreachable, the path or credentials are "
            "wrong, or it sends a format this OpenCV cannot decode (try the URL in ffplay or VLC)",
            file=src.name,
        )
    if src.kind == "gstreamer":
        return DataError(
            "GStreamer cannot start this pipeline (try it with `gst-launch-1.0`, with "
            "`fakesink` in place of `appsink`, to see why)",
            file=src.name,
        )
    return DataError(
        "cannot open this video: it is damaged, not a video, or in a codec this OpenCV build "
        "cannot decode; re-encode it (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`) or give images",
        file=src.name,
    )


# ------------------------------------------------------------------ the one-slot buffer


@dataclass(frozen=True)
class CapturedFrame:
    """One frame as it was captured.

    Attributes:
        seq: its number in capture order (0, 1, 2, ...; a gap means frames were dropped).
        image (uint8[H, W, 3]): the frame, BGR (OpenCV's order).
        time: ``time.perf_counter()`` when it was read.
    """

    seq: int
    image: np.ndarray
    time: float


class LatestFrame:
    """A one-slot buffer between a capture thread and a consumer: :meth:`put` replaces the
    untaken frame (counted in :attr:`dropped`), :meth:`take` waits for the newest one."""

    def __init__(self, wakeup: threading.Event | None = None) -> None:
        #: Set on every put and at the end: one event can wake a consumer of several buffers.
        self.wakeup = wakeup
        self._cond = threading.Condition()
        self._slot: CapturedFrame | None = None
        self._captured = 0
        self._dropped = 0
        self._ended = False
        self._error: BaseException | None = None

    def put(self, image: np.ndarray) -> int:
        """Store ``image`` as the newest frame; returns its sequence number."""
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            seq = self._captured
            self._slot = CapturedFrame(seq, image, time.perf_counter())
            self._captured += 1
            self._cond.notify_all()
        if self.wakeup is not None:
            self.wakeup.set()
        return seq

    def end(self, error: BaseException | None = None) -> None:
        """No more frames will come; ``error`` (if any) is raised by :meth:`take` once the
        last frame has been taken."""
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify_all()
        if self.wakeup is not None:
            self.wakeup.set()

    def take(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest untaken frame, waiting for one; ``None`` once the source has ended.

        Raises:
            TimeoutError: no new frame within ``timeout`` seconds.
            BaseException: the error the capture ended with (after its last frame was taken).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout):
                raise TimeoutError(f"no new frame in {timeout:g} s")
            frame, self._slot = self._slot, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    @property
    def newest_seq(self) -> int:
        """The sequence number of the newest frame captured (-1: none yet)."""
        with self._cond:
            return self._captured - 1

    @property
    def captured(self) -> int:
        """Frames put so far."""
        with self._cond:
            return self._captured

    @property
    def dropped(self) -> int:
        """Frames replaced before anyone took them."""
        with self._cond:
            return self._dropped


# ----------------------------------------------------------------------------- capture


@dataclass
class _Outage:
    """A live source lost and not yet back: when, after which frame, why, and the retries."""

    start: float
    after_seq: int
    cause: str
    attempts: int = 0
    delay: float = BACKOFF_START


def print_status(line: str) -> None:
    """The default ``on_status``: the line on stderr, at once."""
    print(line, file=sys.stderr, flush=True)


class Capture:
    """The frames of one source, as a context manager (:meth:`open` / :meth:`close`).

    Args:
        source: a camera index (``0``, ``"0"``), a video file, a URL (``rtsp://``,
            ``http://``, ...) or a GStreamer pipeline ending in ``appsink`` (see
            :data:`CSI_PIPELINE`); or a :class:`VideoSource`.
        live: ``None`` (default): live for cameras, URLs and pipelines, every frame in order
            for a file. ``True``: a thread reads the source and keeps only the newest frame
            (a file is paced at its own FPS, as a camera would deliver it). ``False``: every
            frame in order, read on the caller's thread (a live source then lags behind by
            however much the consumer is slower, up to the driver's buffer).
        stall_timeout: seconds a live source may go without a new frame before it counts as
            lost (and the open / read timeout of a URL).
        join_timeout: seconds :meth:`close` waits for the capture thread; a thread stuck in the
            driver's read is left behind (a daemon) and releases its device when that returns.
        reconnect_s: seconds a lost live source (a camera, pipeline or endless stream that
            ends, fails or stalls) is reopened, with backoff (:data:`BACKOFF_START` doubling to
            :data:`BACKOFF_MAX`), before iterating raises; ``0``: never give up; ``None``: no
            reconnecting (the loss raises at once). Counted from the moment the loss is seen.
            A file, or a stream of known length, simply ends.
        on_status: called with one line when a live source is lost and one when it is back
            (default: printed on stderr); from the capture thread when live.
        wakeup: an event set whenever a new frame is captured or the source ends, so that one
            consumer can wait on several captures (:class:`edgeyolo.runtime.stream.Sources`)
            and take frames with :meth:`poll`.

    Iterating yields :class:`CapturedFrame` (``seq``, ``image`` BGR, ``time``) until a file
    ends (or a URL whose frame count is known: a video file served over HTTP); a live source
    that ends or stalls is reconnected, its sequence numbers going on from where they were.
    A read that blocks past ``stall_timeout`` (a GStreamer pipeline has no read timeout) is
    left in its thread, which releases its capture when the read returns, and a new capture
    is opened beside it.

    Raises:
        DataError: (from :meth:`open`) the source cannot be opened; (while iterating) it gives
            no frame at all, or a lost live source is not back within ``reconnect_s`` (or, with
            ``reconnect_s=None``, ends or stalls); each names the source.
        MissingDependencyError: a GStreamer pipeline with an OpenCV built without GStreamer.
    """

    def __init__(
        self,
        source: str | int | Path | VideoSource,
        *,
        live: bool | None = None,
        stall_timeout: float = 10.0,
        join_timeout: float = 5.0,
        reconnect_s: float | None = DEFAULT_RECONNECT,
        on_status: Callable[[str], None] | None = None,
        wakeup: threading.Event | None = None,
    ) -> None:
        self.source = source if isinstance(source, VideoSource) else parse_source(source)
        self.live = self.source.live if live is None else live
        self.stall_timeout, self.join_timeout = stall_timeout, join_timeout
        if reconnect_s is not None and reconnect_s < 0:
            raise ValueError(f"reconnect_s must be 0 (never give up) or more, got {reconnect_s}")
        self.reconnect_s = reconnect_s
        self.on_status = on_status or print_status
        #: Frames per second the source reports (``None``: it does not say).
        self.fps: float | None = None
        #: A file's frame count from its header (``None`` for live sources or when unknown).
        self.total: int | None = None
        self.delivered = 0
        #: Times a lost live source came back, and the seconds it was away in all.
        self.reconnects = 0
        self.offline_s = 0.0
        self._cap: cv2.VideoCapture | None = None
        self._buffer = LatestFrame(wakeup)
        #: Whether the source has ended (a file's last frame was taken), for :meth:`poll`.
        self.finished = False
        self._in_order_frames: Iterator[CapturedFrame] | None = None  # poll() of live=False
        self._last_taken = 0.0  # when poll() last gave a frame (or the capture opened)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._abandoned: list[threading.Thread] = []  # readers stuck in a read that stalled
        self._lock = threading.Lock()
        self._gen = 0  # the current reader's number; an abandoned reader's is older
        self._reading_since: float | None = None  # when the current reader's read began
        self._read = 0  # frames read on the caller's thread (live=False)
        self._finite = True  # whether the end of the frames is normal (a file), set by open()

    # -- life cycle
    def open(self) -> Capture:
        """Open the source (and start the capture thread when live). Idempotent."""
        if self._cap is not None or self._thread is not None:
            return self
        cap = open_video(self.source, timeout_s=self.stall_timeout)
        fps, count = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(fps) if fps and fps > 0 else None
        self.total = count if count > 0 and self.source.kind == "file" else None
        self._finite = self.source.kind == "file" or (self.source.kind == "url" and count > 0)
        self._last_taken = time.perf_counter()
        if not self.live:
            self._cap = cap
            return self
        self._start_reader(cap, None)
        return self

    def close(self) -> None:
        """Stop the capture thread (joined, also during a reconnect's wait) and release the
        source. Idempotent."""
        self._stop.set()
        deadline = time.perf_counter() + self.join_timeout
        for thread in [t for t in (self._thread,) if t is not None] + self._abandoned:
            thread.join(max(deadline - time.perf_counter(), 0.0))
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> Capture:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the capture thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def reconnecting(self) -> bool:
        """Whether lost live sources are reopened (a live source of unknown length, and
        ``reconnect_s`` not ``None``)."""
        return self.reconnect_s is not None and self.source.live and not self._finite

    # -- counters
    @property
    def captured(self) -> int:
        """Frames read from the source so far."""
        return self._buffer.captured if self.live else self._read

    @property
    def newest_seq(self) -> int:
        """Sequence number of the newest frame captured (-1: none yet)."""
        return self.captured - 1

    @property
    def dropped(self) -> int:
        """Frames captured and replaced by a newer one before the consumer took them."""
        return self._buffer.dropped if self.live else 0

    # -- frames
    def __iter__(self) -> Iterator[CapturedFrame]:
        if self._cap is None and self._thread is None:
            raise RuntimeError("this Capture is not open: use `with Capture(source) as cap:`")
        return self._live() if self.live else self._in_order()

    def _live(self) -> Iterator[CapturedFrame]:
        poll = min(max(self.stall_timeout / 4, 0.05), 1.0)
        while True:
            try:
                frame = self._buffer.take(self.stall_timeout if not self.reconnecting else poll)
            except TimeoutError as e:
                if not self.reconnecting:
                    raise self._stalled() from e
                self._watch_stall()
                continue
            if frame is None:
                return
            self.delivered += 1
            yield frame

    def poll(self) -> CapturedFrame | None:
        """The next frame without waiting for a live source: its newest untaken frame, or
        ``None`` when none has come since the last one (or the source has ended: then
        :attr:`finished` is set). With ``live=False`` it reads the next frame in order.

        Raises:
            DataError: as iterating does: the source gave no frame at all, or a lost live source
                is not back within ``reconnect_s`` (without reconnecting: it stalled for
                ``stall_timeout``, or ended).
        """
        if self.finished:
            return None
        if self._cap is None and self._thread is None:
            raise RuntimeError("this Capture is not open: use `with Capture(source) as cap:`")
        if not self.live:
            if self._in_order_frames is None:
                self._in_order_frames = self._in_order()
            frame = next(self._in_order_frames, None)
            self.finished = frame is None
            return frame
        try:
            frame = self._buffer.take(0)
        except TimeoutError:
            if self.reconnecting:
                self._watch_stall()
            elif time.perf_counter() - self._last_taken > self.stall_timeout:
                self.finished = True
                raise self._stalled() from None
            return None
        except BaseException:
            self.finished = True
            raise
        if frame is None:
            self.finished = True
            return None
        self._last_taken = time.perf_counter()
        self.delivered += 1
        return frame

    def _stalled(self) -> DataError:
        return DataError(
            f"no new frame for {self.stall_timeout:g} s: the stream stalled (camera "
            "unplugged? network down?)",
            file=self.source.name,
        )

    def _watch_stall(self) -> None:
        """Abandon a reader whose read has blocked past ``stall_timeout`` (+ a grace) and
        start another that reopens the source."""
        with self._lock:
            since = self._reading_since
            if since is None or self._stop.is_set():
                return
            if time.perf_counter() - since <= self.stall_timeout + STALL_GRACE:
                return
            if self._thread is not None:
                self._abandoned.append(self._thread)
            self._gen += 1
            self._reading_since = None
        outage = self._lose(f"no new frame for {self.stall_timeout:g} s")
        self._start_reader(None, outage)

    def _start_reader(self, cap: cv2.VideoCapture | None, outage: _Outage | None) -> None:
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        self._thread = threading.Thread(
            target=self._reader,
            args=(cap, outage, self._gen),
            name="edgeyolo-capture",
            daemon=True,
        )
        self._thread.start()

    def _in_order(self) -> Iterator[CapturedFrame]:
        cap = self._cap
        outage: _Outage | None = None
        while cap is not None and not self._stop.is_set():
            began = time.perf_counter()
            ok, image = cap.read()
            if not ok:
                if not self.reconnecting or (self._read == 0 and outage is None):
                    break
                cap.release()
                self._cap = None
                outage = outage or self._lose(self._cause(began))
                cap = self._cap = self._reopen(outage)
                continue
            frame = CapturedFrame(self._read, image, time.perf_counter())
            self._read += 1
            if outage is not None:
                self._back(outage)
                outage = None
            self.delivered += 1
            yield frame
        problem = self._ended(self._read)
        if problem is not None and not self._stop.is_set():
            raise problem

    def _reader(self, cap: cv2.VideoCapture | None, outage: _Outage | None, gen: int) -> None:
        """The capture thread: read, put into the one-slot buffer (a file paced at its FPS);
        a lost live source is reopened. Reader ``gen`` stops quietly once abandoned."""
        error: BaseException | None = None
        try:
            period = 1.0 / (self.fps or DEFAULT_FPS) if self.source.kind == "file" else 0.0
            start, n = time.perf_counter(), 0
            while not self._stop.is_set():
                if cap is None:
                    assert outage is not None
                    cap = self._reopen(outage)
                    if cap is None:  # closed while waiting
                        break
                delay = start + n * period - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    break
                with self._lock:
                    if gen != self._gen:
                        break
                    began = self._reading_since = time.perf_counter()
                ok, image = cap.read()
                with self._lock:
                    if gen != self._gen:  # abandoned while blocked in the read
                        break
                    self._reading_since = None
                    if ok:
                        self._buffer.put(image)
                if ok:
                    n += 1
                    if outage is not None:
                        self._back(outage)
                        outage = None
                    continue
                if not self.reconnecting or (self._buffer.captured == 0 and outage is None):
                    error = self._ended(self._buffer.captured)
                    break
                cap.release()
                cap = None
                outage = outage or self._lose(self._cause(began))
        except BaseException as e:  # handed to the consumer, which raises it
            error = e
        finally:
            if cap is not None:
                cap.release()
            with self._lock:
                current = gen == self._gen
                if current:
                    self._reading_since = None
            if current:
                self._buffer.end(error)

    # -- reconnecting
    def _cause(self, began: float) -> str:
        """Why a read failed, from how long it took: a read timeout, else the end."""
        if time.perf_counter() - began >= 0.9 * self.stall_timeout:
            return f"no new frame for {self.stall_timeout:g} s"
        return "the camera stopped sending" if self.source.kind == "camera" else "it ended"

    def _lose(self, cause: str) -> _Outage:
        """Start an outage and say so in one line."""
        outage = _Outage(time.perf_counter(), self.captured - 1, cause)
        limit = "never giving up"
        if self.reconnect_s:
            limit = f"giving up after {self.reconnect_s:g} s"
        self.on_status(
            f"{self.source.name}: lost after frame {outage.after_seq} ({cause}); reconnecting "
            f"(retries {BACKOFF_START:g} s apart, doubling to {BACKOFF_MAX:g} s; {limit})"
        )
        return outage

    def _back(self, outage: _Outage) -> None:
        """End an outage (a frame came) and say so in one line."""
        away = time.perf_counter() - outage.start
        self.reconnects += 1
        self.offline_s += away
        self.on_status(
            f"{self.source.name}: reconnected after {away:.1f} s ({outage.attempts} "
            f"attempt(s)); frames go on from {self.captured - 1}"
        )

    def _reopen(self, outage: _Outage) -> cv2.VideoCapture | None:
        """Open the source again, waiting with backoff between tries; ``None`` when closed
        meanwhile.

        Raises:
            DataError: still no capture ``reconnect_s`` after the loss.
        """
        while True:
            wait = outage.delay
            if self.reconnect_s:
                left = outage.start + self.reconnect_s - time.perf_counter()
                if left <= 0:
                    raise self._gave_up(outage)
                wait = min(wait, left)
            if self._stop.wait(wait):
                return None
            outage.attempts += 1
            outage.delay = min(outage.delay * 2, BACKOFF_MAX)
            try:
                return open_video(self.source, timeout_s=self.stall_timeout)
            except DataError:
                continue

    def _gave_up(self, outage: _Outage) -> DataError:
        away = time.perf_counter() - outage.start
        return DataError(
            f"lost after frame {outage.after_seq} ({outage.cause}) and not back after "
            f"{away:.1f} s ({outage.attempts} reconnection attempt(s)): check that the sender "
            "is running, the network and the cable, then start again; a longer --reconnect "
            "(Capture(reconnect_s=...)) waits longer, 0 never gives up",
            file=self.source.name,
        )

    def _ended(self, frames: int) -> DataError | None:
        """The error for a source that stopped giving frames after ``frames`` (``None``: a
        file, or a finite stream, that simply ended)."""
        what = "camera" if self.source.kind == "camera" else "stream"
        if frames == 0:
            return DataError(
                "opened, but not one frame could be read from it (damaged, empty, or a codec "
                "this OpenCV build cannot decode)",
                file=self.source.name,
            )
        if self._finite:
            return None
        return DataError(
            f"the {what} ended after {frames} frame(s) (unplugged? network down? the sender "
            "stopped?)",
            file=self.source.name,
        )


# ------------------------------------------------------------------------ loop timing

STAGES = ("pre", "infer", "post")


class LoopStats:
    """FPS and per-stage times (ms) of a frame loop, over the last ``window`` frames and in
    total.

    Args:
        window: frames the running figures (:attr:`fps`, :meth:`text`) average over.
        clock: seconds, monotonic (default ``time.perf_counter``); the loop starts at creation.
    """

    def __init__(self, window: int = 30, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start = clock()
        self.frames = 0
        self._ends: deque[float] = deque([self.start], maxlen=window + 1)
        self._recent: deque[dict[str, float]] = deque(maxlen=window)
        self._sums = dict.fromkeys(STAGES, 0.0)

    def tick(self, times: Mapping[str, float]) -> None:
        """Count one processed frame with its stage times in ms (``pre``, ``infer``, ``post``;
        a stage not given counts as 0)."""
        stages = {s: float(times.get(s, 0.0)) for s in STAGES}
        self._ends.append(self.clock())
        self._recent.append(stages)
        for s, v in stages.items():
            self._sums[s] += v
        self.frames += 1

    @property
    def fps(self) -> float:
        """Frames per second over the window (0 before the first frame)."""
        span = self._ends[-1] - self._ends[0]
        return (len(self._ends) - 1) / span if span > 0 else 0.0

    def mean_ms(self, stage: str) -> float:
        """Mean time of ``stage`` over the window, ms."""
        if not self._recent:
            return 0.0
        return sum(r[stage] for r in self._recent) / len(self._recent)

    def text(self) -> str:
        """``"12.3 FPS  pre 1.2  infer 30.4  post 2.1 ms"``: for the overlay and periodic logs."""
        stages = "  ".join(f"{s} {self.mean_ms(s):.1f}" for s in STAGES)
        return f"{self.fps:.1f} FPS  {stages} ms"

    def summary(self, *, captured: int | None = None, dropped: int | None = None) -> str:
        """One line over the whole run; ``captured`` / ``dropped`` for a live source."""
        elapsed = (self._ends[-1] - self.start) if self.frames else 0.0
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        n = max(self.frames, 1)
        stages = ", ".join(f"{s} {self._sums[s] / n:.1f} ms" for s in STAGES)
        line = f"{self.frames} frame(s) in {elapsed:.1f} s, {fps:.1f} FPS; per frame {stages}"
        if captured is not None:
            line += f"; {captured} captured, {dropped or 0} dropped"
            if dropped:
                line += " (the model is slower than the source: it always takes the newest frame)"
        return line


def draw_stats(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in red (BGR ``(0, 0, 255)``) on a black outline at the top left of
    ``image`` (``uint8[H, W, 3]`` BGR), in place; returns ``image``. Scaled to the frame's
    height (0.35 at 240 px and below, 0.7 at 720 px)."""
    h = image.shape[0]
    scale = min(max(0.7 * h / 720, 0.35), 1.5)
    org = (6, 6 + int(22 * scale))
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, org, font, scale, (0, 0, 0), 3)
    cv2.putText(image, text, org, font, scale, (0, 0, 255), 1)
    return image
