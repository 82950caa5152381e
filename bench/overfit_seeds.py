"""The 4-image overfit test's setting over many image draws, and why a draw stalls.

    python bench/overfit_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --steps 300 --lr 5e-4 --warmup 30
    python bench/overfit_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --steps 300 --lr 1e-3 --warmup 0 \
        --lambda-box 5          # the test's setting before 2026-11-26

For each seed: builds 4 real MNIST-detection images at 128 px (as ``tests/conftest.py``'s
``mnist_overfit_yaml``), trains yolov3-tiny on that one batch through the trainer's own
``run_step`` (one step per epoch, so ``--warmup`` counts steps) and prints mAP@0.5 on the same
images every 100 steps with the loss as a fraction of the first step's. At the end it lists
every responsible prediction whose decoded box has IoU < 0.5 with its ground truth, with its raw
``(tw, th)``: a stalled seed shows boxes at exp(+-4..10) times their anchor, where the GIoU
loss's gradient with respect to ``tw``/``th`` (about the box's IoU) has all but vanished.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from overfit_probe import responsible_boxes  # bench/, beside this script

from edgeyolo.config import AugmentConfig, LossConfig, TrainConfig
from edgeyolo.data.dataset import collate
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.train.trainer import Trainer


def stuck_boxes(trainer: Trainer, images: torch.Tensor, targets: torch.Tensor) -> list[dict]:
    """Responsible predictions whose decoded box has IoU < 0.5 with their ground truth."""
    model = trainer.model.eval()
    out = []
    for s, a, ious, tw_th in responsible_boxes(model, trainer.loss_fn, images, targets):
        for k in (ious < 0.5).nonzero().flatten().tolist():
            out.append(
                {
                    "head": s,
                    "image": int(a.batch[k]),
                    "class": int(targets[a.target[k], 1]),
                    "iou": round(float(ious[k]), 3),
                    "tw_th": [round(float(v), 2) for v in tw_th[k]],
                }
            )
    return out


def run(seed: int, args: argparse.Namespace) -> dict:
    root = args.work / f"seed{seed}"
    data = root / "data" / "data.yaml"
    if not data.is_file():
        data = build_mnist_detection(
            root / "data", n_train=4, n_val=0, n_test=1, size=128, seed=seed, progress=False
        )
        spec = yaml.safe_load(data.read_text())
        spec["val"] = "images/train"  # memorisation is scored on the training images
        data.write_text(yaml.safe_dump(spec))
    cfg = TrainConfig(
        data=str(data),
        out=str(root / "run"),
        img_size=128,
        epochs=args.steps,
        batch=4,
        workers=0,
        lr_init=args.lr,
        lr_end=args.lr / 10,
        warmup_epochs=args.warmup,
        ema=False,
        tensorboard=False,
        augment=AugmentConfig(enabled=False),
        loss=LossConfig(lambda_box=args.lambda_box),
    )
    torch.manual_seed(0)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    images, targets, _ = collate([trainer.dataset[i] for i in range(4)])
    first = trainer.run_step(images, targets)["loss"]
    curve = []
    for step in range(2, args.steps + 1):
        loss = trainer.run_step(images, targets)["loss"]
        if step % 100 == 0 or step == args.steps:
            curve.append([step, round(trainer.evaluate().map50, 3), round(loss / first, 3)])
    return {
        "seed": seed,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t0),
        "curve_step_map50_loss_ratio": curve,
        "stuck": stuck_boxes(trainer, images, targets),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=30.0, help="warmup steps")
    ap.add_argument("--lambda-box", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=Path("runs/overfit_seeds"))
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON lines")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        row = run(seed, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    passed = sum(r["curve_step_map50_loss_ratio"][-1][1] >= 0.9 for r in rows)
    print(f"{passed} of {len(rows)} seeds reach mAP@0.5 >= 0.9 at step {args.steps}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
