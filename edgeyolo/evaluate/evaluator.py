"""Running a PyTorch model over a dataset split and scoring it with COCO mAP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.records import ImageRecord, describe_problems
from edgeyolo.evaluate.coco_map import MapResult, Prediction, compute_map
from edgeyolo.predict import detect_batch, to_frame


@torch.no_grad()
def predict_records(
    model: nn.Module,
    records: Sequence[ImageRecord],
    *,
    img_size: int,
    batch: int = 16,
    device: torch.device | str = "cpu",
    conf_thres: float = 0.001,
    iou_thres: float = 0.5,
    max_det: int = 300,
    workers: int = 0,
    progress: bool = False,
) -> list[Prediction]:
    """Detections per record as ``(float32[K, 4] xyxy original pixels, float32[K], int64[K])``."""
    device = torch.device(device)
    dataset = DetectionDataset(list(records), img_size=img_size, augment=None)
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate
    )
    was_training = model.training
    model.eval()
    out: list[Prediction] = [None] * len(records)  # type: ignore[list-item]
    iterator = loader
    if progress:
        from rich.progress import track

        iterator = track(loader, description="evaluating", transient=True)
    try:
        for images, _targets, indices in iterator:
            dets = detect_batch(
                model,
                images.to(device),
                conf_thres=conf_thres,
                iou_thres=iou_thres,
                max_det=max_det,
            )
            for det, i in zip(dets, indices, strict=True):
                rec = records[i]
                out[i] = to_frame(
                    det, dataset.letterbox_meta(i), width=rec.width, height=rec.height
                )
    finally:
        model.train(was_training)
    return out


def evaluate_model(
    model: nn.Module,
    records: Sequence[ImageRecord],
    names: Sequence[str],
    *,
    img_size: int,
    batch: int = 16,
    device: torch.device | str = "cpu",
    conf_thres: float = 0.001,
    iou_thres: float = 0.5,
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
    conf_thres: float = 0.001,
    iou_thres: float = 0.5,
    skip_bad: bool = False,
    progress: bool = True,
) -> MapResult:
    """Evaluate a trained checkpoint on a split of a ``data.yaml``."""
    from edgeyolo.data.formats import load_data_yaml, read_split
    from edgeyolo.device import select_device
    from edgeyolo.errors import ConfigError
    from edgeyolo.train.checkpoint import load_model

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
        from rich.console import Console

        console = Console(stderr=True)
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
