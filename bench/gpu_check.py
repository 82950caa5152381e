"""GPU proof for a lent GPU machine (no TensorRT there): run by ``scripts/gpu_check.sh``.

Each check is independent and reports into ``OUT/gpu_check.json`` (and a line each on stdout):

1. ``environment``: versions, the GPU, the CPU flags.
2. ``decode_nms``: the project's decode + NMS (:mod:`edgeyolo.postprocess`) on CUDA tensors against
   the same head maps decoded on the CPU (box parity, per image), at deployment and COCO settings.
3. ``engine_loop``: :class:`edgeyolo.runtime.tensorrt.EngineRunner`'s pycuda loop (pinned buffers,
   a stream, events, async copies, one primary context) with a real CUDA kernel, compiled by pycuda,
   standing in for the engine behind a stand-in ``tensorrt`` module; outputs checked exactly.
4. ``torch_latency``: the PyTorch backend on CUDA, fp32 and fp16, batch 1 (p50/p90 ms).
5. ``train_speed``: CUDA training images/s of yolov3 at 416 with AMP on a synthetic set.

Without a CUDA device the CPU side (1, and 2's CPU reference) runs and the script stops with the
reason, exit code 2. Usage: ``python bench/gpu_check.py --out DIR [--checks NAME ...]``; a
second call adds its checks to the same ``gpu_check.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from edgeyolo.bench.latency import time_backend
from edgeyolo.config import DEFAULT_CONF_THRES, DEFAULT_IOU_THRES, ModelConfig, TrainConfig, to_dict
from edgeyolo.metrics.parity import parity_report
from edgeyolo.models import build_model
from edgeyolo.models.checkpoint import save_checkpoint
from edgeyolo.postprocess import decode_heads, postprocess
from edgeyolo.runtime.backends import open_backend
from edgeyolo.runtime.environment import environment
from edgeyolo.runtime.manifest import write_manifest
from edgeyolo.runtime.tensorrt import EngineRunner
from edgeyolo.train.trainer import train

K, SIZE, MAX_BATCH = 8, 64, 4  # the stand-in engine: K detections, 64 px input, batches 1..4


def busy_model(arch: str, size: int, classes: int = 80, seed: int = 0) -> torch.nn.Module:
    """A random model whose objectness biases are 0 and class logits spread: many candidates of
    many classes per image (the tests' busy model, at any size)."""
    torch.manual_seed(seed)
    net = build_model(ModelConfig(arch=arch, num_classes=classes, img_size=size))
    with torch.no_grad():
        for conv in net.head_convs:
            b = conv.bias.view(3, -1)
            b[:, 4] = 0.0
            b[:, 5:] = torch.randn_like(b[:, 5:])
    return net.eval()


def blocky_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``float32[n, 3, size, size]`` blocks with faint noise: varied, without exact score ties."""
    rng = np.random.default_rng(seed)
    x = np.kron(rng.random((n, 3, 8, 8), dtype=np.float32), np.ones((size // 8,) * 2, np.float32))
    return np.clip(x + rng.normal(0, 0.03, x.shape).astype(np.float32), 0, 1)


def check_decode_nms(cuda: bool) -> dict[str, Any]:
    """Decode + NMS of one set of head maps on the CPU and (when ``cuda``) on the GPU."""
    net = busy_model("yolov3", 416)
    with torch.no_grad():
        heads = net(torch.from_numpy(blocky_images(4, 416)))
    out: dict[str, Any] = {}
    for name, (conf, iou, max_det) in {
        "deploy": (DEFAULT_CONF_THRES, DEFAULT_IOU_THRES, 100),
        "coco": (0.001, 0.5, 300),
    }.items():
        cpu = _detect(heads, net, "cpu", conf, iou, max_det)
        row: dict[str, Any] = {"cpu_boxes": sum(len(d) for d in cpu)}
        if cuda:
            t0 = time.perf_counter()
            gpu = [d.to("cpu") for d in _detect(heads, net, "cuda", conf, iou, max_det)]
            row["gpu_ms_first_call"] = round((time.perf_counter() - t0) * 1e3, 2)
            rep = parity_report(cpu, gpu).to_dict()
            keep = ("matched_fraction", "mean_iou", "min_iou", "max_score_diff")
            row |= {"gpu_boxes": sum(len(d) for d in gpu), **{k: rep[k] for k in keep}}
            row["same_count_images"] = rep["same_count_images"]
            nms = (conf, iou, max_det)
            row["gpu_ms"] = _median_ms(lambda nms=nms: _detect(heads, net, "cuda", *nms))
        out[name] = row
    return out


def _detect(heads: list[torch.Tensor], net: torch.nn.Module, device: str, *nms: Any) -> list:
    conf, iou, max_det = nms
    hs = [h.to(device) for h in heads]
    boxes, obj, cls_prob = decode_heads(hs, net.anchors.to(device), net.strides)
    dets = postprocess(boxes, obj, cls_prob, conf_thres=conf, iou_thres=iou, max_det=max_det)
    if device == "cuda":
        torch.cuda.synchronize()
    return dets


def _median_ms(fn: Callable[[], object], runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 3)


KERNEL = r"""
__global__ void fake_engine(const float* x, int* num_dets, float* boxes, float* scores,
                            int* classes, int batch, int size, int k_out) {
    int b = blockIdx.x, k = threadIdx.x;
    if (b >= batch || k >= k_out) return;
    const float* img = x + (size_t)b * 3 * size * size;
    scores[b * k_out + k] = img[k];                                   // channel 0, row 0
    classes[b * k_out + k] = k;
    for (int j = 0; j < 4; ++j)                                       // channel 1, row 0
        boxes[(b * k_out + k) * 4 + j] = img[size * size + k * 4 + j] * 2.0f + 1.0f;
    if (k == 0) num_dets[b] = b % k_out + 1;
}
"""


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """What :data:`KERNEL` computes, in numpy."""
    b = len(x)
    return {
        "num_dets": (np.arange(b, dtype=np.int32) % K + 1)[:, None],
        "boxes": x[:, 1, 0, : K * 4].reshape(b, K, 4) * 2.0 + 1.0,
        "scores": x[:, 0, 0, :K].copy(),
        "classes": np.tile(np.arange(K, dtype=np.int32), (b, 1)),
    }


def stand_in_tensorrt(version: str) -> types.ModuleType:
    """A ``tensorrt`` module whose engine runs :data:`KERNEL` through pycuda: every call the
    runner makes is the real TensorRT API's name and signature; only the engine is a kernel."""
    from pycuda.compiler import SourceModule  # only where pycuda was built (needs nvcc)

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda t: t
    specs = {"images": ((3, SIZE, SIZE), np.float32), "num_dets": ((1,), np.int32)}
    specs |= {"boxes": ((K, 4), np.float32), "scores": ((K,), np.float32)}
    specs |= {"classes": ((K,), np.int32)}
    names = list(specs)

    class Context:
        def __init__(self) -> None:
            self.batch, self.addr, self.fn = 0, {}, None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.batch = int(shape[0])
            return 1 <= self.batch <= MAX_BATCH

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (self.batch, *specs[name][0])

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addr[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            # The legacy default stream: it orders itself with the runner's blocking stream.
            self.fn = self.fn or SourceModule(KERNEL).get_function("fake_engine")
            args = [np.uintp(self.addr[n]) for n in names]
            self.fn(*args, np.int32(self.batch), np.int32(SIZE), np.int32(K),
                    block=(K, 1, 1), grid=(self.batch, 1))  # fmt: skip
            return True

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, i: int) -> str:
            return names[i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "images" else "out"

        def get_tensor_dtype(self, name: str) -> type:
            return specs[name][1]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, *specs[name][0])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            return [(b, 3, SIZE, SIZE) for b in (1, 2, MAX_BATCH)]

        def create_execution_context(self) -> Context:
            return Context()

    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = type(
        "Runtime", (), {"__init__": lambda self, logger: None,
                        "deserialize_cuda_engine": lambda self, blob: Engine()},
    )  # fmt: skip
    return trt


def check_engine_loop(folder: Path) -> dict[str, Any]:
    """EngineRunner over the stand-in engine on this GPU: every batch size, outputs exact."""
    version = "10.3.0"
    sys.modules["tensorrt"] = stand_in_tensorrt(version)
    engine = folder / "model_fp32.engine"
    engine.write_bytes(b"stand-in plan")
    name = torch.cuda.get_device_name(0)
    cc = list(torch.cuda.get_device_capability(0))
    entry = {"kind": "engine", "precision": "fp32", "file": engine.name, "trt_version": version}
    entry |= {"sha256": hashlib.sha256(engine.read_bytes()).hexdigest(), "gpu_name": name}
    entry |= {"compute_capability": cc}
    write_manifest(folder, {"input": {}, "outputs": [], "classes": [], "artifacts": [entry]})
    x = blocky_images(MAX_BATCH, SIZE, seed=1)
    out: dict[str, Any] = {"batches": {}}
    with EngineRunner(engine) as runner:
        for b in range(1, MAX_BATCH + 1):
            got, want = runner.run(x[:b]), expected(x[:b])
            exact = all(np.array_equal(got[k], want[k]) for k in want)
            t = runner.last_times
            out["batches"][b] = {"exact": exact, "h2d_ms": t.h2d_ms, "compute_ms": t.compute_ms,
                                 "d2h_ms": t.d2h_ms, "bytes_h2d": t.bytes_h2d}  # fmt: skip
        out["profile"] = [runner.min_batch, runner.max_batch]
    out["all_exact"] = all(v["exact"] for v in out["batches"].values())
    return out


def check_torch_latency(folder: Path) -> dict[str, Any]:
    """The PyTorch backend (``open_backend`` on a checkpoint) on CUDA, batch 1, fp32 and fp16."""
    out: dict[str, Any] = {}
    for arch in ("yolov3-tiny", "yolov3"):
        net = busy_model(arch, 416)
        ckpt = folder / f"{arch}.pt"
        save_checkpoint(ckpt, {"model_config": to_dict(net.config), "model": net.state_dict()})
        x = blocky_images(1, 416)
        for half in (False, True):
            with open_backend(ckpt, device="cuda", half=half) as b:
                t = time_backend(b, x, warmup=20, runs=100)
            key = f"{arch} {'fp16' if half else 'fp32'}"
            out[key] = {"p50_ms": round(t.stats.p50, 3), "p90_ms": round(t.stats.p90, 3),
                        "stages_ms": {k: round(v, 3) for k, v in t.stages_ms.items()}}  # fmt: skip
    return out


def synthetic_set(root: Path, n: int = 320, size: int = 416) -> Path:
    """``n`` images of 1-4 coloured boxes on noise, YOLO folders, one class; returns data.yaml."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", 32)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 5))):
                w, h = rng.integers(20, 120, 2)
                x0, y0 = rng.integers(0, size - 120, 2)
                img[y0 : y0 + h, x0 : x0 + w] = rng.integers(120, 255, 3)
                lines.append(f"0 {(x0 + w / 2) / size} {(y0 + h / 2) / size} {w / size} {h / size}")
            cv2.imwrite(str(root / "images" / split / f"{i:04d}.jpg"), img)
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnames: ['box']\n")
    return yaml


def check_train_speed(folder: Path) -> dict[str, Any]:
    """yolov3 at 416, AMP, batch 32, 8 loader workers, 2 epochs on 320 synthetic images."""
    data = synthetic_set(folder / "data")
    cfg = TrainConfig(data=str(data), model="yolov3", img_size=416, epochs=2, batch=32,
                      workers=8, device="cuda", amp=True, out=str(folder / "run"),
                      eval_interval=10)  # fmt: skip
    train(cfg, progress=False)
    rows = [json.loads(r) for r in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    return {f"epoch {r['epoch']}": round(r["images_per_s"], 1) for r in rows}


CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "engine_loop": check_engine_loop,
    "torch_latency": check_torch_latency,
    "train_speed": check_train_speed,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    names = ["decode_nms", *CHECKS]
    ap.add_argument("--checks", nargs="*", default=names, choices=names, help="what to run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    report_path = args.out / "gpu_check.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["environment"] = environment()
    print(json.dumps(report["environment"]["machine"]), flush=True)

    def run(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # one check failing must not hide the others' results
            report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps({k: v for k, v in report[name].items() if k != 'trace'})}",
              flush=True)  # fmt: skip
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    if "decode_nms" in args.checks:
        run("decode_nms", lambda: check_decode_nms(cuda))
    if not cuda:
        report["stopped"] = "no CUDA device is visible (torch.cuda.is_available() is False)"
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"gpu_check: stopped: {report['stopped']}; the GPU checks did not run", flush=True)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in CHECKS.items():
            if name in args.checks:
                folder = Path(tmp) / name
                folder.mkdir()
                run(name, lambda fn=fn, folder=folder: fn(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
