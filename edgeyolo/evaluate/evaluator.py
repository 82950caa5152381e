"""Running a PyTorch model over a dataset split and scoring it with COCO mAP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.progress import track
from torch import nn
from torch.utils.data import DataLoader

from edgeyolo.config import EVAL_CONF_THRES, EVAL_IOU_THRES, EVAL_MAX_DET
from edgeyolo.console import make_console
from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.records import ImageRecord, describe_problems
from edgeyolo.data.transforms import to_frame
from edgeyolo.device import select_device
from edgeyolo.errors import ConfigError
from edgeyolo.metrics.coco_map import MapResult, Prediction, compute_map
from edgeyolo.models.checkpoint import load_model
from edgeyolo.postprocess import Detections, from_outputs
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch

#: Detects on a batch of letterboxed images (``Tensor[B, 3, S, S]``, 0..1); boxes in input pixels.
BatchDetector = Callable[[torch.Tensor], list[Detections]]


def predict_with(
    detect: BatchDetector,
    records: Sequence[ImageRecord],
    *,
    img_size: int,
    batch: int = 16,
    workers: int = 0,
    progress: bool = False,
    description: str = "evaluating",
) -> list[Prediction]:
    """Detections per record, mapped to original pixels, from any backend's batch detector.

    Every backend (PyTorch, ONNX Runtime, TensorRT) is scored through this one loop, so the
    letterbox and the mapping back to image pixels are the same for all of them.
    """
    dataset = DetectionDataset(list(records), img_size=img_size, augment=None)
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate
    )
    out: list[Prediction] = [None] * len(records)  # type: ignore[list-item]
    iterator = loader
    if progress:
        iterator = track(loader, description=description, transient=True)
    for images, _targets, indices in iterator:
        for det, i in zip(detect(images), indices, strict=True):
            rec = records[i]
            out[i] = to_frame(det, dataset.letterbox_meta(i), width=rec.width, height=rec.height)
    return out


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
    workers: int = 0,
    progress: bool = False,
) -> list[Prediction]:
    """Detections of a PyTorch model per record as ``(float32[K, 4] xyxy original pixels,
    float32[K], int64[K])``."""
    device = torch.device(device)

    def detect(images: torch.Tensor) -> list[Detections]:
        return detect_batch(
            model, images.to(device), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det
        )

    was_training = model.training
    model.eval()
    try:
        return predict_with(
            detect, records, img_size=img_size, batch=batch, workers=workers, progress=progress
        )
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
) -> MapResult:
    """Evaluate a trained checkpoint on a split of a ``data.yaml``."""

    dev = select_device(device)
    model, _ckpt = load_model(weights, device=dev)
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

        def detect(images: torch.Tensor) -> list[Detections]:
            out = session.run(images.numpy())
            return from_outputs(out)

        preds = predict_with(
            detect,
            records,
            img_size=img_size,
            batch=batch,
            progress=progress,
            description="evaluating ONNX" if isinstance(path, bytes) else f"evaluating {path}",
        )
    return compute_map(preds, records, names)
