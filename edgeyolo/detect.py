"""Run a predictor over an image, a folder of images, a video, a camera, a URL or a GStreamer
pipeline, and write the results.

A predictor is any callable ``predict(image uint8[H, W, 3] RGB) -> (boxes float[K, 4] xyxy in
frame pixels, scores float[K], labels int[K])``; the PyTorch, ONNX Runtime and TensorRT backends
all fit it (:meth:`edgeyolo.runtime.detector.Detector.predict_rgb`). Images are run here; videos
and live sources (one or several) by :mod:`edgeyolo.detect_live`, over :func:`edgeyolo.stream`,
whose :class:`~edgeyolo.runtime.capture.Capture` keeps only the newest frame of a live source.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console

from edgeyolo import detect_live as _LIVE
from edgeyolo.console import make_console
from edgeyolo.data.records import IMAGE_SUFFIXES, Problem, describe_problems
from edgeyolo.detect_live import (
    Predictor,
    StageTimes,
    Window,
    as_arrays,
    frame_record,
    make_out_dir,
    progress_bar,
    warn,
    write_detections,
)
from edgeyolo.errors import ConfigError, DataError
from edgeyolo.lazy import CV2 as cv2
from edgeyolo.runtime.capture import (
    DEFAULT_RECONNECT,
    Capture,
    LoopStats,
    VideoSource,
    parse_source,
)
from edgeyolo.visualize import draw_detections

if TYPE_CHECKING:
    from edgeyolo.runtime.stream import BatchModel, StopSignals


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})
#: Pillow modes with more than 8 bits per sample: decoded by OpenCV, which scales them to 8 bits
#: (Pillow's conversion to RGB would clip them).
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})

Frame = tuple[str, np.ndarray, int | None]
"""``(name, uint8[H, W, 3] RGB, frame index or None for still images)``."""


def _identify(path: Path) -> str | None:
    """Why ``path`` is not an image, from its header alone (cheap), or ``None`` if it looks
    like one. Damage further in (a truncated JPEG) shows when it is decoded."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 (the header is parsed by open; size proves it)
    except FileNotFoundError:
        return "image not found"
    except UnidentifiedImageError:
        if path.stat().st_size == 0:
            return "cannot read image: the file is empty"
        return "cannot read image: not an image file (no image format matches its first bytes)"
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot read image: {' '.join(str(e).split()) or type(e).__name__}"
    return None


