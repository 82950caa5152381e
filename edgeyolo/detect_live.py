"""``detect`` on videos and live sources: :func:`edgeyolo.stream` over one or several sources,
and the outputs a camera app consumes.

For every processed frame: a record (``detections.json``), a JSON line streamed as it is done
(``--jsonl FILE`` or ``-`` for stdout), the annotated frame in ``OUT/<name>.mp4`` (one video per
source, playable however the run ends), on an RTSP server (``--serve rtsp://@:8554/detect``,
where GStreamer's Python bindings are present) and in a window (``--show``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from edgeyolo.errors import ConfigError, EdgeYoloError
from edgeyolo.lazy import CV2 as cv2
from edgeyolo.lazy import lazy_import
from edgeyolo.runtime.capture import DEFAULT_FPS, DEFAULT_RECONNECT, display_problem, draw_stats
from edgeyolo.runtime.detector import FrameDetections
from edgeyolo.runtime.stream import BatchModel, StopSignals, Stream, StreamResult
from edgeyolo.visualize import draw_detections

#: The RTSP server of ``--serve`` (GStreamer's ``gi``, itself imported when a server starts).
_RTSP_OUT = lazy_import("edgeyolo.runtime.rtsp_out")

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def make_out_dir(out: Path) -> None:
    """Create ``out`` (``--out``), or say in one line why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create this folder ({e})") from e


def write_detections(out: Path, results: list[dict[str, Any]]) -> None:
    """``out/detections.json``: every frame's record, or one line saying why it cannot be."""
    path = out / "detections.json"
    try:
        path.write_text(json.dumps(results, indent=1))
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e})") from e


