"""How old, in frames, the frame a model starts on is: from a frame counter drawn by the sender.

A sender that draws its frame number into every frame (:mod:`edgeyolo.runtime.framecounter`,
e.g. ``scripts/rtsp_server.py --counter``) at a steady ``fps`` lets the receiver measure the age
of each frame it processes, with its own clock only.

**Age at inference.** For processed frame *i* with sender index ``s_i``, whose inference starts
at receiver time ``t_i`` (seconds, any monotonic clock)::

    lag_i = fps * t_i - s_i            # the receiver's clock, in frames, minus the sender's
    age_i = lag_i - min_j lag_j        # j over the run's processed frames (its segment)

``fps * (t_i - t_j) - (s_i - s_j)`` is how many more frame periods frame *i* spent between the
sender's clock and the model than frame *j* did; subtracting the smallest ``lag`` makes the age
0 for the frame that reached the model fastest in the run. No clock is shared between sender and
receiver: the age is on top of the pipeline's fixed delay (encoder, network, decoder), which a
queue does not change; a queue anywhere on the way (the sender, the socket, FFmpeg's or
GStreamer's buffers, the receiver's own) adds to it. The first ``warmup_s`` seconds (the decoder
waiting for a key frame, the stream starting) count for the ``min`` but not for the statistics.
An index that does not move forward (the sender restarted, its counter from 0) starts a new
segment with its own ``min`` and warm-up; a receiver that reconnects to the same sender keeps
counting in the same one (a frame that comes late after the reconnection is late).

Why not ``newest received index - processed index``: with the newest-frame buffer of
:class:`~edgeyolo.runtime.capture.Capture` that is 0 by construction when a frame is taken, and
a reader that takes every frame has no "newest" other than the one it reads; both are blind to
a queue upstream of the capture thread, which is where an every-frame reader's queue builds.

**What the model's latency explains.** With newest-frame capture the model, when it becomes
free after ``k`` frame periods, takes the frame that arrived last: at most one period ago,
whatever ``k`` is. The age at inference start is then 0..1 frame (uniform phase; the median
about 0.5), plus jitter; the age of the result when it is ready is ``k`` more. A queue shows as
an age that grows: a reader of every frame with a model ``k`` periods slow falls ``k - 1``
frames further behind per frame processed, ``60 * fps * (k - 1) / k`` frames per minute.

**Trend.** The least-squares slope of age against inference-start time, in frames per minute;
its ``rise`` over the run (slope times duration) is the growth the fit explains. A bounded age
can still fit a slope (a sweep from 0 to 1 frame as the model's phase drifts against the
frames fits a rise of up to 1 frame), so "no upward trend" means a rise well under 2 frames over
the run, whatever its length.

Everything here is numpy only; :class:`AgeMeter` is what a frame loop feeds, and
:func:`age_summary_line` is its one-line report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeyolo.runtime.framecounter import BITS, decode_counter

__all__ = [
    "WARMUP_S",
    "AgeMeter",
    "AgeSummary",
    "age_summary_line",
    "ages_in_frames",
    "estimate_fps",
    "segments",
    "summarize_ages",
    "trend_per_minute",
    "unwrap_indices",
]

#: Seconds from the first processed frame that the statistics leave out (stream start-up).
WARMUP_S = 2.0
#: A run reports ages only when at least this share of its processed frames carry a counter:
#: a camera's own picture never decodes as one, and one stray read must not make a report.
MIN_READABLE = 0.5


@dataclass(frozen=True)
class AgeSummary:
    """Ages at inference start of one run, in frames (see the module docstring).

    Attributes:
        frames: processed frames in the statistics (readable counter, after the warm-up).
        unreadable: processed frames whose counter could not be read (damaged, or none).
        median, p99, max: of the ages, frames.
        trend: least-squares slope of age against time, frames per minute.
        seconds: time from the first to the last frame in the statistics.
        fps: the sender's frame rate the ages are counted in.
        fps_estimated: ``fps`` came from the counters themselves (the source gave none): a
            queue that grows at a steady rate then looks like a slower sender, not a trend.
        warmup_s: seconds left out at the start.
    """

    frames: int
    unreadable: int
    median: float
    p99: float
    max: float
    trend: float
    seconds: float
    fps: float
    fps_estimated: bool = False
    warmup_s: float = WARMUP_S

    @property
    def rise(self) -> float:
        """Frames the fitted trend rises by over the run (``trend * seconds / 60``)."""
        return self.trend * self.seconds / 60.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``rise`` included)."""
        return {**asdict(self), "rise": self.rise}


