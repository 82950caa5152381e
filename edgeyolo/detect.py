"""Run a predictor over an image, a folder of images, a video or a camera and write the results.

A predictor is any callable ``predict(image uint8[H, W, 3] RGB) -> (boxes float[K, 4] xyxy in
frame pixels, scores float[K], labels int[K])``; the PyTorch, ONNX Runtime and TensorRT backends
all fit it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
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

from edgeyolo.console import make_console
from edgeyolo.data.records import IMAGE_SUFFIXES, Problem, describe_problems
from edgeyolo.errors import ConfigError, DataError, EdgeYoloError
from edgeyolo.visualize import draw_detections

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov"})
_DEFAULT_FPS = 30.0
#: Pillow modes with more than 8 bits per sample: decoded by OpenCV, which scales them to 8 bits
#: (Pillow's conversion to RGB would clip them).
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
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


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's log silenced for a block: a failed open prints "[ WARN:0@...] can't open camera
    by index" (OpenCV) or "moov atom not found" (FFmpeg) lines on stderr, where our own one-line
    error says it better. FFmpeg's level comes from ``OPENCV_FFMPEG_LOGLEVEL`` when OpenCV opens
    a file; a value the user set is left alone."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    unset = "OPENCV_FFMPEG_LOGLEVEL" not in os.environ
    if unset:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "8"  # AV_LOG_FATAL
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)
        if unset:
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)


def _open_capture(target: str | int) -> cv2.VideoCapture:
    with _quiet_opencv():
        cap = cv2.VideoCapture(target)
        opened = cap.isOpened()
    if opened:
        return cap
    cap.release()
    if isinstance(target, int):
        raise DataError(
            f"cannot open camera {target}: no such camera, or it is busy or not permitted "
            "(on Linux `ls /dev/video*` lists cameras; close other programs using it); "
            "or give a video file, an image or a folder"
        )
    raise DataError(
        "cannot open this video: it is damaged, not a video, or in a codec this OpenCV build "
        "cannot decode; re-encode it (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`) or give images",
        file=target,
    )


@dataclass
class _Source:
    """What ``source`` names, resolved before any frame is read."""

    kind: Literal["images", "video", "camera"]
    files: list[Path]
    camera: int | None = None
    total: int | None = None
    fps: float = _DEFAULT_FPS
    #: Images found unreadable before decoding (by :meth:`scan`), by path.
    bad: dict[Path, str] = field(default_factory=dict)
    #: The camera's capture, opened by :func:`_resolve` so that a missing camera is found early.
    cap: cv2.VideoCapture | None = None
    #: Frames read from a video that ended before the frame count its header gives.
    short_read: int | None = None

    @property
    def stem(self) -> str:
        return f"camera{self.camera}" if self.kind == "camera" else self.files[0].stem

    def scan(self) -> list[Problem]:
        """Find the image files that are not images at all (header only); see :func:`_identify`."""
        for path in self.files if self.kind == "images" else []:
            reason = _identify(path)
            if reason is not None:
                self.bad[path] = reason
        return [Problem(str(p), None, r) for p, r in self.bad.items()]

    def items(self, *, skip_bad: bool) -> Iterator[Frame | Problem]:
        """Frames in order; with ``skip_bad``, a :class:`Problem` in place of each bad image."""
        if self.kind == "images":
            for path in self.files:
                try:
                    if path in self.bad:
                        raise DataError(self.bad[path], file=path)
                    yield path.name, _read_image(path), None
                except DataError as e:
                    if not skip_bad:
                        raise DataError(f"{e.reason}; {_FIX}", file=path) from e
                    yield Problem(str(path), None, e.reason)
            return
        yield from self.stream()

    def stream(self) -> Iterator[Frame]:
        """The frames of a video or camera; its capture is released when this ends or closes."""
        cap = self.cap or _open_capture(str(self.files[0]))
        self.cap = None
        try:
            fps = cap.get(cv2.CAP_PROP_FPS)
            if fps > 0:
                self.fps = float(fps)
            name = self.files[0].name if self.kind == "video" else self.stem
            index = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield name, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index
                index += 1
            if self.kind == "video" and self.total is not None and 0 < index < self.total:
                self.short_read = index
            if index == 0:
                what = f"camera {self.camera}" if self.kind == "camera" else "this video"
                raise DataError(
                    f"{what} opened, but not one frame could be read from it (damaged, empty, "
                    "or a codec this OpenCV build cannot decode)",
                    file=None if self.kind == "camera" else self.files[0],
                )
        finally:
            cap.release()

    def close(self) -> None:
        """Release a capture that was opened and never read."""
        if self.cap is not None:
            self.cap.release()
            self.cap = None


_FIX = "remove or replace it, or pass --skip-bad to skip damaged images"


def _resolve(source: str | Path) -> _Source:
    if isinstance(source, str) and source.isdigit() and not Path(source).exists():
        index = int(source)
        return _Source("camera", [], camera=index, cap=_open_capture(index))
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
        return _Source("images", files, total=len(files))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _Source("images", [path], total=1)
    if suffix in VIDEO_SUFFIXES:
        cap = _open_capture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return _Source("video", [path], total=count if count > 0 else None)
    raise DataError(
        f"unsupported file type {suffix or '(none)'}; expected an image "
        f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a video ({', '.join(sorted(VIDEO_SUFFIXES))})",
        file=path,
    )


def iter_sources(source: str | Path) -> Iterator[Frame]:
    """Frames of ``source``: an image file, a folder of images, a video file or a camera.

    Args:
        source: a path, or a camera index as a digit string (``"0"``). A folder yields its image
            files (not recursive), sorted by name.

    Yields:
        ``(name, frame uint8[H, W, 3] RGB, index)``: ``name`` is the file name (``camera<N>`` for a
        camera), ``index`` the frame number in a video or camera stream, ``None`` for images.

    Raises:
        DataError: the path is missing, is of an unsupported type, a folder holds no image, a
            video or camera cannot be opened (raised by this call), an image cannot be decoded
            (e.g. a truncated JPEG) or a video gives no frame (raised when it is reached).
    """
    return _frames(_resolve(source))


def _frames(src: _Source) -> Iterator[Frame]:
    for item in src.items(skip_bad=False):
        if not isinstance(item, Problem):  # skip_bad=False raises instead of giving one
            yield item


def _record(
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


def _as_arrays(
    prediction: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = prediction
    return (
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(scores, dtype=np.float64).reshape(-1),
        np.asarray(labels).reshape(-1).astype(np.int64),
    )


def run_detect(
    source: str | Path,
    predict: Predictor,
    names: Sequence[str],
    *,
    out: str | Path | None,
    save_json: bool = False,
    show_progress: bool = True,
    skip_bad: bool = False,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Run ``predict`` on every frame of ``source``, draw and save the results.

    Args:
        source: see :func:`iter_sources`.
        predict: the predictor (RGB frame in, ``(boxes xyxy, scores, labels)`` in frame pixels out).
        names: class names, used for captions and the ``label`` field.
        out: output folder (created); annotated images go to ``out/<stem>.jpg``, a video or camera
            stream to ``out/<stem>.mp4`` (mp4v, at the source fps). ``None`` writes nothing.
        save_json: also write the returned list to ``out/detections.json``.
        show_progress: show a rich progress line with the frame count and FPS.
        skip_bad: skip images that cannot be read (not an image, truncated, damaged) instead of
            stopping; each is named in a warning and has a record in the result.
        console: where the progress line and warnings go (default: a new rich Console).

    Returns:
        One record per frame: ``{"image": name, "detections": [{"label": name, "bbox": [x1, y1,
        x2, y2] (2 decimals), "score": (4 decimals)}, ...]}``, with ``"frame": index`` added for
        video and camera frames; a skipped image has ``{"image": name, "skipped": reason}``
        instead, in its place. Ctrl+C (``KeyboardInterrupt``) ends the run early: the capture and
        writer are released and the frames done so far are saved and returned.

    Raises:
        DataError: see :func:`iter_sources`; without ``skip_bad``, files that are not images
            are all named before any frame is processed, and an image that fails to decode
            (truncated) stops the run at that image (``detections.json`` is then not written).
            With ``skip_bad``, when no image at all can be read.
        ConfigError: ``save_json`` without ``out``, or ``out`` cannot be written.
        EdgeYoloError: the output video cannot be written.
    """
    if save_json and out is None:
        raise ConfigError("save_json needs an output folder (out)")
    console = console or make_console()
    src = _resolve(source)
    try:
        _check_images(src, source, skip_bad=skip_bad, console=console)
        sink = _Sink(None if out is None else Path(out), src)
        return _run(src, predict, names, sink, save_json, show_progress, skip_bad, console)
    finally:
        src.close()


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
    _warn(console, "\n".join(lines))


