"""An RTSP output: frames re-served as a live H.264 stream, like jetson-inference's
``videoOutput("rtsp://@:8554/my_output")``, for VLC, ffplay, OpenCV or another edgeyolo to watch::

    from edgeyolo.runtime.rtsp_out import RtspServer, parse_rtsp_output

    host, port, path = parse_rtsp_output("rtsp://@:8554/live")   # ("0.0.0.0", 8554, "/live")
    with RtspServer(host, port) as server:
        stream = server.add_stream(path, width=640, height=480, fps=30)
        print("watch", server.url(path))                          # rtsp://127.0.0.1:8554/live
        for frame in frames:                                       # uint8[480, 640, 3], BGR
            stream.write(frame)

One gst-rtsp-server listens on ``host:port`` and runs in its own GLib main loop, in a daemon
thread that :meth:`RtspServer.close` joins. Each mount is one *shared* media::

    ( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2
        leaky-type=downstream caps=video/x-raw,format=BGR,width=W,height=H,framerate=F !
      videoconvert ! video/x-raw,format=I420 !
      x264enc tune=zerolatency speed-preset=ultrafast key-int-max=FPS !
      rtph264pay name=pay0 pt=96 )

made when the first client connects and torn down when the last one leaves: every client sees
the same stream, from a key frame at most one second after it joins (``key-int-max``; the SDP
carries SPS/PPS: ``config-interval=-1`` on the payloader is left out, as it makes OpenCV's
FFmpeg reader return the first frame twice).
:meth:`RtspStream.write` pushes a frame into the media's ``appsrc``: it never waits (the source
keeps at most two frames and drops the oldest), and with no client connected the frame is
simply dropped. A frame of another size than the stream's raises
:class:`~edgeyolo.errors.ConfigError` naming both sizes: letterbox or resize it first (the
stream's size is fixed when it is mounted, since a client has already been told it).

Needs GStreamer's Python bindings (``gi``), gst-rtsp-server's introspection data and the x264 /
RTP plugins, imported on first use: ``sudo apt install python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-ugly gstreamer1.0-rtsp`` on Debian, Ubuntu and JetPack, with edgeyolo in a
venv made with ``--system-site-packages`` so that the system's ``gi`` is seen. Without them
:class:`~edgeyolo.errors.MissingDependencyError` says what to install. No torch, no OpenCV.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any

import numpy as np

from edgeyolo.errors import ConfigError, MissingDependencyError
from edgeyolo.lazy import lazy_import

__all__ = [
    "ALL_INTERFACES",
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "INSTALL",
    "MIN_GSTREAMER",
    "REQUIRED_ELEMENTS",
    "GstModules",
    "RtspServer",
    "RtspStream",
    "load_gstreamer",
    "parse_rtsp_output",
    "stream_launch",
]

#: The port when the URL names none (jetson-inference's, and the usual RTSP test port).
DEFAULT_PORT = 8554
#: The mount path when the URL names none.
DEFAULT_PATH = "/live"
#: What ``@`` or an empty host binds: every IPv4 interface.
ALL_INTERFACES = "0.0.0.0"
LOOPBACK = "127.0.0.1"
EXAMPLE = "rtsp://@:8554/live (all interfaces) or rtsp://127.0.0.1:8554/live (this machine only)"
#: How to get GStreamer's Python bindings, gst-rtsp-server and the encoder.
INSTALL = (
    "sudo apt install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly "
    "gstreamer1.0-rtsp (Debian, Ubuntu, JetPack), and run edgeyolo from a venv made with "
    "`python3 -m venv --system-site-packages` so that the system's gi is seen"
)
#: The GStreamer elements every stream needs, and the Debian package that has each.
REQUIRED_ELEMENTS: dict[str, str] = {
    "appsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
_PACKAGE_OF = {**REQUIRED_ELEMENTS, "videotestsrc": "gstreamer1.0-plugins-base"}
#: The oldest GStreamer that works: appsrc's ``leaky-type`` (never a growing queue) is 1.20's.
MIN_GSTREAMER = (1, 20)
#: Seconds :meth:`RtspServer.close` waits for the main-loop thread.
JOIN_TIMEOUT = 5.0
_NEEDED_FOR = "the RTSP output"
_GI = lazy_import("gi", install=INSTALL, needed_for=_NEEDED_FOR)
_GST = lazy_import("gi.repository.Gst", install=INSTALL, needed_for=_NEEDED_FOR)
_GLIB = lazy_import("gi.repository.GLib", install=INSTALL, needed_for=_NEEDED_FOR)
_GIO = lazy_import("gi.repository.Gio", install=INSTALL, needed_for=_NEEDED_FOR)
_RTSP = lazy_import("gi.repository.GstRtspServer", install=INSTALL, needed_for=_NEEDED_FOR)
#: A mount path: ``/`` and segments of letters, digits and ``._~-``.
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_USERINFO = re.compile(r"(://[^/@]*:)[^/@]*@")


# ----------------------------------------------------------------------------- the URL


def _bad_url(url: str, what: str) -> ConfigError:
    shown = _USERINFO.sub(r"\1***@", url)  # never a password in a message
    return ConfigError(
        f"RTSP output {shown!r}: {what}; expected rtsp://HOST:PORT/PATH, e.g. {EXAMPLE}"
    )


def _parse_host(url: str, authority: str) -> tuple[str, str]:
    """``(host, port text)`` of ``[@]HOST[:PORT]``; the host as it will be bound."""
    if "@" in authority:
        user, authority = authority.rsplit("@", 1)
        if user:
            raise _bad_url(url, "an output takes no user name or password")
    host, colon, port = authority.partition(":")
    if colon and not port:
        raise _bad_url(url, "the port after ':' is empty")
    if host.startswith("["):
        raise _bad_url(url, f"IPv6 address {authority!r} is not supported, only IPv4")
    if host in ("", "@", ALL_INTERFACES):
        return ALL_INTERFACES, port
    if host.lower() == "localhost":
        return LOOPBACK, port
    if _IPV4.fullmatch(host) is None or any(int(b) > 255 for b in host.split(".")):
        raise _bad_url(
            url,
            f"host {host!r} is not '@' (all interfaces), localhost or an IPv4 address of this "
            "machine",
        )
    return host, port


def parse_rtsp_output(url: str) -> tuple[str, int, str]:
    """``(host, port, path)`` to serve ``url`` on: ``rtsp://HOST:PORT/PATH``.

    HOST ``@`` or empty is every interface (``0.0.0.0``), as jetson-inference has it;
    ``localhost`` is ``127.0.0.1``; else an IPv4 address of this machine. PORT defaults to
    :data:`DEFAULT_PORT` (``0``: a free one, see :attr:`RtspServer.port`), PATH to
    :data:`DEFAULT_PATH`; a trailing ``/`` is dropped.

    Raises:
        ConfigError: not of that form; the message says what is wrong and gives an example.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != "rtsp":
        raise _bad_url(url, "not an rtsp:// URL")
    authority, slash, path = rest.partition("/")
    if "?" in path or "#" in path:
        raise _bad_url(url, "an output URL takes no query ('?') or fragment ('#')")
    host, port_text = _parse_host(url, authority)
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise _bad_url(url, f"port {port_text!r} is not a number from 0 to 65535")
        port = int(port_text)
    path = "/" + path.rstrip("/") if slash and path.strip("/") else DEFAULT_PATH
    if _PATH.fullmatch(path) is None:
        raise _bad_url(
            url, f"path {path!r} may hold only letters, digits, '.', '_', '~', '-' and '/'"
        )
    return host, port, path


