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
import importlib.util
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
#: The frame-counter codec, loaded by its path: this python may not have edgeyolo installed,
#: and the codec imports nothing but numpy.
CODEC = Path(__file__).resolve().parents[1] / "edgeyolo" / "runtime" / "framecounter.py"


def load_codec() -> ModuleType:
    """``edgeyolo/runtime/framecounter.py`` as a module, without importing edgeyolo."""
    spec = importlib.util.spec_from_file_location("edgeyolo_framecounter", CODEC)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the frame-counter codec from {CODEC}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def _caps(args: argparse.Namespace, fmt: str = "") -> str:
    f = f",format={fmt}" if fmt else ""
    return f"video/x-raw{f},width={args.width},height={args.height},framerate={args.fps}/1"


def launch_line(args: argparse.Namespace) -> str:
    """The media factory's launch line for these options."""
    enc = (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} ! "
        "rtph264pay name=pay0 pt=96"
    )
    if args.counter:
        src = (
            "appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 "
            f"leaky-type=downstream caps={_caps(args, 'BGR')} ! videoconvert ! "
            "video/x-raw,format=I420"
        )
    else:
        src = f"videotestsrc is-live=true pattern=ball ! {_caps(args)}"
    return f"( {src} ! {enc} )"


class CounterFrames:
    """Numpy frames at the server's rate, each with its index drawn in (``--counter``): a
    colour gradient with a square that moves, pushed into the current media's ``appsrc``.

    The index counts frames since the server started, whether or not a client is watching.
    """

    def __init__(self, args: argparse.Namespace, gst: Any, glib: Any) -> None:
        import numpy as np

        encode_counter = load_codec().encode_counter

        self.encode, self.gst, self.glib = encode_counter, gst, glib
        self.w, self.h, self.fps = args.width, args.height, args.fps
        encode_counter(np.zeros((self.h, self.w), np.uint8), 0)  # raises if it cannot fit
        gx, gy = np.meshgrid(
            np.linspace(0, 255, self.w, dtype=np.float32),
            np.linspace(0, 255, self.h, dtype=np.float32),
        )
        self.base = np.dstack([gx, gy, (gx + gy) / 2]).astype(np.uint8)  # BGR gradient
        self.appsrc: Any = None
        self.index = 0
        self.start = time.monotonic()

    def media_configure(self, _factory: Any, media: Any) -> None:
        """A media was made for the first client: feed its appsrc from now on."""
        self.appsrc = media.get_element().get_by_name("src")
        media.connect("unprepared", self._unprepared)

    def _unprepared(self, _media: Any) -> None:
        self.appsrc = None

    def frame(self, index: int) -> Any:
        """The BGR frame ``index``: the gradient, a square moving along, the index blocks."""
        image = self.base.copy()
        side = max(self.h // 8, 8)
        x0 = (index * 4) % max(self.w - side, 1)
        y0 = self.h // 2 - side // 2
        image[y0 : y0 + side, x0 : x0 + side] = 255
        self.encode(image, index)
        return image

    def start_timer(self) -> None:
        """Push one frame every 1/fps s on the main loop, on a schedule that does not drift."""
        self._arm()

    def _arm(self) -> None:
        due = self.start + self.index / self.fps
        delay_ms = max(int((due - time.monotonic()) * 1000), 0)
        self.glib.timeout_add(delay_ms, self._tick)

    def _tick(self) -> bool:
        src = self.appsrc
        if src is not None:
            data = self.frame(self.index).tobytes()
            buf = self.gst.Buffer.new_wrapped(data)
            buf.duration = self.gst.SECOND // self.fps
            src.emit("push-buffer", buf)
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
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as e:
        _fail(3, f"needs GStreamer's Python bindings (python3-gi, gir1.2-gst-rtsp-server-1.0): {e}")
    Gst.init(None)
    needed = ["x264enc", "rtph264pay"] + (["appsrc", "videoconvert"] if args.counter else [])
    missing = [e for e in needed if Gst.ElementFactory.find(e) is None]
    if not args.counter and Gst.ElementFactory.find("videotestsrc") is None:
        missing.append("videotestsrc")
    if missing:
        _fail(3, f"GStreamer elements missing: {', '.join(missing)}")

    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)
    counter: CounterFrames | None = None
    if args.counter:
        try:
            counter = CounterFrames(args, Gst, GLib)
        except (ImportError, OSError, ValueError) as e:
            _fail(2, f"--counter: {e}")
        factory.connect("media-configure", counter.media_configure)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        _fail(2, f"cannot listen on {HOST}:{args.port} (in use?)")
    reason = ["stopped"]

    def stop(why: str) -> bool:
        reason[0] = why
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop, "SIGINT")
    if args.lifetime > 0:
        GLib.timeout_add(int(args.lifetime * 1000), stop, f"lifetime of {args.lifetime:g} s over")
    _watch_stdin(GLib, stop)
    if counter is not None:
        counter.start_timer()
    print(f"rtsp://{HOST}:{server.get_bound_port()}{MOUNT}", flush=True)
    loop.run()
    server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)
    print(f"rtsp_server: {reason[0]}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