def progress_bar(console: Console, show: bool) -> Progress:
    """detect's progress line: the frame count (of a known total), the name, FPS, time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]detect[/bold] {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} FPS"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=False,
    )


def frame_record(
    name: str,
    index: int | None,
    prediction: tuple[np.ndarray, np.ndarray, np.ndarray],
    names: Sequence[str],
) -> dict[str, Any]:
    boxes, scores, labels = prediction
    detections = [
        {
            "label": names[int(c)] if 0 <= int(c) < len(names) else str(int(c)),
            "bbox": [round(float(v), 2) for v in b],
            "score": round(float(s), 4),
        }
        for b, s, c in zip(boxes, scores, labels, strict=True)
    ]
    record: dict[str, Any] = {"image": name}
    if index is not None:
        record["frame"] = index
    record["detections"] = detections
    return record


def as_arrays(
    prediction: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = prediction
    return (
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(scores, dtype=np.float64).reshape(-1),
        np.asarray(labels).reshape(-1).astype(np.int64),
    )


class StageTimes(Protocol):
    """What reports a predictor's stage times: ``last_times`` holds the last call's ``pre``,
    ``infer`` and ``post`` in ms (:class:`edgeyolo.runtime.detector.Detector` does)."""

    last_times: Mapping[str, float]


def warn(console: Console, text: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


class Window:
    """The ``show`` window of :func:`run_detect`, or a warning saying why there is none."""

    TITLE = "edgeyolo detect"

    def __init__(self, show: bool, out: Path | None, console: Console) -> None:
        self.enabled = False
        problem = display_problem() if show else None
        if problem is not None:
            where = f"the annotated output goes to {out} only" if out else "nothing is shown"
            warn(console, f"no window: {problem}; {where}")
        self.enabled = show and problem is None

    def show(self, image: np.ndarray, title: str = TITLE) -> bool:
        """Show ``image`` (BGR) in the window ``title``; ``False`` when q or Esc was pressed."""
        if not self.enabled:
            return True
        cv2.imshow(title, image)
        return (cv2.waitKey(1) & 0xFF) not in (27, ord("q"))

    def close(self) -> None:
        if self.enabled:
            cv2.destroyAllWindows()


def open_writer(path: Path, fps: float, first: np.ndarray) -> cv2.VideoWriter:
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise EdgeYoloError(f"{path}: cannot open a video writer (mp4v, {w}x{h} at {fps} fps)")
    return writer


class PerFrame:
    """A one-frame RGB predictor (``detect``'s :data:`~edgeyolo.detect.Predictor`) as a
    :class:`~edgeyolo.runtime.stream.BatchModel`: one call per frame."""

    max_batch = 1

    def __init__(
        self, predict: Predictor, names: Sequence[str], stages: StageTimes | None = None
    ) -> None:
        self.predict, self.names, self.stages = predict, names, stages
        self.last_times: Mapping[str, float] = {}

    def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]:
        out = []
        for frame in frames:
            t0 = time.perf_counter()
            boxes, scores, ids = as_arrays(self.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            t1 = time.perf_counter()
            labels = tuple(self.names[i] if 0 <= i < len(self.names) else str(int(i)) for i in ids)
            out.append(FrameDetections(boxes, scores, ids, labels))
            timed = self.stages.last_times if self.stages is not None else None
            self.last_times = dict(timed) if timed else {"infer": (t1 - t0) * 1e3}
        return out


def json_line(r: StreamResult, names: Sequence[str]) -> dict[str, Any]:
    """The JSON Lines record of one processed frame: source (name and position), frame number,
    capture time (seconds since the epoch), age at inference (ms), the inference call's batch and
    stage times (ms), the sender's counter where drawn, and the boxes with class names."""
    d = r.detections
    record: dict[str, Any] = {
        "source": r.name,
        "index": r.source,
        "frame": r.frame,
        "captured": round(r.captured, 4),
        "age_ms": round(r.age_ms, 2),
        "batch": r.batch,
        "times_ms": {k: round(v, 3) for k, v in r.times.items()},
    }
    if r.counter is not None:
        record["counter"] = r.counter
    record["detections"] = [
        {
            "label": label,
            "class_id": int(c),
            "score": round(float(s), 4),
            "bbox": [round(float(v), 2) for v in b],
        }
        for b, s, c, label in zip(d.boxes, d.scores, d.class_ids, d.labels, strict=True)
    ]
    return record


class JsonLines:
    """One JSON object per line, flushed as written: to a file or (``-``) to stdout."""

    def __init__(self, target: str | Path) -> None:
        self.name = str(target)
        self._file: IO[str]
        if self.name == "-":
            self._file, self._own = sys.stdout, False
            return
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._file, self._own = open(target, "w", encoding="utf-8"), True  # noqa: SIM115
        except OSError as e:
            raise ConfigError(f"--jsonl {target}: cannot write ({e})") from e

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._own and not self._file.closed:
            self._file.close()


class Outputs:
    """Where each annotated frame of a stream goes: one video per source in ``out``, the RTSP
    server's mounts, the windows. Every one is closed (a video finalised) by :meth:`close`."""

    def __init__(
        self,
        stream: Stream,
        out: Path | None,
        serve: str | None,
        window: Window,
        console: Console,
    ) -> None:
        self.stream, self.out, self.window, self.console = stream, out, window, console
        self.writers: dict[int, Any] = {}
        self.server: Any = None
        self.mounts: dict[int, Any] = {}
        if serve is not None:
            host, port, self.path = _RTSP_OUT.parse_rtsp_output(serve)
            self.server = _RTSP_OUT.RtspServer(host, port)

    @property
    def drawing(self) -> bool:
        return self.out is not None or self.server is not None or self.window.enabled

    def fps(self, i: int) -> float:
        return self.stream.sources.captures[i].fps or DEFAULT_FPS

    def write(self, r: StreamResult, drawn: np.ndarray) -> bool:
        """Send one drawn (BGR) frame everywhere; ``False`` when a window asked to stop."""
        if self.out is not None:
            if r.source not in self.writers:
                path = self.out / f"{Path(r.name).stem}.mp4"
                self.writers[r.source] = open_writer(path, self.fps(r.source), drawn)
            self.writers[r.source].write(drawn)
        if self.server is not None:
            if r.source not in self.mounts:
                many = len(self.stream.stats) > 1
                path = f"{self.path.rstrip('/')}/{r.source}" if many else self.path
                h, w = drawn.shape[:2]
                self.mounts[r.source] = self.server.add_stream(path, w, h, self.fps(r.source))
                url = self.server.url(path)
                self.console.print(f"serving {r.name} at {escape(url)}", soft_wrap=True)
            self.mounts[r.source].write(drawn)
        title = f"{Window.TITLE}: {r.name}" if len(self.stream.stats) > 1 else Window.TITLE
        return self.window.show(drawn, title)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
        self.window.close()


def run_streams(
    sources: Sequence[str | Path],
    model: BatchModel,
    names: Sequence[str],
    *,
    out: Path | None,
    save_json: bool = False,
    jsonl: str | Path | None = None,
    serve: str | None = None,
    show_progress: bool = True,
    console: Console,
    live: bool | None = None,
    show: bool = False,
    max_frames: int | None = None,
    reconnect: float | None = DEFAULT_RECONNECT,
    batch: int | None = None,
    stop: StopSignals | None = None,
) -> list[dict[str, Any]]:
    """:func:`edgeyolo.detect.run_detect` for videos and live sources (one or several), over
    :class:`~edgeyolo.runtime.stream.Stream`.

    Args:
        live: ``None``: live sources keep only the newest frame, a file is read in order;
            ``True``: a file is read live too, paced at its FPS; ``False``: every frame.
        reconnect: seconds a live source that stops sending (or stalls) is reopened, with
            backoff, before it gives up (a :class:`DataError` when it was the last source);
            ``0``: never give up, ``None``: stop at once. Frame numbers go on across the gap;
            one line on ``console`` says when it is lost and one when it is back.
        model: what runs the frames: a :class:`~edgeyolo.runtime.detector.Detector` (one call
            per tick over the newest frame of every source, up to its ``max_batch``), or
            :class:`PerFrame` over a one-frame predictor.
        batch: frames per call (``None``: the model's ``max_batch``; ``1``: one per frame).
        jsonl: stream one JSON line per processed frame (:func:`json_line`) to this file
            (``-``: stdout), flushed line by line.
        serve: re-serve the annotated frames over RTSP (``rtsp://@:8554/detect``; several
            sources on ``/detect/0``, ``/detect/1``...); needs GStreamer's Python bindings.
        stop: SIGINT / SIGTERM handlers (:class:`~edgeyolo.runtime.stream.StopSignals`): a
            signal ends the run after the current frame, every output flushed (the videos
            finalised), and the summary printed.
        The rest: as :func:`~edgeyolo.detect.run_detect`'s.
    """

    def status(line: str) -> None:  # a live source lost or back: one line
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)

    stream = Stream(
        [str(s) for s in sources],
        model,
        live=live,
        reconnect=reconnect,
        on_status=status,
        batch=batch,
        max_frames=max_frames,
        stop=None if stop is None else stop.event,
    )
    results: list[dict[str, Any]] = []
    with stream:
        if out is not None:
            make_out_dir(out)
        outputs = Outputs(stream, out, serve, Window(show, out, console), console)
        lines = JsonLines(jsonl) if jsonl is not None else None
        _loop(stream, names, outputs, lines, results, show_progress, console)
        _report(stream, stop, max_frames, show_progress, console)
    if save_json and out is not None:
        write_detections(out, results)
    return results


