"""A PyTorch model as a backend: forward, the shared decode and torchvision NMS.

:class:`TorchBackend` runs a checkpoint behind the same :class:`~edgeyolo.runtime.backends.Backend`
interface as ONNX Runtime and TensorRT; :func:`detect_batch` / :func:`heads_to_detections` are the
steps it takes, used directly by evaluation and export (which hold the model already). This is
the one runtime module that needs torch; :func:`edgeyolo.runtime.backends.open_backend` imports
it only for ``.pt`` files.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
)
from edgeyolo.device import select_device
from edgeyolo.models.checkpoint import load_model
from edgeyolo.postprocess import Detections, decode_heads, postprocess
from edgeyolo.runtime.backends import DYNAMIC_BATCH, Backend
from edgeyolo.runtime.thresholds import NmsSettings


def detect_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    multi_label: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> list[Detections]:
    """Model, decode and NMS on ``images`` (``Tensor[B, 3, H, W]``, letterboxed, 0..1).

    Boxes of the returned detections are in letterboxed input pixels.
    """
    return heads_to_detections(
        model,
        model(images),
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
        multi_label=multi_label,
        max_candidates=max_candidates,
    )


def heads_to_detections(
    model: torch.nn.Module,
    heads: list[torch.Tensor],
    *,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    multi_label: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> list[Detections]:
    """Decode ``model``'s raw head maps and run NMS (in fp32, whatever the model ran in);
    ``multi_label`` and ``max_candidates`` as in :func:`edgeyolo.postprocess.postprocess`."""
    boxes, obj, cls_prob = decode_heads(heads, model.anchors, model.strides)
    return postprocess(
        boxes.float(),
        obj.float(),
        cls_prob.float(),
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
        multi_label=multi_label,
        max_candidates=max_candidates,
    )


class TorchBackend(Backend):
    """A training checkpoint on CPU or CUDA, fp32 or fp16 (``half``: for CUDA; slow on a CPU)."""

    name = "pytorch"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        half: bool = False,
        img_size: int | None = None,
        conf_thres: float = DEFAULT_CONF_THRES,
        iou_thres: float = DEFAULT_IOU_THRES,
        max_det: int = DEFAULT_MAX_DET,
        threads: int | None = None,
        multi_label: bool = False,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        cfg: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.device = select_device(device)
        self.model, _ = load_model(weights, cfg, device=self.device)
        index = self.device.index
        if self.device.type == "cuda" and index is None:
            index = torch.cuda.current_device()
        self.where = f"cuda:{index}" if self.device.type == "cuda" else "cpu"
        if half:
            self.model.half()
        self.precision = "fp16" if half else "fp32"
        self.img_size = img_size or self.model.config.img_size
        self.class_names = tuple(self.model.config.class_names)
        self.max_batch = DYNAMIC_BATCH
        self.nms = NmsSettings(conf_thres, iou_thres, max_det).check()
        self.kw = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
        self.kw |= {"multi_label": multi_label, "max_candidates": max_candidates}
        self.threads = threads
        self._threads_before: int | None = None

    def __enter__(self) -> TorchBackend:
        self._threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        """Give back torch's intra-op thread count as it was before :meth:`__enter__`."""
        if self.threads is not None and self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
        self._threads_before = None

    @torch.no_grad()
    def infer(self, images: np.ndarray) -> list[Detections]:
        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        if cuda:
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        heads = self.model(x)
        if cuda:
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        dets = [d.to("cpu") for d in heads_to_detections(self.model, heads, **self.kw)]
        t3 = time.perf_counter()
        self.last_times = {
            "h2d": (t1 - t0) * 1e3,
            "compute": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return dets
