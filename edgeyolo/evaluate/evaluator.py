"""Running a PyTorch model over a dataset split and scoring it with COCO mAP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeyolo.config import EVAL_CONF_THRES, EVAL_IOU_THRES, EVAL_MAX_DET
from edgeyolo.console import make_console
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.records import ImageRecord, describe_problems
from edgeyolo.detections import Detections, from_outputs
from edgeyolo.device import select_device
from edgeyolo.errors import ConfigError
from edgeyolo.evaluate.predict import predict_with
from edgeyolo.metrics.coco_map import MapResult, Prediction, compute_map
from edgeyolo.models.checkpoint import load_model
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch


@torch.no_grad()
def predict_records(
    model: nn.Module,
    records: Sequence[ImageRecord],
    *,
    img_size: int,
    batch: int = 16,
    device: torch.device | str = "cpu",
    conf_thres: float = EVAL_CONF_THRES,
    iou_thres: float = EVAL_IOU_THRES,
    max_det: int = EVAL_MAX_DET,
    progress: bool = False,
) -> list[Prediction]:
    """Detections of a PyTorch model per record as ``(float32[K, 4] xyxy original pixels,
    float32[K], int64[K])``."""
    device = torch.device(device)

    def detect(images: np.ndarray) -> list[Detections]:
        x = torch.from_numpy(images).to(device)
        return detect_batch(model, x, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)

    was_training = model.training
    model.eval()
    try:
        return predict_with(detect, records, img_size=img_size, batch=batch, progress=progress)
    finally:
        model.train(was_training)


def evaluate_model(
    model: nn.Module,
    records: Sequence[ImageRecord],
    names: Sequence[str],
    *,
    img_size: int,
    batch: int = 16,
    device: torch.device | str = "cpu",
    conf_thres: float = EVAL_CONF_THRES,
    iou_thres: float = EVAL_IOU_THRES,
    progress: bool = False,
) -> MapResult:
    """COCO mAP@0.5 and mAP@0.5:0.95 of ``model`` on ``records``."""
    preds = predict_records(
        model,
        records,
        img_size=img_size,
        batch=batch,
        device=device,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        progress=progress,
    )
    return compute_map(preds, records, names)


def evaluate_checkpoint(
    weights: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    img_size: int | None = None,
    batch: int = 16,
    device: str = "auto",
    conf_thres: float = EVAL_CONF_THRES,
    iou_thres: float = EVAL_IOU_THRES,
    skip_bad: bool = False,
    progress: bool = True,
    cfg: str | Path | None = None,
) -> MapResult:
    """Evaluate a trained checkpoint (or a darknet ``.weights`` with its ``cfg``) on a split of
    a ``data.yaml``."""

    dev = select_device(device)
    model, _ckpt = load_model(weights, cfg, device=dev)
    spec = load_data_yaml(data)
    names = model.config.class_names
    if len(spec.names) != len(names):
        raise ConfigError(
            f"{data} has {len(spec.names)} classes but {weights} was trained on {len(names)}"
        )
    read = read_split(spec, split, skip_bad=skip_bad)
    if read.problems:
        console = make_console(stderr=True)
        for line in describe_problems(split, read.problems):
            console.print(line, markup=False, highlight=False)
    records = read.records
    return evaluate_model(
        model,
        records,
        names,
        img_size=img_size or model.config.img_size,
        batch=batch,
        device=dev,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        progress=progress,
    )


def evaluate_onnx(
    path: str | Path | bytes,
    records: Sequence[ImageRecord],
    names: Sequence[str],
    *,
    img_size: int,
    batch: int = 8,
    threads: int | None = None,
    progress: bool = False,
) -> MapResult:
    """COCO mAP of an exported graph (decode + NMS inside) run by ONNX Runtime on ``records``.

    The graph's own NMS thresholds apply; export with ``--conf 0.001 --max-det 300`` for the
    standard COCO evaluation setting.
    """

    with OnnxRuntimeSession(path, threads=threads) as session:

        def detect(images: np.ndarray) -> list[Detections]:
            return from_outputs(session.run(images))

        preds = predict_with(
            detect,
            records,
            img_size=img_size,
            batch=batch,
            progress=progress,
            description="evaluating ONNX" if isinstance(path, bytes) else f"evaluating {path}",
        )
    return compute_map(preds, records, names)
