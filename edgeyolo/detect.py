"""Run a predictor over an image, a folder of images, a video or a camera and write the results.

A predictor is any callable ``predict(image uint8[H, W, 3] RGB) -> (boxes float[K, 4] xyxy in
frame pixels, scores float[K], labels int[K])``; the PyTorch, ONNX Runtime and TensorRT backends
all fit it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from edgeyolo.errors import DataError, EdgeYoloError
from edgeyolo.visualize import draw_detections

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov"})
_DEFAULT_FPS = 30.0

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
Frame = tuple[str, np.ndarray, int | None]
"""``(name, uint8[H, W, 3] RGB, frame index or None for still images)``."""


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("cannot read this image (corrupt or not an image)", file=path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _open_capture(target: str | int) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        what = f"camera {target}" if isinstance(target, int) else "video"
        raise DataError(f"cannot open {what}", file=None if isinstance(target, int) else target)
    return cap


@dataclass
class _Source:
    """What ``source`` names, resolved before any frame is read."""

    kind: Literal["images", "video", "camera"]
    files: list[Path]
    camera: int | None = None
    total: int | None = None
    fps: float = _DEFAULT_FPS

    @property
    def stem(self) -> str:
        return f"camera{self.camera}" if self.kind == "camera" else self.files[0].stem

    def frames(self) -> Iterator[Frame]:
        if self.kind == "images":
            for path in self.files:
                yield path.name, _read_image(path), None
            return
        target: str | int = str(self.files[0]) if self.kind == "video" else int(self.camera or 0)
        cap = _open_capture(target)
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
        finally:
            cap.release()


def _resolve(source: str | Path) -> _Source:
    if isinstance(source, str) and source.isdigit() and not Path(source).exists():
        return _Source("camera", [], camera=int(source))
    path = Path(source)
    if not path.exists():
        raise DataError("no such file or directory", file=path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) here", file=path)
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
        DataError: the path is missing, is of an unsupported type, a folder holds no image, an
            image cannot be decoded (raised when it is reached), or a video or camera cannot be
            opened. Path problems are raised by this call, not at the first frame.
    """
    return _resolve(source).frames()


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

    Returns:
        One record per frame: ``{"image": name, "detections": [{"label": name, "bbox": [x1, y1,
        x2, y2] (2 decimals), "score": (4 decimals)}, ...]}``, with ``"frame": index`` added for
        video and camera frames. Ctrl+C (``KeyboardInterrupt``) ends the run early: the capture and
        writer are released and the frames done so far are saved and returned.

    Raises:
        DataError: see :func:`iter_sources`.
        EdgeYoloError: the output video cannot be written.
        ValueError: ``save_json`` without ``out``.
    """
    if save_json and out is None:
        raise ValueError("save_json needs an output folder (out)")
    src = _resolve(source)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    writer: cv2.VideoWriter | None = None
    written: set[str] = set()
    frames = src.frames()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]detect[/bold] {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} FPS"),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("detect", total=src.total, name="", fps=0.0)
            start = time.perf_counter()
            for name, frame, index in frames:
                prediction = _as_arrays(predict(frame))
                results.append(_record(name, index, prediction, names))
                if out_dir is not None:
                    drawn = draw_detections(frame, *prediction, names, bgr=False)
                    drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                    if index is None:
                        stem = Path(name).stem if Path(name).stem not in written else name
                        written.add(stem)
                        cv2.imwrite(str(out_dir / f"{stem}.jpg"), drawn)
                    else:
                        if writer is None:
                            writer = _open_writer(out_dir / f"{src.stem}.mp4", src.fps, drawn)
                        writer.write(drawn)
                elapsed = time.perf_counter() - start
                progress.update(task, advance=1, name=name, fps=len(results) / max(elapsed, 1e-9))
    except KeyboardInterrupt:
        progress.console.print(f"[yellow]interrupted after {len(results)} frames[/yellow]")
    finally:
        frames.close()  # releases a video or camera capture
        if writer is not None:
            writer.release()
        if save_json and out_dir is not None:
            (out_dir / "detections.json").write_text(json.dumps(results, indent=1))
    return results


def _open_writer(path: Path, fps: float, first: np.ndarray) -> cv2.VideoWriter:
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise EdgeYoloError(f"{path}: cannot open a video writer (mp4v, {w}x{h} at {fps} fps)")
    return writer