def _check_path(path: str) -> str:
    path = "/" + path.strip("/")
    if _PATH.fullmatch(path) is None:
        raise ConfigError(
            f"RTSP mount path {path!r}: use '/' and letters, digits, '.', '_', '~', '-' "
            f"(e.g. {DEFAULT_PATH})"
        )
    return path


# ------------------------------------------------------------------------- GStreamer


@dataclass(frozen=True)
class GstModules:
    """GStreamer's introspected modules, loaded and initialised (:func:`load_gstreamer`)."""

    gst: Any
    glib: Any
    gio: Any
    rtsp: Any


def load_gstreamer(elements: tuple[str, ...] = tuple(REQUIRED_ELEMENTS)) -> GstModules:
    """Import ``gi``, GStreamer and gst-rtsp-server, initialise GStreamer, and check that each
    of ``elements`` exists.

    Raises:
        MissingDependencyError: ``gi``, a typelib or an element is missing; the message names
            it and what to install.
    """
    gi = _GI.load()
    for namespace in ("Gst", "GstRtspServer"):
        try:
            gi.require_version(namespace, "1.0")
        except ValueError as e:
            raise MissingDependencyError(
                f"GStreamer's {namespace} 1.0 introspection data cannot be loaded ({e}; needed "
                f"for {_NEEDED_FOR}); install it: {INSTALL}"
            ) from e
    gst = _GST.load()
    gst.init(None)
    if tuple(gst.version()[:2]) < MIN_GSTREAMER:
        have = ".".join(str(v) for v in gst.version()[:3])
        raise MissingDependencyError(
            f"GStreamer >= {MIN_GSTREAMER[0]}.{MIN_GSTREAMER[1]} is needed for {_NEEDED_FOR} "
            f"(appsrc's leaky-type; JetPack 6 has 1.20), this machine has {have}"
        )
    missing = [name for name in elements if gst.ElementFactory.find(name) is None]
    if missing:
        packages = sorted({_PACKAGE_OF.get(n, "the plugin package that has it") for n in missing})
        raise MissingDependencyError(
            f"GStreamer element(s) {', '.join(missing)} not found (needed for {_NEEDED_FOR}); "
            f"install {' '.join(packages)}: {INSTALL}"
        )
    return GstModules(gst=gst, glib=_GLIB.load(), gio=_GIO.load(), rtsp=_RTSP.load())


