"""Many cameras, one model: a capture thread per source, one batched inference per tick.

::

    import edgeyolo
    cameras = ["rtsp://10.0.0.5/live", "rtsp://10.0.0.6/live"]
    for r in edgeyolo.stream(cameras, "export/tiny/model_fp32.onnx"):
        print(r.name, r.frame, r.age_ms, r.detections.labels)  # r.image: the frame, BGR

Each source is a :class:`~edgeyolo.runtime.capture.Capture`: a live one (camera, URL,
GStreamer pipeline) is read in its own thread that keeps only its newest frame, reconnecting
when it is lost; a video file is read in order (or, with ``live=True``, paced at its FPS as a
camera would send it). A *tick* takes the newest untaken frame of every source that has one, up
to the model's batch (:attr:`Detector.max_batch <edgeyolo.runtime.detector.Detector.max_batch>`:
any number for an ONNX graph with a dynamic batch axis or a checkpoint, an engine's
``--max-batch``), and runs them through the model in one call (``batch=1``: one call per frame).
With more sources than the batch, the ticks take them in turn.

What this adds to a loop over one :class:`~edgeyolo.runtime.capture.Capture`: one ``poll`` per
source and one event wait per tick (microseconds; ``bench/stream_sources.py`` measures the
whole loop), and the age of each frame (capture to inference start) is reported as it is
processed (:attr:`StreamResult.age_ms`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

import numpy as np

from edgeyolo.errors import ConfigError, DataError
from edgeyolo.runtime.capture import (
    DEFAULT_RECONNECT,
    Capture,
    CapturedFrame,
    LoopStats,
    VideoSource,
    parse_source,
    print_status,
)
from edgeyolo.runtime.detector import Detector, FrameDetections
from edgeyolo.runtime.latency import AgeMeter

__all__ = ["Sources", "Stream", "StreamResult", "StopSignals", "stream"]

SourceSpec = str | int | Path | VideoSource
#: Seconds a tick waits for a frame before it looks again (stalls, a stop request).
POLL_S = 0.25


class BatchModel(Protocol):
    """What :class:`Stream` runs: a :class:`~edgeyolo.runtime.detector.Detector` (open)."""

    last_times: Mapping[str, float]

    @property
    def max_batch(self) -> int: ...

    def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]: ...


@dataclass(frozen=True)
class StreamResult:
    """One processed frame of one source.

    Attributes:
        source: the source's position in the list given.
        name: the source's short name (:func:`source_names`: ``clip.mp4``, ``camera0``,
            ``stream``); messages about the source use its full name (a URL with its password
            masked).
        frame: its capture sequence number in that source (gaps: frames dropped for newer ones;
            it goes on across a reconnection).
        image (uint8[H, W, 3]): the frame as captured, BGR.
        detections: its boxes in frame pixels, scores, class ids and names.
        captured: when it was captured, as ``time.time()`` (seconds since the epoch).
        age_ms: from its capture to the start of its inference (the wait for the model).
        batch: how many frames the inference call that produced it took.
        times: that call's ``pre`` / ``infer`` / ``post`` times in ms (for the whole batch).
        counter: the frame number the sender drew into it (:mod:`~edgeyolo.runtime.framecounter`),
            ``None`` without one.
    """

    source: int
    name: str
    frame: int
    image: np.ndarray
    detections: FrameDetections
    captured: float
    age_ms: float
    batch: int
    times: Mapping[str, float]
    counter: int | None = None


def source_names(captures: Sequence[Capture]) -> list[str]:
    """A short name per capture, unique: a file's name (``clip.mp4``), else its stem
    (``camera0``, ``stream``, ``gstreamer``); where two share one, each gets ``_N`` (its
    position) before the suffix (``stream_0``, ``stream_1``)."""
    names = [
        Path(str(c.source.target)).name if c.source.kind == "file" else c.source.stem
        for c in captures
    ]
    out = []
    for i, n in enumerate(names):
        if names.count(n) > 1:
            p = Path(n)
            n = f"{p.stem}_{i}{p.suffix}"
        out.append(n)
    return out


class Sources:
    """Several sources read at once: one :class:`Capture` each, a shared wake-up event, and
    :meth:`tick`, which takes the next frame of each source that has one.

    Args:
        sources: camera indices, files, URLs or GStreamer pipelines (see :func:`parse_source`).
        live, reconnect: as :class:`Capture`'s ``live`` and ``reconnect_s``, for every source.
        on_status: one line when a source is lost, back, or (while others go on) gone for good.
        stall_timeout: as :class:`Capture`'s.

    A source that gives up (not back within ``reconnect``) is named in one line and left out
    while others go on; when it was the last one, :meth:`tick` raises its error.
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        *,
        live: bool | None = None,
        reconnect: float | None = DEFAULT_RECONNECT,
        on_status: Callable[[str], None] | None = None,
        stall_timeout: float = 10.0,
    ) -> None:
        if not sources:
            raise ConfigError("no source given: name at least one camera, file, URL or pipeline")
        self.wakeup = threading.Event()
        self.on_status = on_status
        self.captures = [
            Capture(
                s if isinstance(s, VideoSource) else parse_source(s),
                live=live,
                reconnect_s=reconnect,
                on_status=on_status,
                stall_timeout=stall_timeout,
                wakeup=self.wakeup,
            )
            for s in sources
        ]
        self.names = source_names(self.captures)
        #: The error of each source that stopped for good while others went on.
        self.failed: dict[int, DataError] = {}
        self._next = 0  # the source the next tick asks first (turns when the batch is short)

    def open(self) -> Sources:
        """Open every source (a live one starts its thread); on a failure, close those opened."""
        try:
            for c in self.captures:
                c.open()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every capture thread and release every source. Idempotent."""
        for c in self.captures:
            c.close()

    def __enter__(self) -> Sources:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def active(self) -> list[int]:
        """Positions of the sources that have not ended or failed."""
        return [i for i, c in enumerate(self.captures) if not c.finished and i not in self.failed]

    def tick(
        self, limit: int, stop: threading.Event | None = None
    ) -> list[tuple[int, CapturedFrame]]:
        """The next frame of up to ``limit`` sources, waiting until at least one has one:
        ``(position, frame)`` pairs; ``[]`` once every source has ended (or ``stop`` is set).

        Raises:
            DataError: the last source still going failed (see :class:`Capture`).
        """
        while not (stop is not None and stop.is_set()):
            self.wakeup.clear()  # before polling: a frame put after this sets it again
            active = self.active
            if not active:
                return []
            first = next((k for k, i in enumerate(active) if i >= self._next), 0)
            got: list[tuple[int, CapturedFrame]] = []
            for i in active[first:] + active[:first]:
                if len(got) == limit:
                    break
                try:
                    frame = self.captures[i].poll()
                except DataError as e:
                    self._fail(i, e)
                    continue
                if frame is not None:
                    got.append((i, frame))
            if got:
                self._next = got[-1][0] + 1
                return got
            self.wakeup.wait(POLL_S)
        return []

    def _fail(self, i: int, error: DataError) -> None:
        self.failed[i] = error
        if not self.active:
            raise error
        line = (
            f"{self.captures[i].source.name} stopped: {error.reason}; "
            f"{len(self.active)} other source(s) go on"
        )
        (self.on_status or print_status)(line)


@dataclass
class SourceStats:
    """Per-source figures of a :class:`Stream`: frames processed and their timing, ages."""

    name: str
    loop: LoopStats = field(default_factory=LoopStats)
    ages: AgeMeter | None = None
    age_ms_sum: float = 0.0
    age_ms_max: float = 0.0

    def add(self, age_ms: float, times: Mapping[str, float]) -> None:
        self.loop.tick(times)
        self.age_ms_sum += age_ms
        self.age_ms_max = max(self.age_ms_max, age_ms)

    @property
    def mean_age_ms(self) -> float:
        return self.age_ms_sum / max(self.loop.frames, 1)


class Stream:
    """The frames of ``sources`` with their detections: a context manager and an iterator of
    :class:`StreamResult` (in processing order; a tick's frames by source position).

    Args:
        sources: see :class:`Sources`.
        model: an open :class:`~edgeyolo.runtime.detector.Detector` (or anything with its
            ``batch`` / ``max_batch`` / ``last_times``), or a model path, for which a Detector
            is opened (with ``detector_options``) and closed with the stream.
        live, reconnect, on_status: see :class:`Sources`.
        batch: frames per inference call: ``None`` = as many as the model takes (one call per
            tick); ``1``: one call per frame.
        max_frames: stop after this many frames in all (``None``: until every source ends, or
            :meth:`stop`).
        stop: an event that ends the stream after the current tick (e.g. set by
            :class:`StopSignals`).
        detector_options: passed to :class:`~edgeyolo.runtime.detector.Detector` when
            ``model`` is a path (``device``, ``conf_thres``, ``threads``, ...).
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        model: BatchModel | str | Path,
        *,
        live: bool | None = None,
        reconnect: float | None = DEFAULT_RECONNECT,
        on_status: Callable[[str], None] | None = None,
        batch: int | None = None,
        max_frames: int | None = None,
        stop: threading.Event | None = None,
        **detector_options: Any,
    ) -> None:
        if batch is not None and batch < 1:
            raise ConfigError(f"batch must be 1 or more, got {batch}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--frames must be 1 or more, got {max_frames}")
        self.sources = Sources(sources, live=live, reconnect=reconnect, on_status=on_status)
        self._own = not hasattr(model, "batch")
        self.model: BatchModel = (
            Detector(model, **detector_options) if self._own else model  # type: ignore[arg-type]
        )
        self.batch, self.max_frames = batch, max_frames
        self.stop_event = stop or threading.Event()
        self.frames = 0
        self.stats = [SourceStats(n) for n in self.sources.names]

    def open(self) -> Stream:
        """Open the model (when given as a path) and every source."""
        if self._own:
            self.model.open()  # type: ignore[attr-defined]
        try:
            self.sources.open()
        except BaseException:
            self.close()
            raise
        for st, cap in zip(self.stats, self.sources.captures, strict=True):
            st.ages = AgeMeter(cap.fps) if cap.live else None
        return self

    def close(self) -> None:
        """Close every source (and the model, when opened here). Idempotent."""
        self.sources.close()
        if self._own:
            self.model.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Stream:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stop(self) -> None:
        """End the stream after the frames of the current tick (thread- and signal-safe)."""
        self.stop_event.set()

    def __iter__(self) -> Iterator[StreamResult]:
        limit = self.model.max_batch
        step = min(self.batch or limit, limit)
        while not self.stop_event.is_set():
            room = limit if self.max_frames is None else min(limit, self.max_frames - self.frames)
            if room <= 0:
                return
            got = self.sources.tick(room, self.stop_event)
            if not got:
                return
            for k in range(0, len(got), step):
                yield from self._infer(got[k : k + step])

    def _infer(self, chunk: list[tuple[int, CapturedFrame]]) -> Iterator[StreamResult]:
        t0 = time.perf_counter()
        wall = time.time() - t0  # perf_counter -> epoch seconds
        counters = []
        for i, f in chunk:
            ages = self.stats[i].ages
            counters.append(None if ages is None else ages.add(f.image, t0))
        dets = self.model.batch([f.image for _, f in chunk])
        times = dict(self.model.last_times)
        per_frame = {k: v / len(chunk) for k, v in times.items()}
        for (i, f), d, counter in zip(chunk, dets, counters, strict=True):
            age_ms = (t0 - f.time) * 1e3
            result = StreamResult(
                source=i,
                name=self.sources.names[i],
                frame=f.seq,
                image=f.image,
                detections=d,
                captured=wall + f.time,
                age_ms=age_ms,
                batch=len(chunk),
                times=times,
                counter=counter,
            )
            given = time.perf_counter()
            yield result
            # counted once the caller is done with it (drawn, written): its time is in "post"
            app_ms = (time.perf_counter() - given) * 1e3
            self.stats[i].add(age_ms, {**per_frame, "post": per_frame.get("post", 0.0) + app_ms})
            self.frames += 1

    def summary_lines(self) -> list[str]:
        """One line per source (named when there are several): frames, FPS, per-frame stage
        times (``post`` includes what the caller did with the frame before asking for the next:
        drawing, writing), captured / dropped, reconnections, the age from capture to
        inference; and a line of counter ages (in frames) for a sender that draws them."""
        lines = []
        many = len(self.stats) > 1
        for st, cap in zip(self.stats, self.sources.captures, strict=True):
            live = {"captured": cap.captured, "dropped": cap.dropped} if cap.live else {}
            line = f"{st.name}: " if many else ""
            line += st.loop.summary(**live)
            if cap.live and st.loop.frames:
                line += f"; age at inference {st.mean_age_ms:.0f} ms mean, "
                line += f"{st.age_ms_max:.0f} ms max"
            if cap.reconnects:
                line += f"; {cap.reconnects} reconnection(s), {cap.offline_s:.1f} s offline"
            lines.append(line)
            if st.ages is not None and (ages := st.ages.line()):
                lines.append(f"{st.name}: {ages}" if many else ages)
        return lines


def stream(
    sources: SourceSpec | Sequence[SourceSpec],
    model: BatchModel | str | Path,
    **options: Any,
) -> Iterator[StreamResult]:
    """Detections on the frames of one or several sources, as they are processed.

    ``for r in edgeyolo.stream(["0", "rtsp://..."], "model.onnx"): ...``; breaking out of the
    loop (or closing the generator) stops every capture thread. ``options``: see
    :class:`Stream` (``live``, ``reconnect``, ``batch``, ``max_frames``, ``stop``, and the
    Detector's options when ``model`` is a path). Frames are BGR, boxes in frame pixels.
    """
    many = [sources] if isinstance(sources, str | int | Path | VideoSource) else list(sources)
    with Stream(many, model, **options) as s:
        yield from s


class StopSignals:
    """SIGINT and SIGTERM ask for a clean stop (``event`` set; the loop finishes its frame,
    flushes its outputs and reports) instead of killing; a second one raises
    ``KeyboardInterrupt`` at once. A SIGINT that was ignored when the process started (a
    background job) stays ignored. Only the main thread can install handlers: elsewhere this
    does nothing. The previous handlers come back on exit."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if sig == signal.SIGINT and old == signal.SIG_IGN:
                continue
            self._old[sig] = old
            signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