def _loop(
    stream: Stream,
    names: Sequence[str],
    outputs: Outputs,
    lines: JsonLines | None,
    results: list[dict[str, Any]],
    show_progress: bool,
    console: Console,
) -> None:
    """Process every result of ``stream`` (Ctrl+C ends it with what was done)."""
    caps = stream.sources.captures
    total = caps[0].total if len(caps) == 1 and not caps[0].live else None
    progress = progress_bar(console, show_progress)
    many = len(caps) > 1
    try:
        with progress:
            task = progress.add_task("detect", total=total, name="", fps=0.0)
            for r in stream:
                pred = (r.detections.boxes, r.detections.scores, r.detections.class_ids)
                record = frame_record(r.name, r.frame, pred, names)
                if many:
                    record = {"source": r.source, **record}
                keep = True
                if outputs.drawing:
                    drawn = draw_detections(r.image, *pred, names, bgr=True)
                    draw_stats(drawn, stream.stats[r.source].loop.text())
                    keep = outputs.write(r, drawn)
                if lines is not None:
                    lines.write(json_line(r, names))
                results.append(record)  # once written: Ctrl+C leaves every output agreeing
                fps = sum(s.loop.fps for s in stream.stats)
                progress.update(task, advance=1, name=r.name, fps=fps)
                if not keep:
                    progress.console.print(f"stopped at the window after {len(results)} frames")
                    break
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted after {len(results)} frames[/yellow]")
    finally:
        outputs.close()
        if lines is not None:
            lines.close()


def _report(
    stream: Stream,
    stop: StopSignals | None,
    max_frames: int | None,
    show_progress: bool,
    console: Console,
) -> None:
    """Why the run ended, short reads, and the timing summary."""
    if stop is not None and stop.received:
        console.print(
            f"[yellow]stopped by {stop.received} after {stream.frames} frames[/yellow]",
            soft_wrap=True,
        )
    elif max_frames is not None and stream.frames >= max_frames:
        console.print(f"stopped after {max_frames} frames (--frames)")
    for cap in stream.sources.captures:
        if cap.finished and cap.total is not None and 0 < cap.captured < cap.total:
            warn(
                console,
                f"{cap.source.target}: the video ended after {cap.captured} of the {cap.total} "
                "frames its header announces (damaged or truncated file?)",
            )
    lines = stream.summary_lines()
    if not stream.frames:
        return
    if len(stream.stats) == 1:
        if show_progress:
            console.print(f"timing: {lines[0]}", highlight=False, soft_wrap=True)
        for line in lines[1:]:
            console.print(line, highlight=False, soft_wrap=True)
        return
    if show_progress:
        console.print("timing:", highlight=False)
    for line in lines:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
