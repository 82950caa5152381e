"""``Detector``: the few lines a camera app needs, over any backend (.pt, .onnx, .engine).

from edgeyolo import Detector
with Detector("export/tiny/model_int8.engine") as det:
    for frame in frames:                 # HxWx3 uint8 BGR (OpenCV's order), any size
        d = det(frame)                   # d.boxes in frame pixels, d.scores, d.class_ids, d.labels
        det.last_times                   # {"pre": ms, "infer": ms, "post": ms} of that call

Frames from a camera, a file, a URL or a GStreamer pipeline:
:class:`edgeyolo.runtime.capture.Capture`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from edgeyolo.data.letterbox import letterbox, to_frame
from edgeyolo.errors import DataError
from edgeyolo.lazy import CV2 as cv2
from edgeyolo.runtime.backends import Backend, open_backend
from edgeyolo.runtime.thresholds import NmsSettings

__all__ = ["Detector", "FrameDetections"]


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame, in that frame's pixels.

    Attributes:
        boxes (float32[K, 4]): xyxy, clipped to the frame.
        scores (float32[K]): objectness × class probability, descending.
        class_ids (int64[K]): class indices.
        labels (tuple of K str): class names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """Letterbox, the backend chosen from ``model``'s suffix, and boxes mapped back to the frame.

    Args:
        model: a ``.pt`` checkpoint, an exported ``.onnx`` or a TensorRT ``.engine``; or a
            :class:`~edgeyolo.runtime.backends.Backend` made by other means, which the
            Detector then opens and closes (the options below but ``bgr`` are not used).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        conf_thres, iou_thres, max_det: score threshold, NMS IoU threshold, detections kept per
            frame. ``None`` (default) is the model's own: an exported graph's built-in values
            (manifest ``nms``), 0.25, 0.45 and 100 for a checkpoint. An ``.onnx`` honours any
            value (its NMS is re-targeted or its output filtered); a TensorRT engine honours a
            higher score threshold and fewer detections, and refuses the rest with its built-in
            values and how to rebuild. :attr:`nms` holds the settings in force.
        bgr: frames come in OpenCV's BGR order (``False``: RGB).
        threads: CPU threads for the backend (PyTorch, ONNX Runtime).
        img_size: input size of a ``.pt`` checkpoint (default: its own); exported models are fixed.
        cfg: the darknet ``.cfg`` of a ``.weights`` model (default: the ``.cfg`` beside it).

    Attributes:
        last_times (dict[str, float]): the last call's stage times in ms: ``pre`` (colour
            order, letterbox, scaling to 0..1), ``infer`` (the backend's :meth:`infer`, its
            own split in ``backend.last_times``), ``post`` (boxes mapped back to the frame).

    Raises:
        ModelFileError: the model file is missing, damaged or not an edgeyolo model.
        ConfigError: an unknown device or suffix, or thresholds the model cannot honour.
    """

    def __init__(
        self,
        model: str | Path | Backend,
        *,
        device: str = "auto",
        conf_thres: float | None = None,
        iou_thres: float | None = None,
        max_det: int | None = None,
        bgr: bool = True,
        threads: int | None = None,
        img_size: int | None = None,
        cfg: str | Path | None = None,
    ) -> None:
        if isinstance(model, Backend):
            self.backend: Backend = model
        else:
            self.backend = open_backend(
                model,
                device=device,
                img_size=img_size,
                threads=threads,
                conf_thres=conf_thres,
                iou_thres=iou_thres,
                max_det=max_det,
                cfg=cfg,
            )
        self.bgr = bgr
        self.is_open = False
        self.last_times: dict[str, float] = {}

    def open(self) -> Detector:
        """Acquire the backend (session, GPU buffers); :meth:`__enter__` calls it, and a camera
        loop without ``with`` may call it once (then :meth:`close` at the end). Idempotent."""
        if not self.is_open:
            self.backend.__enter__()
            self.is_open = True
        return self

    @property
    def img_size(self) -> int:
        """The network's input size in pixels."""
        return self.backend.img_size

    @property
    def max_batch(self) -> int:
        """The most frames one :meth:`batch` call takes (an engine's ``--max-batch``, an
        exported graph's ``input.max_batch``; a checkpoint takes any)."""
        return self.backend.max_batch

    @property
    def names(self) -> tuple[str, ...]:
        """Class names (empty for an ``.onnx`` without its manifest)."""
        return self.backend.class_names

    def __enter__(self) -> Detector:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def nms(self) -> NmsSettings | None:
        """The NMS settings the detections obey (``None``: an engine that does not say)."""
        return self.backend.nms

    @property
    def conf_thres(self) -> float | None:
        """The score threshold in force: a detection's score is above it."""
        return None if self.nms is None else self.nms.conf_thres

    def close(self) -> None:
        """Release the backend (GPU buffers, sessions). Idempotent."""
        if self.is_open:
            self.is_open = False
            self.backend.__exit__(None, None, None)

    def __call__(self, frame: np.ndarray) -> FrameDetections:
        """Detect in one ``(H, W, 3)`` uint8 frame."""
        return self.batch([frame])[0]

    def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]:
        """Detect in several frames at once (at most the backend's ``max_batch``).

        Raises:
            DataError: a frame is not an ``(H, W, 3)`` uint8 array.
            RuntimeError: the detector is not open (use ``with Detector(...) as det`` or
                :meth:`open`).
        """
        if not self.is_open:
            raise RuntimeError(
                "this Detector is not open: use `with Detector(model) as det:`, or call "
                "det.open() once before the loop and det.close() after it"
            )
        if not frames:
            return []
        t0 = time.perf_counter()
        images, params, shapes = [], [], []
        for i, f in enumerate(frames):
            f = np.asarray(f)
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 or min(f.shape[:2]) < 1:
                raise DataError(
                    f"frame {i} is {f.dtype} {f.shape}; a frame must be (H, W, 3) uint8 "
                    "(OpenCV's BGR, or RGB with bgr=False): convert grey or RGBA frames with "
                    "cv2.cvtColor first"
                )
            rgb = cv2.cvtColor(f, cv2.COLOR_BGR2RGB) if self.bgr else f
            img, p = letterbox(rgb, self.img_size)
            images.append(img)
            params.append(p)
            shapes.append(f.shape)
        x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
        x *= np.float32(1.0 / 255.0)  # as data.images.network_input and the evaluation
        t1 = time.perf_counter()
        dets = self.backend.infer(x)
        t2 = time.perf_counter()
        out = []
        for det, p, (h, w, _) in zip(dets, params, shapes, strict=True):
            boxes, scores, ids = to_frame(det, p, width=w, height=h)
            out.append(FrameDetections(boxes, scores, ids, self._labels(ids)))
        t3 = time.perf_counter()
        self.last_times = {
            "pre": (t1 - t0) * 1e3,
            "infer": (t2 - t1) * 1e3,
            "post": (t3 - t2) * 1e3,
        }
        return out

    def _labels(self, ids: np.ndarray) -> tuple[str, ...]:
        """Class names of ``ids``; the id itself where the model names no such class (an
        ``.onnx`` without its manifest has no names)."""
        n = len(self.names)
        return tuple(self.names[i] if 0 <= i < n else str(int(i)) for i in ids)

    def predict_rgb(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``detect`` command's predictor protocol: RGB frame → (boxes, scores, class ids)."""
        bgr, self.bgr = self.bgr, False
        try:
            d = self(frame_rgb)
        finally:
            self.bgr = bgr
        return d.boxes, d.scores, d.class_ids
