"""Does ``torch.compile`` pay for itself in a CPU training step? Eager against compiled, one run.

    python bench/compile_probe.py --model yolov3-tiny --img-size 320 --batch 16 --steps 20 \\
        --bf16 --json bench/results/issue22/compile_probe.json

Builds the model as the trainer does (channels-last; ``--bf16``: the forward under bfloat16
autocast), draws fixed random images and targets, and times training steps (forward, the YOLOv3
loss, backward, fused Adam) of the eager model and of ``torch.compile(model)``: the compiled
arm's first steps (compilation, one per input shape) are timed apart, so the figure is what
compiling costs and how many steps it takes to win it back. Steps alternate between the arms
in blocks so a slow stretch of the machine hits both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from edgeyolo.config import LossConfig, ModelConfig
from edgeyolo.cpuinfo import cpu_summary
from edgeyolo.loss import YoloLoss
from edgeyolo.models import build_model


def make_step(
    model: torch.nn.Module, loss_fn: YoloLoss, bf16: bool
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One training step of ``model`` (forward, loss, backward, fused Adam), as a function of a
    batch; returns the loss."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def step(images: torch.Tensor, targets: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            heads = model(images)
        loss, _ = loss_fn(heads, targets, (images.shape[-2], images.shape[-1]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="yolov3-tiny")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per arm, after warm-up")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--mode", default="default", help="torch.compile mode")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.manual_seed(0)
    s, b = a.img_size, a.batch
    images = torch.rand(b, 3, s, s).contiguous(memory_format=torch.channels_last)
    n = 4 * b  # four boxes an image: (image index, class, x1, y1, x2, y2) in pixels
    xy = torch.rand(n, 2) * (s - 40)
    index = torch.arange(b).repeat_interleave(4)[:, None].float()
    cls = torch.randint(0, 10, (n, 1)).float()
    targets = torch.cat([index, cls, xy, xy + 20 + torch.rand(n, 2) * 20], dim=1)
    arms = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=a.model, num_classes=10))
        model = model.to(memory_format=torch.channels_last).train()
        loss_fn = YoloLoss(model.anchors, model.strides, model.num_classes, LossConfig())
        if name == "compiled":
            model = torch.compile(model, mode=a.mode)  # type: ignore[assignment]
        arms[name] = make_step(model, loss_fn, a.bf16)
    t0 = time.perf_counter()
    arms["compiled"](images, targets)  # compiles forward and backward
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    arms["compiled"](images, targets)
    second_s = time.perf_counter() - t0
    arms["eager"](images, targets)  # warm-up
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    block = 5
    for _ in range(max(1, a.steps // block)):
        for name, step in arms.items():
            for _ in range(block):
                t0 = time.perf_counter()
                step(images, targets)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    gain = med["eager"] - med["compiled"]
    payback = (compile_s - med["compiled"] / 1e3) / (gain / 1e3) if gain > 0 else float("inf")
    print(f"CPU {cpu_summary()}; {a.model} batch {b} at {s} px, bf16 autocast {a.bf16}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"first compiled step (compiles): {compile_s:.1f} s; second {second_s * 1e3:.0f} ms")
    ratio = med["eager"] / med["compiled"]
    print(f"step median: eager {med['eager']:.0f} ms, compiled {med['compiled']:.0f} ms "
          f"({ratio:.2f}x); compiling paid back after {payback:.0f} steps")  # fmt: skip
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu_flags": cpu_summary(), "torch": torch.__version__,
            "args": vars(a) | {"json": str(a.json)},
            "compile_s": compile_s, "second_step_s": second_s, "median_ms": med,
            "steps_ms": {k: [x * 1e3 for x in v] for k, v in times.items()},
            "payback_steps": payback,
        }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
