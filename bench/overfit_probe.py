"""How fast the loss memorises a handful of images, under different optimiser settings.

    python bench/overfit_probe.py --steps 200 --variants "lr=1e-3" "lr=1e-3,clip=10" \
        "lr=2e-3" "lr=5e-4" "lr=1e-3,lambda_box=5"

Builds 4 real MNIST-detection images at 128 px, trains yolov3-tiny on that one fixed batch with
the library's loss (a plain Adam loop, no augmentation, no EMA) and reports, every 25 steps, the
loss components, the mean IoU of the responsible predictions and mAP@0.5 on the same images. It is
the cheap way to see what a setting does to the loss before spending CPU-hours on a full run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor
from torchvision.ops import box_iou

from edgeyolo.config import LossConfig, ModelConfig
from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.evaluate.evaluator import evaluate_model
from edgeyolo.loss import YoloLoss
from edgeyolo.models import build_model
from edgeyolo.postprocess import decode_boxes, split_head
from edgeyolo.train.trainer import resolve_anchors


def parse_variant(text: str) -> dict[str, float]:
    out = {"lr": 1e-3, "clip": 0.0, "lambda_box": 1.0}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        out[key.strip()] = float(value)
    return out


def responsible_boxes(model, loss_fn, images, targets) -> list[tuple[int, object, Tensor, Tensor]]:
    """Every ground-truth box's responsible prediction, per head.

    Returns:
        One ``(head index, Assignment, iou, tw_th)`` per head: ``iou`` (Tensor[K]) of each
        responsible prediction's decoded box with its ground-truth box, ``tw_th`` (Tensor[K, 2])
        its raw width and height outputs.
    """
    with torch.no_grad():
        heads = model(images)
        assignments = loss_fn.assign(targets, [(h.shape[2], h.shape[3]) for h in heads])
        out = []
        for s, (head, a) in enumerate(zip(heads, assignments, strict=True)):
            raw = split_head(head, model.anchors.shape[1])
            boxes = decode_boxes(raw, model.anchors[s], model.strides[s])
            pred = boxes[a.batch, a.anchor, a.gy, a.gx]
            iou = box_iou(pred, targets[a.target, 2:]).diag()
            out.append((s, a, iou, raw[a.batch, a.anchor, a.gy, a.gx, 2:4]))
        return out


def responsible_iou(model, loss_fn, images, targets) -> float:
    """Mean IoU of the responsible predictions with their ground-truth boxes."""
    rows = responsible_boxes(model, loss_fn, images, targets)
    return float(torch.cat([iou for _, _, iou, _ in rows]).mean())


def run(variant: dict[str, float], data_yaml: Path, steps: int, size: int) -> dict[str, object]:
    torch.manual_seed(0)
    spec = load_data_yaml(data_yaml)
    records = read_split(spec, "train").records
    anchors = resolve_anchors("auto", records, arch="yolov3-tiny", img_size=size, seed=0)
    model = build_model(
        ModelConfig(arch="yolov3-tiny", num_classes=10, img_size=size, anchors=anchors)
    )
    dataset = DetectionDataset(records, img_size=size)
    images, targets, _ = collate([dataset[i] for i in range(len(dataset))])
    loss_fn = YoloLoss(
        model.anchors, model.strides, 10, LossConfig(lambda_box=variant["lambda_box"])
    )
    opt = torch.optim.Adam(model.parameters(), variant["lr"])
    curve = []
    steps_to_095 = None
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        loss, parts = loss_fn(model(images), targets, (size, size))
        opt.zero_grad()
        loss.backward()
        if variant["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), variant["clip"])
        opt.step()
        if step % 25 == 0:
            model.eval()
            iou = responsible_iou(model, loss_fn, images, targets)
            m = evaluate_model(model, records, spec.names, img_size=size).map50
            curve.append(
                {
                    "step": step,
                    **{k: round(float(v), 4) for k, v in parts.items()},
                    "resp_iou": round(iou, 4),
                    "map50": round(m, 4),
                }
            )
            print(variant, curve[-1], flush=True)
            if steps_to_095 is None and m >= 0.95:
                steps_to_095 = step
    return {
        "variant": variant,
        "steps_to_map50_0.95": steps_to_095,
        "curve": curve,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--variants", nargs="+", default=["lr=1e-3", "lr=1e-3,clip=10"])
    p.add_argument("--json", default="bench/results/overfit_probe.json")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = build_mnist_detection(
            Path(tmp) / "ds", n_train=4, n_test=1, size=a.size, progress=False
        )
        results = [run(parse_variant(v), data_yaml, a.steps, a.size) for v in a.variants]
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=2))
    for r in results:
        last = r["curve"][-1]
        print(
            f"{r['variant']}: steps to mAP@0.5 0.95: {r['steps_to_map50_0.95']}, "
            f"final resp IoU {last['resp_iou']}, final mAP@0.5 {last['map50']}"
        )


if __name__ == "__main__":
    main()
