"""A live H.264 RTSP stream on loopback, for tests and benchmarks: a stand-in for an IP camera.

A test / bench tool, not part of edgeyolo: it serves ``rtsp://127.0.0.1:PORT/test`` on the
loopback interface only (nothing outside this machine can connect) with gst-rtsp-server::

    ( videotestsrc is-live=true pattern=ball ! video/x-raw,width=W,height=H,framerate=F/1 !
      x264enc tune=zerolatency speed-preset=ultrafast key-int-max=F ! rtph264pay name=pay0 pt=96 )

as one media shared by every client (all see the same live stream, as from a camera). With
``--counter`` the frames come from numpy through ``appsrc`` instead, each with its index drawn
as a row of black / white blocks at the top-left (``edgeyolo/runtime/framecounter.py`` reads
it back),
so that a receiver can tell how many frames old the frame it is processing is.

The server itself is ``edgeyolo/runtime/rtsp_out.py`` (the RTSP output for camera apps), imported
from this checkout, which needs nothing but numpy installed; this script adds the test source,
the command line and the stop conditions.

Run it with a Python that has GStreamer's introspection (``gi``: Debian's ``python3-gi``,
``gir1.2-gst-rtsp-server-1.0``, and the x264 / RTP plugins, ``gstreamer1.0-plugins-ugly`` /
``-good``), e.g. the system one::

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --width 640 --height 480 --fps 30

Once it listens it prints exactly one line, the URL, on stdout. It stops cleanly on SIGTERM or
SIGINT, when its stdin is a pipe that closes (a parent that dies takes it along), and after
``--lifetime`` seconds at the latest. Exit status: 0 on a clean stop, 2 on bad options or a
port that cannot be bound, 3 when GStreamer or a plugin is missing.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

MOUNT = "/test"
HOST = "127.0.0.1"
#: This checkout: its ``edgeyolo`` is imported (this python may not have edgeyolo installed;
#: the modules used import nothing but numpy and, on first use, GStreamer's ``gi``).
ROOT = Path(__file__).resolve().parents[1]


def load_rtsp_out() -> tuple[ModuleType, ModuleType, type[Exception]]:
    """``(edgeyolo.runtime.rtsp_out, edgeyolo.runtime.framecounter, EdgeYoloError)`` of this
    checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from edgeyolo.errors import EdgeYoloError
    from edgeyolo.runtime import framecounter, rtsp_out

    return rtsp_out, framecounter, EdgeYoloError


def _fail(code: int, message: str) -> NoReturn:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    p.add_argument("--width", type=int, default=640, help="frame width, px")
    p.add_argument("--height", type=int, default=480, help="frame height, px")
    p.add_argument("--fps", type=int, default=30, help="frames per second")
    p.add_argument(
        "--lifetime", type=float, default=600.0, help="stop after this many seconds (0: never)"
    )
    p.add_argument(
        "--counter",
        action="store_true",
        help="numpy frames through appsrc, each with its index drawn at the top-left",
    )
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    if args.width < 16 or args.height < 16 or args.fps < 1:
        p.error("--width and --height must be >= 16, --fps >= 1")
    if args.lifetime < 0:
        p.error("--lifetime must be >= 0")
    return args


def launch_line(args: argparse.Namespace) -> str:
    """The media factory's launch line without ``--counter`` (with it, the frames go through
    ``edgeyolo.runtime.rtsp_out.stream_launch``'s ``appsrc``)."""
    return (
        "( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} ! "
        "rtph264pay name=pay0 pt=96 )"
    )