def _read_image(path: Path) -> np.ndarray:
    """Decode ``path`` as ``uint8[H, W, 3]`` RGB, upright by its EXIF orientation.

    Pillow decodes fully and, with ``ImageFile.LOAD_TRUNCATED_IMAGES`` off (its default), raises
    on a truncated file, where OpenCV's imread prints libjpeg's "Premature end of JPEG file" on
    stderr and returns the image with its missing rows grey. It is also how the training and
    evaluation data are read (:func:`edgeyolo.data.dataset.read_rgb`).

    Raises:
        DataError: naming the file and Pillow's reason (e.g. "image file is truncated").
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _WIDE_MODES:
                wide = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
                if wide is None:
                    raise OSError(f"OpenCV cannot decode this {im.mode} image")
                return cv2.cvtColor(wide, cv2.COLOR_BGR2RGB)
            upright = ImageOps.exif_transpose(im)
            return np.array(upright.convert("RGB"))  # writable, unlike np.asarray's view
    except FileNotFoundError as e:
        raise DataError("image not found (removed while running?)", file=path) from e
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image: {e}", file=path) from e
    except (OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read image: {reason}", file=path) from e


@dataclass
class _Source:
    """The image files ``source`` names, found before any is decoded."""

    files: list[Path]
    #: Images found unreadable before decoding (by :meth:`scan`), by path.
    bad: dict[Path, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.files)

    def scan(self) -> list[Problem]:
        """Find the image files that are not images at all (header only); see :func:`_identify`."""
        for path in self.files:
            reason = _identify(path)
            if reason is not None:
                self.bad[path] = reason
        return [Problem(str(p), None, r) for p, r in self.bad.items()]

    def items(self, *, skip_bad: bool) -> Iterator[Frame | Problem]:
        """Frames in order; with ``skip_bad``, a :class:`Problem` in place of each bad image."""
        for path in self.files:
            try:
                if path in self.bad:
                    raise DataError(self.bad[path], file=path)
                yield path.name, _read_image(path), None
            except DataError as e:
                if not skip_bad:
                    raise DataError(f"{e.reason}; {_FIX}", file=path) from e
                yield Problem(str(path), None, e.reason)


_FIX = "remove or replace it, or pass --skip-bad to skip damaged images"


SourceKind = Literal["images", "video", "stream"]


def classify(source: str | Path) -> tuple[SourceKind, list[Path]]:
    """What ``source`` is, without opening it: image files (found, sorted), a video file, or a
    live source (a camera index, a URL or a GStreamer pipeline); with the image files.

    Raises:
        DataError: a missing path, a folder without images, an unsupported file type.
    """
    # os.path.exists: no OSError for long pipelines; a camera index, a URL or a pipeline is live
    if isinstance(source, str) and not os.path.exists(source) and parse_source(source).live:
        return "stream", []
    path = Path(source)
    if not path.exists():
        raise DataError("no such file or directory", file=path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder (subfolders are "
                "not searched); give the folder that holds the images, a video or a camera index",
                file=path,
            )
        return "images", files
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "images", [path]
    if suffix in VIDEO_SUFFIXES:
        return "video", [path]
    raise DataError(
        f"unsupported file type {suffix or '(none)'}; expected an image "
        f"({', '.join(sorted(IMAGE_SUFFIXES))}), a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
        "a camera index, a URL or a GStreamer pipeline",
        file=path,
    )


def iter_sources(source: str | Path, *, live: bool | None = None) -> Iterator[Frame]:
    """Frames of ``source``: an image file, a folder of images, a video file, a camera, a URL
    or a GStreamer pipeline.

    Args:
        source: a path; a camera index as a digit string (``"0"``); an ``rtsp://``,
            ``http(s)://`` (or other FFmpeg) URL; or a GStreamer pipeline ending in ``appsink``
            (see :data:`edgeyolo.runtime.capture.CSI_PIPELINE`). A folder yields its image
            files (not recursive), sorted by name.
        live: how a video or stream is read (see :class:`~edgeyolo.runtime.capture.Capture`):
            ``None`` keeps only the newest frame of a live source (a capture thread; a slow
            consumer skips frames) and reads a file's every frame in order; ``True`` reads a
            file live too, paced at its FPS; ``False`` reads every frame of anything in order.

    Yields:
        ``(name, frame uint8[H, W, 3] RGB, index)``: ``name`` is the file name (``camera<N>``,
        ``stream`` or ``gstreamer`` for live sources), ``index`` the frame's capture sequence
        number in a video or stream (gaps are dropped frames), ``None`` for images.

    Raises:
        DataError: the path is missing, is of an unsupported type, a folder holds no image, a
            video, camera, URL or pipeline cannot be opened (raised by this call), an image
            cannot be decoded (e.g. a truncated JPEG), a video gives no frame, or a live
            source ends or stalls (raised when it is reached).
        MissingDependencyError: a GStreamer pipeline with an OpenCV built without GStreamer.
    """
    kind, files = classify(source)
    if kind == "images":
        return _frames(_Source(files))
    spec = VideoSource("file", str(source), str(source)) if kind == "video" else source
    cap = Capture(spec, live=live).open()  # raises now when it cannot be opened
    name = Path(source).name if kind == "video" else cap.source.stem
    return _captured(cap, name)


def _frames(src: _Source) -> Iterator[Frame]:
    for item in src.items(skip_bad=False):
        if not isinstance(item, Problem):  # skip_bad=False raises instead of giving one
            yield item


def _captured(cap: Capture, name: str) -> Iterator[Frame]:
    with cap:
        for f in cap:
            yield name, cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB), f.seq


def run_detect(
    source: str | Path | Sequence[str | Path],
    predict: Predictor,
    names: Sequence[str],
    *,
    out: str | Path | None,
    save_json: bool = False,
    show_progress: bool = True,
    skip_bad: bool = False,
    console: Console | None = None,
    live: bool | None = None,
    show: bool = False,
    stages: StageTimes | None = None,
    max_frames: int | None = None,
    reconnect: float | None = DEFAULT_RECONNECT,
    model: BatchModel | None = None,
    batch: int | None = None,
    jsonl: str | Path | None = None,
    serve: str | None = None,
    stop: StopSignals | None = None,
) -> list[dict[str, Any]]:
    """Run ``predict`` on every frame of ``source``, draw and save the results.

    Args:
        source: see :func:`iter_sources`; or several videos / live sources (not images), read
            at once, each in its own capture thread (:func:`edgeyolo.stream`).
        predict: the predictor (RGB frame in, ``(boxes xyxy, scores, labels)`` in frame pixels out).
        names: class names, used for captions and the ``label`` field.
        out: output folder (created); annotated images go to ``out/<stem>.jpg``, a video or
            stream to ``out/<name>.mp4`` (one per source; mp4v, at the source fps; with FPS and
            stage times written on each frame; a live run holds only the frames processed, so it
            plays faster than real time when frames were dropped). ``None`` writes nothing.
        save_json: also write the returned list to ``out/detections.json``.
        show_progress: show a rich progress line with the frame count and FPS, and a timing
            summary at the end (FPS; mean pre / infer / post ms; frames captured and dropped).
        skip_bad: skip images that cannot be read (not an image, truncated, damaged) instead of
            stopping; each is named in a warning and has a record in the result.
        console: where the progress line and warnings go (default: a new rich Console).
        show: also show each annotated frame in a window (q or Esc stops); with no window
            possible (no display, opencv-python-headless) a warning says so, and the run goes on.
        stages: where ``predict``'s ``pre`` / ``infer`` / ``post`` times come from (a
            :class:`~edgeyolo.runtime.detector.Detector`); else its call is ``infer``.
        max_frames: stop after this many frames (``None``: to the end, or Ctrl+C).
        live, reconnect, model, batch, jsonl, serve, stop: for videos and live sources; see
            :func:`edgeyolo.detect_live.run_streams`.

    Returns:
        One record per frame: ``{"image": name, "detections": [{"label": name, "bbox": [x1, y1,
        x2, y2] (2 decimals), "score": (4 decimals)}, ...]}``, with ``"frame": index`` added for
        video and stream frames (their capture sequence numbers) and ``"source": position``
        first when there are several sources; a skipped image has ``{"image": name,
        "skipped": reason}`` instead, in its place. Ctrl+C (``KeyboardInterrupt``), a signal
        caught by ``stop``, or q / Esc in the window, ends the run early: the capture and
        writer are released and the frames done so far are saved and returned.

    Raises:
        DataError: see :func:`iter_sources`; without ``skip_bad``, files that are not images
            are all named before any frame is processed, and an image that fails to decode
            (truncated) stops the run at that image (``detections.json`` is then not written).
            With ``skip_bad``, when no image at all can be read.
        MissingDependencyError: a GStreamer pipeline with an OpenCV built without GStreamer;
            ``serve`` without GStreamer's Python bindings.
        ConfigError: ``save_json`` without ``out``, or ``out`` cannot be written; images among
            several sources; ``jsonl`` or ``serve`` for images.
        EdgeYoloError: the output video cannot be written.
    """
    if save_json and out is None:
        raise ConfigError("save_json needs an output folder (out)")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--frames must be 1 or more, got {max_frames}")
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise ConfigError("no source given: name an image, a folder, a video, a camera or a URL")
    kinds = [classify(s) for s in sources]
    console = console or make_console()
    out_path = None if out is None else Path(out)
    if kinds[0][0] != "images" or len(sources) > 1:
        _no_images_among(sources, [k for k, _ in kinds])
        return _LIVE.run_streams(
            sources,
            model or _LIVE.PerFrame(predict, names, stages),
            names,
            out=out_path,
            save_json=save_json,
            jsonl=jsonl,
            serve=serve,
            show_progress=show_progress,
            console=console,
            live=live,
            show=show,
            max_frames=max_frames,
            reconnect=reconnect,
            batch=batch,
            stop=stop,
        )
    if jsonl is not None or serve is not None:
        raise ConfigError("--jsonl and --serve are for videos and live sources, not images")
    src = _Source(kinds[0][1])
    _check_images(src, sources[0], skip_bad=skip_bad, console=console)
    loop = _Loop(src, predict, names, _Sink(out_path), Window(show, out_path, console), stages)
    return _run(loop, save_json, show_progress, skip_bad, console, max_frames, stop)


def _no_images_among(sources: Sequence[str | Path], kinds: Sequence[SourceKind]) -> None:
    for s, kind in zip(sources, kinds, strict=True):
        if kind == "images":
            raise ConfigError(
                f"{s} is images: several sources must each be a video, a camera, a URL or a "
                "pipeline; run the images on their own"
            )


def _check_images(src: _Source, source: str | Path, *, skip_bad: bool, console: Console) -> None:
    """Name the files of ``src`` that are not images: an error, or (``skip_bad``) a warning."""
    problems = src.scan()
    if not problems:
        return
    if not skip_bad:
        if len(problems) == 1:
            raise DataError(f"{problems[0].reason}; {_FIX}", file=problems[0].file)
        listed = "; ".join(f"{p.file}: {p.reason}" for p in problems)
        raise DataError(
            f"{len(problems)} of {len(src.files)} images cannot be read ({listed}); remove or "
            "replace them, or pass --skip-bad to skip damaged images",
            file=source,
        )
    if len(problems) == len(src.files):
        raise DataError(f"none of its {len(problems)} image(s) can be read", file=source)
    lines = describe_problems(str(source), problems, limit=len(problems))
    warn(console, "\n".join(lines))


@dataclass
class _Loop:
    """One image's work in :func:`run_detect`: predict, record, draw, write, show, time."""

    src: _Source
    predict: Predictor
    names: Sequence[str]
    sink: _Sink
    window: Window
    stages: StageTimes | None
    results: list[dict[str, Any]] = field(default_factory=list)
    stats: LoopStats = field(default_factory=LoopStats)

    def frame(self, name: str, frame: np.ndarray, index: int | None) -> bool:
        """Process one RGB image; ``False`` when the viewer asked to stop (q / Esc)."""
        t0 = time.perf_counter()
        prediction = as_arrays(self.predict(frame))
        t1 = time.perf_counter()
        times = {"infer": (t1 - t0) * 1e3} if self.stages is None else dict(self.stages.last_times)
        record = frame_record(name, index, prediction, self.names)
        if self.sink.out is None and not self.window.enabled:
            self.stats.tick(times)
            self.results.append(record)
            return True
        t2 = time.perf_counter()
        drawn = draw_detections(frame, *prediction, self.names, bgr=False)
        drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        times["post"] = times.get("post", 0.0) + (time.perf_counter() - t2) * 1e3
        self.sink.write(name, drawn)
        # counted and recorded once written: Ctrl+C between two steps leaves the frame count,
        # detections.json and the images agreeing
        self.stats.tick(times)
        self.results.append(record)
        return self.window.show(drawn)


