"""``Detector``: the few lines a camera app needs, over any backend (.pt, .onnx, .engine).

from edgeyolo import Detector
with Detector("export/tiny/model_int8.engine") as det:
    for frame in frames:                 # HxWx3 uint8 BGR (OpenCV's order), any size
        d = det(frame)                   # d.boxes in frame pixels, d.scores, d.class_ids, d.labels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from edgeyolo.data.transforms import letterbox
from edgeyolo.predict import to_frame
from edgeyolo.runtime.backends import Backend, open_backend

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
        model: a ``.pt`` checkpoint, an exported ``.onnx`` or a TensorRT ``.engine``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        conf_thres: score threshold. Exported graphs have theirs built in (manifest
            ``nms.conf_thres``); a higher value here filters further, a lower one cannot recover
            what the graph dropped.
        iou_thres, max_det: NMS settings for ``.pt`` checkpoints (exported graphs carry theirs).
        bgr: frames come in OpenCV's BGR order (``False``: RGB).
        threads: CPU threads for the backend (PyTorch, ONNX Runtime).
        img_size: input size of a ``.pt`` checkpoint (default: its own); exported models are fixed.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_det: int = 100,
        bgr: bool = True,
        threads: int | None = None,
        img_size: int | None = None,
    ) -> None:
        self.backend: Backend = open_backend(
            model,
            device=device,
            img_size=img_size,
            threads=threads,
            conf_thres=conf_thres,
            iou_thres=iou_thres,
            max_det=max_det,
        )
        self.backend.__enter__()
        self.conf_thres = conf_thres
        self.bgr = bgr
        self.img_size = self.backend.img_size
        self.names = self.backend.class_names

    def __enter__(self) -> Detector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend (GPU buffers, sessions)."""
        self.backend.__exit__(None, None, None)

    def __call__(self, frame: np.ndarray) -> FrameDetections:
        """Detect in one ``(H, W, 3)`` uint8 frame."""
        return self.batch([frame])[0]

    def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]:
        """Detect in several frames at once (at most the backend's ``max_batch``)."""
        images, params = [], []
        for f in frames:
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"a frame must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
            rgb = cv2.cvtColor(f, cv2.COLOR_BGR2RGB) if self.bgr else f
            img, p = letterbox(rgb, self.img_size)
            images.append(img)
            params.append(p)
        x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        out = []
        for det, p, f in zip(self.backend.infer(x), params, frames, strict=True):
            boxes, scores, ids = to_frame(det, p, width=f.shape[1], height=f.shape[0])
            keep = scores > self.conf_thres
            boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
            out.append(FrameDetections(boxes, scores, ids, tuple(self.names[i] for i in ids)))
        return out

    def predict_rgb(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``detect`` command's predictor protocol: RGB frame → (boxes, scores, class ids)."""
        bgr, self.bgr = self.bgr, False
        try:
            d = self(frame_rgb)
        finally:
            self.bgr = bgr
        return d.boxes, d.scores, d.class_ids
