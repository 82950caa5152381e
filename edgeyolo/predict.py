"""Running a trained PyTorch checkpoint on single frames (the ``detect`` command's predictor).

The runtime issue generalises this to ONNX Runtime and TensorRT behind one ``Detector``; the
letterbox, decode and NMS used here are the ones every backend shares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeyolo.data.transforms import boxes_from_letterbox, letterbox
from edgeyolo.device import select_device
from edgeyolo.evaluate.coco_map import Prediction
from edgeyolo.postprocess import Detections, decode_heads, postprocess
from edgeyolo.train.checkpoint import load_model


def detect_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    conf_thres: float,
    iou_thres: float,
    max_det: int = 300,
) -> list[Detections]:
    """Model, decode and NMS on ``images`` (``Tensor[B, 3, H, W]``, letterboxed, 0..1).

    Boxes of the returned detections are in letterboxed input pixels.
    """
    return heads_to_detections(
        model, model(images), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det
    )


def heads_to_detections(
    model: torch.nn.Module,
    heads: list[torch.Tensor],
    *,
    conf_thres: float,
    iou_thres: float,
    max_det: int = 300,
) -> list[Detections]:
    """Decode ``model``'s raw head maps and run NMS (in fp32, whatever the model ran in)."""
    boxes, obj, cls_prob = decode_heads(heads, model.anchors, model.strides)
    return postprocess(
        boxes.float(),
        obj.float(),
        cls_prob.float(),
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
    )


def to_frame(
    det: Detections, params: tuple[float, float, float], *, width: int, height: int
) -> Prediction:
    """Detections mapped from letterboxed input pixels back to a ``width`` x ``height`` frame."""
    boxes = boxes_from_letterbox(det.boxes.cpu().numpy(), params, width=width, height=height)
    return (
        boxes.astype(np.float32),
        det.scores.cpu().numpy().astype(np.float32),
        det.labels.cpu().numpy().astype(np.int64),
    )


class TorchPredictor:
    """``predictor(frame)`` → ``(float32[K, 4] xyxy frame pixels, float32[K], int64[K])``.

    Scores and class ids are the second and third arrays.

    ``frame`` is an ``(H, W, 3)`` uint8 RGB image of any size.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        img_size: int | None = None,
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_det: int = 300,
    ) -> None:
        self.device = select_device(device)
        self.model, _ = load_model(weights, device=self.device)
        self.img_size = img_size or self.model.config.img_size
        self.names = self.model.config.class_names
        self.conf_thres = conf_thres
        self.iou_thres = iou_thres
        self.max_det = max_det

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> Prediction:
        h, w = frame.shape[:2]
        image, params = letterbox(frame, self.img_size)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)[None].to(self.device)
        det = detect_batch(
            self.model,
            x,
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
            max_det=self.max_det,
        )[0]
        return to_frame(det, params, width=w, height=h)