def unwrap_indices(indices: Sequence[int] | np.ndarray, bits: int = BITS) -> np.ndarray:
    """Sender indices (``int64``) with the counter's wrap at ``2**bits`` undone: a step down by
    more than half the range counts as a wrap, in order of processing."""
    s = np.asarray(indices, dtype=np.int64)
    if s.size < 2:
        return s.copy()
    span = np.int64(1) << bits
    steps = np.diff(s)
    wraps = np.cumsum((steps < -(span // 2)).astype(np.int64) - (steps > span // 2))
    return s + np.concatenate([[0], wraps]) * span


def ages_in_frames(
    indices: Sequence[int] | np.ndarray, times: Sequence[float] | np.ndarray, fps: float
) -> np.ndarray:
    """The age of each processed frame at inference start, frames (``float64``; the smallest is
    0): ``fps * t_i - s_i`` less its minimum over the run (over each of its :func:`segments`).

    Args:
        indices: the sender index of each processed frame, in order of processing.
        times: when each one's inference started, seconds (one monotonic clock).
        fps: the sender's frame rate.

    Raises:
        ValueError: lengths differ, or ``fps`` is not positive.
    """
    s = unwrap_indices(indices)
    t = np.asarray(times, dtype=np.float64)
    if s.shape != t.shape:
        raise ValueError(f"{s.size} indices but {t.size} times")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if s.size == 0:
        return np.zeros(0)
    lag = fps * (t - t[0]) - (s - s[0]).astype(np.float64)
    seg = segments(s)
    lowest = np.full(int(seg[-1]) + 1, np.inf)
    np.minimum.at(lowest, seg, lag)
    return lag - lowest[seg]


def segments(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The segment of each processed frame (0, 1, ...): a new one starts wherever the
    (unwrapped) index does not move forward, i.e. the sender restarted its counter."""
    s = unwrap_indices(indices)
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(np.diff(s) <= 0)]).astype(np.int64)


def trend_per_minute(ages: np.ndarray, times: np.ndarray) -> float:
    """Least-squares slope of ``ages`` against ``times`` (seconds), frames per minute; 0 for
    fewer than two distinct times."""
    t = np.asarray(times, dtype=np.float64)
    a = np.asarray(ages, dtype=np.float64)
    if t.size < 2 or np.ptp(t) <= 0:
        return 0.0
    tc = t - t.mean()
    return float(np.dot(tc, a - a.mean()) / np.dot(tc, tc) * 60.0)


def estimate_fps(indices: Sequence[int] | np.ndarray, times: Sequence[float] | np.ndarray) -> float:
    """The sender's rate from the counters of newest-frame capture: the index span over the
    time span. Only for a reader that keeps up (see :attr:`AgeSummary.fps_estimated`).

    Raises:
        ValueError: fewer than two frames, or no time or index between them.
    """
    s = unwrap_indices(indices)
    t = np.asarray(times, dtype=np.float64)
    if s.size < 2 or t[-1] <= t[0] or s[-1] <= s[0]:
        raise ValueError("the frame rate needs two frames with time and index between them")
    return float((s[-1] - s[0]) / (t[-1] - t[0]))


def summarize_ages(
    indices: Sequence[int] | np.ndarray,
    times: Sequence[float] | np.ndarray,
    fps: float | None,
    *,
    warmup_s: float = WARMUP_S,
    unreadable: int = 0,
) -> AgeSummary | None:
    """Median, p99, max and trend of the ages (:func:`ages_in_frames`) of the frames processed
    ``warmup_s`` s or more after the first; ``None`` with fewer than two such frames.

    Args:
        indices, times: as for :func:`ages_in_frames` (frames with a readable counter only).
        fps: the sender's frame rate; ``None`` estimates it from the counters
            (:func:`estimate_fps`), right only for a reader that keeps up.
        unreadable: processed frames without a readable counter, carried into the summary.
    """
    s = unwrap_indices(indices)
    t = np.asarray(times, dtype=np.float64)
    if t.size < 2:
        return None
    seg = segments(s)
    starts = t[np.searchsorted(seg, seg)]  # when each frame's segment began
    keep = t - starts >= warmup_s
    if int(keep.sum()) < 2:
        return None
    rate = fps if fps is not None and fps > 0 else None
    if rate is None:
        main = keep & (seg == np.bincount(seg[keep]).argmax())  # the longest segment
        try:  # from the frames after the warm-up: the first ones may be stale
            rate = estimate_fps(s[main], t[main])
        except ValueError:
            return None
    ages = ages_in_frames(s, t, rate)
    a, tk = ages[keep], t[keep]
    return AgeSummary(
        frames=int(a.size),
        unreadable=int(unreadable),
        median=float(np.median(a)),
        p99=float(np.percentile(a, 99)),
        max=float(a.max()),
        trend=trend_per_minute(a, tk),
        seconds=float(tk[-1] - tk[0]),
        fps=float(rate),
        fps_estimated=fps is None or not fps > 0,
        warmup_s=warmup_s,
    )


def age_summary_line(summary: AgeSummary | None) -> str:
    """One line for a run's final summary, e.g. ``frame age at inference: median 0.5, p99 1.1,
    max 1.6 frames; trend +0.02 frames/min (+0.0 over 0.5 min); 290 frames at 30 fps``;
    ``""`` for ``None``."""
    if summary is None:
        return ""
    s = summary
    rate = f"{s.fps:.3g} fps" + (" (estimated from the counter)" if s.fps_estimated else "")
    bad = f", {s.unreadable} without a readable counter" if s.unreadable else ""
    return (
        f"frame age at inference: median {s.median:.1f}, p99 {s.p99:.1f}, max {s.max:.1f} "
        f"frames; trend {s.trend:+.2f} frames/min ({s.rise:+.1f} over {s.seconds / 60:.1f} min); "
        f"{s.frames} frames at {rate}{bad}"
    )


class AgeMeter:
    """Collects the counter of each processed frame for :func:`summarize_ages`.

    Feed it every frame a loop processes, just before inference (:meth:`add`); at the end,
    :meth:`line` is the report, ``""`` when the source draws no counter (a real camera).

    Args:
        fps: the sender's frame rate (e.g. ``Capture.fps``); ``None``: estimated.
        warmup_s: see :func:`summarize_ages`.
        clock: seconds, monotonic (default ``time.perf_counter``).
    """

    def __init__(
        self,
        fps: float | None = None,
        *,
        warmup_s: float = WARMUP_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.fps, self.warmup_s, self.clock = fps, warmup_s, clock
        self.indices: list[int] = []
        self.times: list[float] = []
        self.unreadable = 0

    def add(self, image: np.ndarray, when: float | None = None) -> int | None:
        """Read the counter of ``image`` (any channel order), the frame whose inference starts
        at ``when`` (default: now); returns the index, ``None`` when it has none."""
        t = self.clock() if when is None else when
        index = decode_counter(image)
        if index is None:
            self.unreadable += 1
        else:
            self.indices.append(index)
            self.times.append(t)
        return index

    @property
    def has_counter(self) -> bool:
        """Whether at least :data:`MIN_READABLE` of the frames (and two) carried a counter."""
        n = len(self.indices)
        return n >= 2 and n >= MIN_READABLE * (n + self.unreadable)

    def summary(self) -> AgeSummary | None:
        """The run's :class:`AgeSummary`; ``None`` without a counter (or too few frames)."""
        if not self.has_counter:
            return None
        return summarize_ages(
            self.indices,
            self.times,
            self.fps,
            warmup_s=self.warmup_s,
            unreadable=self.unreadable,
        )

    def line(self) -> str:
        """:func:`age_summary_line` of :meth:`summary` (``""``: nothing to report)."""
        return age_summary_line(self.summary())