def _bind_error(g: GstModules, host: str, port: int, error: Any) -> ConfigError:
    """The error for a listening socket that could not be made."""
    where = f"cannot serve RTSP on {host}:{port}"
    if error.matches(g.gio.io_error_quark(), g.gio.IOErrorEnum.ADDRESS_IN_USE):
        return ConfigError(
            f"{where}: port {port} is in use (another RTSP server, or an earlier run still "
            f"holding it); choose another port in the output URL (e.g. rtsp://@:{port + 1}/live) "
            f"or stop the program that holds it (`ss -ltnp 'sport = :{port}'` names it)"
        )
    hint = "ports below 1024 need root: use 8554" if 0 < port < 1024 else ""
    hint = hint or f"use '@' (all interfaces), 127.0.0.1 or an address of this machine: {EXAMPLE}"
    return ConfigError(f"{where} ({error.message}); {hint}")


def _fps_fraction(fps: float) -> Fraction:
    if not fps > 0 or fps > 1000:
        raise ConfigError(f"RTSP stream fps {fps!r}: must be above 0 and at most 1000")
    return Fraction(fps).limit_denominator(1001)


def stream_launch(width: int, height: int, fps: float) -> str:
    """The media factory's launch line for BGR frames of ``width`` x ``height`` at ``fps``."""
    rate = _fps_fraction(fps)
    caps = (
        f"video/x-raw,format=BGR,width={width},height={height},"
        f"framerate={rate.numerator}/{rate.denominator}"
    )
    return (
        "( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 "
        f"leaky-type=downstream caps={caps} ! videoconvert ! video/x-raw,format=I420 ! "
        "x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={max(round(fps), 1)} ! rtph264pay name=pay0 pt=96 )"
    )


# ---------------------------------------------------------------------------- streams


class RtspStream:
    """One mounted stream of :class:`RtspServer` (:meth:`RtspServer.add_stream`): BGR frames in
    through :meth:`write`."""

    def __init__(self, gst: Any, url: str, width: int, height: int, fps: float) -> None:
        self.url, self.width, self.height = url, width, height
        self.fps = float(fps)
        self._gst = gst
        self._duration = int(gst.SECOND / self.fps)
        self._lock = threading.Lock()
        #: The appsrc of each live media (one while clients watch: the media is shared).
        self._sources: dict[Any, Any] = {}
        #: Frames pushed to at least one client, and frames dropped for want of one.
        self.sent = 0
        self.dropped = 0

    @property
    def watched(self) -> bool:
        """Whether a client is connected (a media is up to take frames)."""
        with self._lock:
            return bool(self._sources)

    @property
    def medias(self) -> int:
        """Live medias fed by :meth:`write`: 1 while any client watches (all share it)."""
        with self._lock:
            return len(self._sources)

    def _media_configure(self, _factory: Any, media: Any) -> None:
        """A media was made for the first client: feed its appsrc until it is unprepared."""
        src = media.get_element().get_by_name("src")
        with self._lock:
            self._sources[media] = src
        media.connect("unprepared", self._media_unprepared)

    def _media_unprepared(self, media: Any) -> None:
        with self._lock:
            self._sources.pop(media, None)

    def _detach(self) -> None:
        with self._lock:
            self._sources.clear()

    def write(self, image: np.ndarray) -> bool:
        """Send ``image`` (``uint8[H, W, 3]``, BGR, the stream's size) to every client;
        ``False`` when none is connected (the frame is dropped). Never waits for a client.

        Raises:
            ConfigError: not a ``uint8`` BGR image of the stream's size (both sizes named).
        """
        shape = getattr(image, "shape", None)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ConfigError(
                f"RTSP stream {self.url}: a frame must be a uint8[H, W, 3] BGR array, got "
                f"{getattr(image, 'dtype', type(image).__name__)} of shape {shape}"
            )
        if image.shape != (self.height, self.width, 3):
            h, w = image.shape[:2]
            raise ConfigError(
                f"RTSP stream {self.url} is {self.width}x{self.height}, this frame is {w}x{h}"
                f"{'' if image.shape[2] == 3 else f' with {image.shape[2]} channels'}: resize "
                "or letterbox it to the stream's size, or mount a stream of the frames' size"
            )
        with self._lock:
            sources = list(self._sources.values())
        if not sources:
            self.dropped += 1
            return False
        buf = self._gst.Buffer.new_wrapped(image.tobytes())
        buf.duration = self._duration
        for src in sources:
            src.emit("push-buffer", buf)  # leaky, max 2 buffers: returns at once
        self.sent += 1
        return True