def _warn(console: Console, text: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _run(
    src: _Source,
    predict: Predictor,
    names: Sequence[str],
    sink: _Sink,
    save_json: bool,
    show_progress: bool,
    skip_bad: bool,
    console: Console,
) -> list[dict[str, Any]]:
    """The frame loop of :func:`run_detect`."""
    results: list[dict[str, Any]] = []
    items = src.items(skip_bad=skip_bad)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]detect[/bold] {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} FPS"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    done, frames = False, 0
    try:
        with progress:
            task = progress.add_task("detect", total=src.total, name="", fps=0.0)
            start = time.perf_counter()
            for item in items:
                if isinstance(item, Problem):
                    if Path(item.file) not in src.bad:  # those were named before the run
                        _warn(console, f"skipped {item}")
                    results.append({"image": Path(item.file).name, "skipped": item.reason})
                    progress.update(task, advance=1)
                    continue
                name, frame, index = item
                prediction = _as_arrays(predict(frame))
                results.append(_record(name, index, prediction, names))
                sink.frame(name, frame, index, prediction, names)
                frames += 1
                fps = frames / max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=1, name=name, fps=fps)
        done = True
    except KeyboardInterrupt:
        progress.console.print(f"[yellow]interrupted after {frames} frames[/yellow]")
        done = True
    finally:
        items.close()  # releases a video or camera capture
        sink.close()
    if src.short_read is not None:
        _warn(
            console,
            f"{src.files[0]}: the video ended after {src.short_read} of the {src.total} frames its "
            "header announces (damaged or truncated file?)",
        )
    if done and save_json:
        sink.json(results)
    return results


