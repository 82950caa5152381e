"""Time-to-accuracy of yolov3-tiny on the default MNIST-detection set (CPU or GPU).

    python bench/train_mnist.py --img-size 320 --epochs 20 --batch 16 --out runs/bench-tiny

Builds the data set if needed, trains with the given settings, evaluates best.pt and last.pt on
the 200 test images, and writes a JSON record (settings, machine, versions, wall time, images/s,
mAP) plus a plot of validation mAP against wall time. best.pt is selected on the data set's val
split (MNIST's own validation digits, since `edgeyolo data mnist` writes one); test is only
reported, for best.pt and last.pt alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from edgeyolo.config import AugmentConfig, TrainConfig
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.evaluate.evaluator import evaluate_checkpoint
from edgeyolo.train.trainer import train


def machine() -> dict[str, object]:
    """The machine and versions, as ``edgeyolo bench`` records them, plus torch's thread count."""
    from edgeyolo.runtime.environment import environment

    env = environment()
    return {**env["machine"], "torch_threads": torch.get_num_threads(), **env["versions"]}


def plot(metrics_jsonl: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    t, m50, m5095 = [], [], []
    elapsed = 0.0
    for r in rows:
        elapsed += r["epoch_s"]
        if "val_map50" in r:
            t.append(elapsed / 60)
            m50.append(r["val_map50"])
            m5095.append(r["val_map50_95"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, m50, "o-", label="mAP@0.5")
    ax.plot(t, m5095, "s-", label="mAP@0.5:0.95")
    ax.set_xlabel("training wall time (min, excl. evaluation)")
    ax.set_ylabel("test mAP")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("yolov3-tiny on MNIST-detection")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="data/mnist")
    p.add_argument("--out", default="runs/bench-tiny")
    p.add_argument("--model", default="yolov3-tiny")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--eval-img-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--eval-interval", type=int, default=2)
    p.add_argument("--json", default="bench/results/train_mnist.json")
    a = p.parse_args()

    data_yaml = Path(a.data) / "data.yaml"
    if not data_yaml.exists():
        build_mnist_detection(a.data)
    cfg = TrainConfig(
        data=str(data_yaml),
        out=a.out,
        model=a.model,
        img_size=a.img_size,
        eval_img_size=a.eval_img_size,
        epochs=a.epochs,
        batch=a.batch,
        lr_init=a.lr,
        warmup_epochs=a.warmup_epochs,
        workers=a.workers,
        device=a.device,
        eval_interval=a.eval_interval,
        augment=AugmentConfig(enabled=not a.no_augment),
    )
    result = train(cfg, progress=sys.stdout.isatty())
    best = evaluate_checkpoint(result.best, data_yaml, split="test", progress=False)
    last = evaluate_checkpoint(result.last, data_yaml, split="test", progress=False)
    record = {
        "bench": "train_mnist",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python"] + sys.argv),
        "machine": machine(),
        "settings": {k: v for k, v in vars(a).items() if k != "json"},
        "wall_s": round(result.wall_s, 1),
        "train_images_per_s": round(result.images_per_s, 3),
        "best": {"map50": best.map50, "map50_95": best.map50_95},
        "last": {"map50": last.map50, "map50_95": last.map50_95},
    }
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    plot(Path(a.out) / "metrics.jsonl", out.with_suffix(".png"))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