class CounterFrames:
    """Numpy frames at the server's rate, each with its index drawn in (``--counter``): a
    colour gradient with a square that moves, written to an ``RtspStream`` (which drops them
    while no client watches).

    The index counts frames since the server started, whether or not a client is watching.
    """

    def __init__(self, args: argparse.Namespace, encode_counter: Any, glib: Any) -> None:
        import numpy as np

        self.encode, self.glib = encode_counter, glib
        self.w, self.h, self.fps = args.width, args.height, args.fps
        encode_counter(np.zeros((self.h, self.w), np.uint8), 0)  # raises if it cannot fit
        gx, gy = np.meshgrid(
            np.linspace(0, 255, self.w, dtype=np.float32),
            np.linspace(0, 255, self.h, dtype=np.float32),
        )
        self.base = np.dstack([gx, gy, (gx + gy) / 2]).astype(np.uint8)  # BGR gradient
        self.stream: Any = None
        self.index = 0
        self.start = time.monotonic()

    def frame(self, index: int) -> Any:
        """The BGR frame ``index``: the gradient, a square moving along, the index blocks."""
        image = self.base.copy()
        side = max(self.h // 8, 8)
        x0 = (index * 4) % max(self.w - side, 1)
        y0 = self.h // 2 - side // 2
        image[y0 : y0 + side, x0 : x0 + side] = 255
        self.encode(image, index)
        return image

    def start_timer(self, stream: Any) -> None:
        """Write one frame to ``stream`` every 1/fps s on the main loop, on a schedule that
        does not drift."""
        self.stream = stream
        self._arm()

    def _arm(self) -> None:
        due = self.start + self.index / self.fps
        delay_ms = max(int((due - time.monotonic()) * 1000), 0)
        self.glib.timeout_add(delay_ms, self._tick)

    def _tick(self) -> bool:
        if self.stream.watched:
            self.stream.write(self.frame(self.index))
        self.index += 1
        self._arm()
        return False  # one-shot; _arm set the next one


def _watch_stdin(glib: Any, stop: Any) -> None:
    """Stop when stdin is a pipe or socket whose other end closes (the parent is gone)."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return  # a terminal or /dev/null: signals and --lifetime stop it

    def on_input(fd: int, condition: Any) -> bool:
        data = b""
        if condition & glib.IOCondition.IN:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
        if data:
            return True  # anything written is ignored; only the end of the pipe counts
        stop("stdin closed")
        return False

    cond = glib.IOCondition.IN | glib.IOCondition.HUP | glib.IOCondition.ERR
    glib.io_add_watch(0, glib.PRIORITY_DEFAULT, cond, on_input)


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped; see the module docstring."""
    args = _parse(argv)
    try:
        rtsp_out, framecounter, edgeyolo_error = load_rtsp_out()
    except ImportError as e:  # numpy missing, or a checkout without the module
        _fail(3, f"cannot import edgeyolo.runtime.rtsp_out from {ROOT}: {e}")
    needed = ("appsrc", "videoconvert") if args.counter else ("videotestsrc",)
    try:
        g = rtsp_out.load_gstreamer((*needed, "x264enc", "rtph264pay"))
    except edgeyolo_error as e:  # MissingDependencyError: gi, a typelib or an element
        _fail(3, f"needs GStreamer's Python bindings and plugins: {e}")
    glib = g.glib
    counter: CounterFrames | None = None
    if args.counter:
        try:
            counter = CounterFrames(args, framecounter.encode_counter, glib)
        except (ImportError, OSError, ValueError) as e:
            _fail(2, f"--counter: {e}")
    try:
        server = rtsp_out.RtspServer(HOST, args.port)
    except edgeyolo_error as e:  # ConfigError: the port is in use or cannot be bound
        _fail(2, str(e))
    with server:
        try:
            if counter is not None:
                stream = server.add_stream(MOUNT, args.width, args.height, args.fps)
            else:
                server.mount(MOUNT, launch_line(args))
        except edgeyolo_error as e:  # ConfigError: a size x264 cannot take
            _fail(2, str(e))
        reason = ["stopped"]
        loop = glib.MainLoop()

        def stop(why: str) -> bool:
            reason[0] = why
            loop.quit()
            return False

        glib.unix_signal_add(glib.PRIORITY_HIGH, signal.SIGTERM, stop, "SIGTERM")
        glib.unix_signal_add(glib.PRIORITY_HIGH, signal.SIGINT, stop, "SIGINT")
        if args.lifetime > 0:
            glib.timeout_add(
                int(args.lifetime * 1000), stop, f"lifetime of {args.lifetime:g} s over"
            )
        _watch_stdin(glib, stop)
        if counter is not None:
            counter.start_timer(stream)
        print(server.url(MOUNT), flush=True)
        loop.run()
    print(f"rtsp_server: {reason[0]}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
