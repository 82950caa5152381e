"""Accuracy of every exported precision against the PyTorch model, on the MNIST-detection test set.

    python bench/export_mnist.py --weights runs/bench-tiny-320e416/best.pt \\
        --json bench/results/export_mnist_cpu.json

For each calibration method (entropy, percentile, minmax) it runs the real `edgeyolo export`
pipeline (fp32, fp16, int8 with the accuracy gate), then scores with ONNX Runtime on CPU:

- mAP@0.5 and mAP@0.5:0.95 on the 200 test images (COCO setting: conf 0.001, IoU 0.5, 300 dets;
  the exported graphs are retargeted to those NMS settings, their networks untouched), beside
  the PyTorch checkpoint's own figures;
- box parity against PyTorch at the deployment thresholds (conf 0.25, IoU 0.45).

The INT8 gate is held to a held-out set made from MNIST *train* digits (seed 7), so neither the
gate nor the calibration images (calib_data/, seed 11) see the test set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeyolo.config import ExportConfig
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.evaluate.evaluator import evaluate_checkpoint, evaluate_onnx, predict_with
from edgeyolo.export.pipeline import export_model
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.models.checkpoint import load_model
from edgeyolo.postprocess import Detections, from_outputs
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch
from edgeyolo.runtime.thresholds import retarget_nms

sys.path.insert(0, str(Path(__file__).parent))
from train_mnist import machine  # noqa: E402


def letterboxed_test_images(records, img_size: int) -> list[np.ndarray]:
    """The test images exactly as every backend receives them, in batches of 8."""
    batches: list[np.ndarray] = []

    def grab(images: torch.Tensor):
        batches.append(images.numpy())
        return [Detections.empty() for _ in range(len(images))]

    predict_with(grab, records, img_size=img_size, batch=8)
    return batches


def onnx_dets(path: Path, batches: list[np.ndarray]):
    out = []
    with OnnxRuntimeSession(path) as s:
        for x in batches:
            o = s.run(x)
            out += from_outputs(o)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--data", default="data/mnist/data.yaml")
    p.add_argument("--gate-data", default="data/mnist-gate")
    p.add_argument("--calib", default="calib_data")
    p.add_argument("--out", default="export/bench")
    p.add_argument("--methods", default="entropy,percentile,minmax")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--json", default="bench/results/export_mnist_cpu.json")
    a = p.parse_args()

    gate_yaml = Path(a.gate_data) / "data.yaml"
    if not gate_yaml.exists():
        build_mnist_detection(a.gate_data, n_train=100, n_test=1, seed=7, progress=False)
    net, _ = load_model(a.weights)
    img_size = a.img_size or net.config.img_size
    spec = load_data_yaml(a.data)
    test = read_split(spec, "test").records
    names = net.config.class_names

    torch_map = evaluate_checkpoint(
        a.weights, a.data, split="test", img_size=img_size, progress=False
    )
    batches = letterboxed_test_images(test, img_size)
    with torch.no_grad():
        ref = []
        for x in batches:
            ref += detect_batch(net, torch.from_numpy(x), conf_thres=0.25, iou_thres=0.45)

    rows: dict[str, dict] = {
        "pytorch": {"map50": torch_map.map50, "map50_95": torch_map.map50_95, "parity": None}
    }
    gates: dict[str, dict] = {}
    for i, method in enumerate(a.methods.split(",")):
        out = Path(a.out) / method
        cfg = ExportConfig(
            weights=a.weights,
            out=str(out),
            img_size=img_size,
            fp16=i == 0,
            int8=True,
            calib=a.calib,
            calib_method=method,
            data=str(gate_yaml),
            val_split="train",
            int8_max_drop=a.max_drop,
        )
        manifest = export_model(cfg, progress=False)
        for art in manifest["artifacts"]:
            prec = art["precision"]
            key = prec if prec != "int8" else f"int8-{method}"
            if key in rows:
                continue
            path = out / art["file"]
            coco = retarget_nms(onnx.load(str(path)), conf_thres=0.001, iou_thres=0.5, max_det=300)
            m = evaluate_onnx(coco.SerializeToString(), test, names, img_size=img_size)
            par = parity_summary(ref, onnx_dets(path, batches)).to_dict()
            rows[key] = {"map50": m.map50, "map50_95": m.map50_95, "parity": par}
            if prec == "int8":
                gates[method] = {**art["gate"], "kept_fp32": art["kept_fp32"]}
            matched = par["matched_fraction"]
            print(
                f"{key:18s} mAP@0.5 {m.map50:.4f}  mAP@0.5:0.95 {m.map50_95:.4f}  "
                + (
                    "no boxes on either side: nothing to compare"
                    if matched is None
                    else f"matched {matched:.3f}  mean IoU {par['mean_iou']:.4f}  "
                    f"max|Δscore| {par['max_score_diff']:.3g}"
                ),
                flush=True,
            )

    record = {
        "bench": "export_mnist",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python"] + sys.argv),
        "machine": machine(),
        "weights": a.weights,
        "img_size": img_size,
        "test_images": len(test),
        "rows": rows,
        "gates": gates,
        "versions": manifest["versions"],
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2))
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "parity"} for k, v in rows.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