def _run(
    loop: _Loop,
    save_json: bool,
    show_progress: bool,
    skip_bad: bool,
    console: Console,
    max_frames: int | None = None,
    stop: StopSignals | None = None,
) -> list[dict[str, Any]]:
    """The image loop of :func:`run_detect`."""
    src, results = loop.src, loop.results
    items = src.items(skip_bad=skip_bad)
    progress = progress_bar(console, show_progress)
    try:
        with progress:
            task = progress.add_task("detect", total=src.total, name="", fps=0.0)
            for item in items:
                if isinstance(item, Problem):
                    if Path(item.file) not in src.bad:  # those were named before the run
                        warn(console, f"skipped {item}")
                    results.append({"image": Path(item.file).name, "skipped": item.reason})
                    progress.update(task, advance=1)
                    continue
                keep = loop.frame(*item)
                progress.update(task, advance=1, name=item[0], fps=loop.stats.fps)
                if not keep:
                    progress.console.print(
                        f"stopped at the window after {loop.stats.frames} frames"
                    )
                    break
                if max_frames is not None and loop.stats.frames >= max_frames:
                    progress.console.print(f"stopped after {max_frames} frames (--frames)")
                    break
                if stop is not None and stop.received:
                    progress.console.print(
                        f"[yellow]stopped by {stop.received} after {loop.stats.frames} "
                        "frames[/yellow]"
                    )
                    break
    except KeyboardInterrupt:
        progress.console.print(f"[yellow]interrupted after {loop.stats.frames} frames[/yellow]")
    finally:
        items.close()
        loop.window.close()
    if show_progress and loop.stats.frames:
        console.print(f"timing: {loop.stats.summary()}", highlight=False, soft_wrap=True)
    if save_json:
        loop.sink.json(results)
    return results


class _Sink:
    """Where :func:`run_detect` writes images: annotated images and ``detections.json``."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.written: set[str] = set()
        if out is not None:
            make_out_dir(out)

    def write(self, name: str, drawn: np.ndarray) -> None:
        """Write one drawn (BGR) image to ``out/<stem>.jpg`` (the full name where stems repeat)."""
        if self.out is None:
            return
        stem = Path(name).stem if Path(name).stem not in self.written else name
        self.written.add(stem)
        path = self.out / f"{stem}.jpg"
        if not cv2.imwrite(str(path), drawn):
            raise ConfigError(f"{path}: cannot write the annotated image (disk full? permissions?)")

    def json(self, results: list[dict[str, Any]]) -> None:
        assert self.out is not None  # run_detect checked
        write_detections(self.out, results)