class _Sink:
    """Where :func:`run_detect` writes: annotated images, one video, ``detections.json``."""

    def __init__(self, out: Path | None, src: _Source) -> None:
        self.out, self.src = out, src
        self.writer: cv2.VideoWriter | None = None
        self.written: set[str] = set()
        if out is not None:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"--out {out}: cannot create this folder ({e})") from e

    def frame(
        self,
        name: str,
        frame: np.ndarray,
        index: int | None,
        prediction: tuple[np.ndarray, np.ndarray, np.ndarray],
        names: Sequence[str],
    ) -> None:
        if self.out is None:
            return
        drawn = draw_detections(frame, *prediction, names, bgr=False)
        drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        if index is not None:
            if self.writer is None:
                path = self.out / f"{self.src.stem}.mp4"
                self.writer = _open_writer(path, self.src.fps, drawn)
            self.writer.write(drawn)
            return
        stem = Path(name).stem if Path(name).stem not in self.written else name
        self.written.add(stem)
        path = self.out / f"{stem}.jpg"
        if not cv2.imwrite(str(path), drawn):
            raise ConfigError(f"{path}: cannot write the annotated image (disk full? permissions?)")

    def json(self, results: list[dict[str, Any]]) -> None:
        assert self.out is not None  # run_detect checked
        path = self.out / "detections.json"
        try:
            path.write_text(json.dumps(results, indent=1))
        except OSError as e:
            raise ConfigError(f"{path}: cannot write ({e})") from e

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def _open_writer(path: Path, fps: float, first: np.ndarray) -> cv2.VideoWriter:
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise EdgeYoloError(f"{path}: cannot open a video writer (mp4v, {w}x{h} at {fps} fps)")
    return writer