# ----------------------------------------------------------------------------- server


class RtspServer:
    """A gst-rtsp-server on ``host:port`` (``0``: a free port, then :attr:`port` is the one
    bound) in its own main-loop thread; :meth:`add_stream` mounts streams on it. A context
    manager; :meth:`close` disconnects the clients, frees the port and joins the thread.

    Raises:
        MissingDependencyError: GStreamer, gst-rtsp-server or a plugin is missing.
        ConfigError: the port is in use (the message names it and what to do), or ``host`` is
            not an address of this machine.
    """

    def __init__(self, host: str = ALL_INTERFACES, port: int = DEFAULT_PORT) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"RTSP port {port}: must be 0..65535 (0: a free one), e.g. 8554")
        g = self._g = load_gstreamer()
        self.host = host
        self._server = g.rtsp.RTSPServer.new()
        self._server.set_address(host)
        self._server.set_service(str(port))
        try:
            self._source = self._server.create_source(None)
        except g.glib.Error as e:
            raise _bind_error(g, host, port, e) from e
        #: The port bound (the one asked for, or the free one picked for 0).
        self.port: int = self._server.get_bound_port()
        self._mounts: list[str] = []
        self._streams: list[RtspStream] = []
        self._closed = False
        self._context = g.glib.MainContext.new()
        self._loop = g.glib.MainLoop.new(self._context, False)
        self._source.attach(self._context)
        self._thread = threading.Thread(
            target=self._run, name=f"edgeyolo-rtsp-out:{self.port}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        self._context.push_thread_default()
        try:
            self._loop.run()
        finally:
            self._context.pop_thread_default()

    def _quit(self, *_: Any) -> bool:
        self._loop.quit()
        return False

    def url(self, path: str = DEFAULT_PATH) -> str:
        """The URL a client opens for ``path`` (``127.0.0.1`` for an all-interfaces bind)."""
        host = LOOPBACK if self.host == ALL_INTERFACES else self.host
        return f"rtsp://{host}:{self.port}{_check_path(path)}"

    def mount(
        self, path: str, launch: str, configure: Callable[[Any, Any], None] | None = None
    ) -> str:
        """Serve the gst-launch bin ``launch`` (``( ... ! rtph264pay name=pay0 pt=96 )``) at
        ``path`` as one media shared by all clients; ``configure(factory, media)`` is called
        for each media made. Returns the URL. :meth:`add_stream` is the usual way in.

        Raises:
            ConfigError: a bad path, one already mounted, or a closed server.
        """
        path = _check_path(path)
        if self._closed:
            raise ConfigError(f"RTSP server on port {self.port} is closed; open a new one")
        if path in self._mounts:
            raise ConfigError(f"RTSP path {path} is already mounted on port {self.port}")
        factory = self._g.rtsp.RTSPMediaFactory.new()
        factory.set_launch(launch)
        factory.set_shared(True)
        if configure is not None:
            factory.connect("media-configure", configure)
        self._server.get_mount_points().add_factory(path, factory)
        self._mounts.append(path)
        return self.url(path)

    def add_stream(self, path: str, width: int, height: int, fps: float = 30.0) -> RtspStream:
        """Mount a stream of BGR frames of ``width`` x ``height`` at ``fps`` at ``path``.

        Raises:
            ConfigError: odd or non-positive sizes (H.264 4:2:0 needs even ones), a bad fps,
                a bad or taken path.
        """
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ConfigError(
                f"RTSP stream size {width}x{height}: width and height must be even and positive "
                "(H.264 4:2:0); crop or pad the frames by a pixel"
            )
        launch = stream_launch(width, height, fps)
        stream = RtspStream(self._g.gst, self.url(path), width, height, fps)
        self.mount(path, launch, stream._media_configure)
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Disconnect every client, stop listening (the port is free again) and join the
        main-loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # quit from inside the loop: a quit() before run() has started would be lost
        quit_source = self._g.glib.idle_source_new()
        quit_source.set_callback(self._quit)
        quit_source.attach(self._context)
        self._thread.join(JOIN_TIMEOUT)
        rtsp = self._g.rtsp
        self._server.client_filter(lambda _server, _client: rtsp.RTSPFilterResult.REMOVE)
        for stream in self._streams:
            stream._detach()
        mounts = self._server.get_mount_points()
        for path in self._mounts:
            mounts.remove_factory(path)
        self._source.destroy()
        # the listening socket closes when the source and the server are finalised: no
        # reference may outlive close()
        self._source = self._server = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
