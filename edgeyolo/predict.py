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
from edgeyolo.postprocess import decode_heads, postprocess
from edgeyolo.train.checkpoint import load_model


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
    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = frame.shape[:2]
        image, params = letterbox(frame, self.img_size)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)[None].to(self.device)
        boxes, obj, cls_prob = decode_heads(self.model(x), self.model.anchors, self.model.strides)
        det = postprocess(
            boxes,
            obj,
            cls_prob,
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
            max_det=self.max_det,
        )[0]
        b = boxes_from_letterbox(det.boxes.cpu().numpy(), params, width=w, height=h)
        return (
            b.astype(np.float32),
            det.scores.cpu().numpy().astype(np.float32),
            det.labels.cpu().numpy().astype(np.int64),
        )
