"""Accuracy and speed of every exported precision against the PyTorch model, on the MNIST-detection
test set.

    python bench/export_mnist.py --weights runs/bench-tiny-320e416/best.pt \\
        --json bench/results/export_mnist_cpu.json

For each calibration method (entropy, percentile, minmax) it runs the real `edgeyolo export`
pipeline (fp32, fp16, int8 with the accuracy gate); then the `edgeyolo bench` runner
(`edgeyolo.bench.runner.run_bench`) benches the checkpoint and every graph once, ONNX Runtime on
the CPU:

- mAP@0.5 and mAP@0.5:0.95 on the 200 test images (COCO setting: conf 0.001, IoU 0.5, 300 dets;
  the exported graphs are retargeted to those NMS settings, their networks untouched), beside
  the PyTorch checkpoint's own figures;
- box parity against PyTorch at the deployment thresholds (conf 0.25, IoU 0.45);
- batch-1 latency (the bench's whole report is written to OUT/bench/: bench.json, .md, .png).

The INT8 gate is held to a held-out set made from MNIST *train* digits (seed 7), so neither the
gate nor the calibration images (calib_data/, seed 11) see the test set.

A quick try (one method, 16 test images, 32 calibration images, 3 timed runs):

    python bench/export_mnist.py --weights runs/tiny/best.pt --methods minmax --max-images 16 \\
        --calib-images 32 --runs 3 --out /tmp/export_mnist --json /tmp/export_mnist.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.results import ArtifactResult
from edgeyolo.bench.runner import run_bench, write_report
from edgeyolo.config import ExportConfig
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.export.pipeline import export_model
from edgeyolo.metrics.parity import ParitySummary

#: The parity figures a row keeps (the bench's report has the rest).
PARITY_KEYS = [f.name for f in fields(ParitySummary)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--data", default="data/mnist/data.yaml")
    p.add_argument("--gate-data", default="data/mnist-gate")
    p.add_argument("--calib", default="calib_data")
    p.add_argument("--calib-images", type=int, default=256, help="calibration images used")
    p.add_argument("--out", default="export/bench")
    p.add_argument("--methods", default="entropy,percentile,minmax")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--max-images", type=int, default=None, help="score the first N test images")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per model")
    p.add_argument("--device", default="cpu", help="the checkpoint's device (ONNX Runtime: cpu)")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time each model in its own process",
    )
    p.add_argument("--json", default="bench/results/export_mnist_cpu.json")
    return p.parse_args()


def export_all(a: argparse.Namespace, gate_yaml: Path) -> tuple[dict[str, Path], dict, dict]:
    """Export once per calibration method; returns row name → ONNX file (every precision of the
    first export, the int8 graph of each), the int8 gates by method, and the versions."""
    files: dict[str, Path] = {}
    gates: dict[str, dict] = {}
    manifest: dict[str, Any] = {}
    for i, method in enumerate(a.methods.split(",")):
        out = Path(a.out) / method
        cfg = ExportConfig(
            weights=a.weights,
            out=str(out),
            img_size=a.img_size,
            fp16=i == 0,
            int8=True,
            calib=a.calib,
            calib_method=method,
            calib_images=a.calib_images,
            data=str(gate_yaml),
            val_split="train",
            int8_max_drop=a.max_drop,
        )
        manifest = export_model(cfg, progress=False)
        for art in manifest["artifacts"]:
            if art["kind"] != "onnx":
                continue
            if art["precision"] == "int8":
                files[f"int8-{method}"] = out / art["file"]
                gates[method] = {**art["gate"], "kept_fp32": art["kept_fp32"]}
            elif i == 0:
                files[art["precision"]] = out / art["file"]
    return files, gates, manifest.get("versions", {})


def row(art: ArtifactResult) -> dict[str, Any]:
    """An artifact's figures as this bench records them."""
    p = art.score.parity
    return {
        "map50": art.score.map50,
        "map50_95": art.score.map50_95,
        "p50_ms": art.latency_ms["p50"],
        "parity": None if p is None else {k: p[k] for k in PARITY_KEYS},
    }


def show(key: str, r: dict[str, Any]) -> None:
    par = r["parity"]
    line = f"{key:18s} mAP@0.5 {r['map50']:.4f}  mAP@0.5:0.95 {r['map50_95']:.4f}  "
    line += f"p50 {r['p50_ms']:.1f} ms  "
    if par is None:
        line += "(the reference)"
    elif par["matched_fraction"] is None:
        line += "no boxes on either side: nothing to compare"
    else:
        line += (
            f"matched {par['matched_fraction']:.3f}  mean IoU {par['mean_iou']:.4f}  "
            f"max|Δscore| {par['max_score_diff']:.3g}"
        )
    print(line, flush=True)


def main() -> None:
    a = parse_args()
    gate_yaml = Path(a.gate_data) / "data.yaml"
    if not gate_yaml.exists():
        build_mnist_detection(a.gate_data, n_train=100, n_test=1, seed=7, progress=False)
    files, gates, versions = export_all(a, gate_yaml)
    config = BenchConfig(
        weights=Path(a.weights),
        models=tuple(files.values()),
        data=Path(a.data),
        split="test",
        batch_sizes=(1,),
        warmup=a.warmup,
        runs=a.runs,
        isolate=a.isolate,
        max_images=a.max_images,
        device=a.device,
        torch_half=False,
        img_size=a.img_size,
    )
    command = " ".join(["python"] + sys.argv)
    result = run_bench(config, progress=sys.stderr.isatty(), command=command, log=print)
    paths = write_report(result, Path(a.out) / "bench")
    by_file = {art.spec.path: art for art in result.artifacts.values()}
    rows = {"pytorch": row(result.artifacts[result.reference])}
    rows.update({key: row(by_file[f]) for key, f in files.items() if f in by_file})
    for key, r in rows.items():
        show(key, r)
    settings = result.header["settings"]
    record = {
        "bench": "export_mnist",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": result.header["machine"],
        "weights": a.weights,
        "img_size": settings["img_size"],
        "test_images": settings["images"],
        "rows": rows,
        "gates": gates,
        "versions": versions,
        "report": str(paths["json"]),
        "failed": list(result.failed),
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2))
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "parity"} for k, v in rows.items()}
    print(json.dumps(summary, indent=1))
    if result.failed:
        sys.exit(f"{len(result.failed)} model(s) failed to run: see {paths['md']}")


if __name__ == "__main__":
    main()
