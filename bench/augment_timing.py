"""CPU time per image of the training augmentation, stage by stage, on one thread.

    python bench/augment_timing.py --data data/mnist/data.yaml --images 300 --rounds 3 \\
        --json bench/results/issue22/augment_timing.json

Takes the first ``--images`` training images of the data set (decoded once, as ``--cache`` keeps
them) and times, per image, interleaved in ``--rounds`` rounds so that a slow stretch of the
machine hits every arm alike:

- ``resize + RandomAffine``: the letterbox (:class:`Letterbox`, one ``cv2.resize``) followed by
  torchvision's ``v2.RandomAffine`` (fill 114), the training pipeline's first two steps before
  :class:`LetterboxAffine`;
- ``LetterboxAffine``: the one ``cv2.warpAffine`` that replaced them;
- ``ColorJitter``, and the whole ``train_transforms`` of the settings given (the demo's by default).

Everything runs on one torch and one OpenCV thread, as in a loader worker. Prints a table and
writes the medians over rounds (ms per image) to ``--json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeyolo.config import AugmentConfig
from edgeyolo.cpuinfo import cpu_summary
from edgeyolo.data.dataset import DetectionDataset, to_v2
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.transforms import Letterbox, LetterboxAffine, train_transforms


def arms(size: int, aug: AugmentConfig) -> dict[str, Callable[..., Any]]:
    """The pipelines to time, by name; each takes ``(Image, {"boxes", "labels"})``."""
    fill = {tv_tensors.Image: 114, "others": None}
    old = v2.Compose(
        [
            Letterbox(size),
            v2.RandomAffine(
                degrees=aug.degrees, translate=(aug.translate,) * 2, scale=aug.scale, fill=fill
            ),
        ]
    )
    new = LetterboxAffine(size, degrees=aug.degrees, translate=aug.translate, scale=aug.scale)
    jitter = v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)
    return {
        "resize + RandomAffine": old,
        "LetterboxAffine": new,
        "ColorJitter": jitter,
        "train_transforms (whole)": train_transforms(size, aug),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="data/mnist/data.yaml")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    aug = AugmentConfig(scale=(0.75, 1.25), translate=0.1, brightness=0.2, contrast=0.2,
                        saturation=0.2, hue=0.0)  # fmt: skip
    records = read_split(load_data_yaml(a.data), "train").records[: a.images]
    ds = DetectionDataset(records, img_size=a.img_size, cache=True)
    samples = [
        to_v2(ds.load_image(i), r.boxes.copy(), r.classes.copy()) for i, r in enumerate(records)
    ]
    # ColorJitter works on what the geometry gives: 320-px letterboxed images.
    small = [Letterbox(a.img_size)(img, tgt) for img, tgt in samples]
    pipelines = arms(a.img_size, aug)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(a.rounds):
        for name, fn in pipelines.items():
            inputs = small if name == "ColorJitter" else samples
            t0 = time.perf_counter()
            for img, tgt in inputs:
                fn(img, tgt)
            times[name].append((time.perf_counter() - t0) / len(inputs) * 1e3)
    med = {name: statistics.median(t) for name, t in times.items()}
    base = med["resize + RandomAffine"]
    print(f"{len(samples)} images, {a.rounds} rounds, one thread; CPU {cpu_summary()}")
    print("| stage | ms per image (median of rounds) | rounds |")
    print("|---|---:|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} |")
    print(f"LetterboxAffine takes {med['LetterboxAffine'] / base:.2f}x resize + RandomAffine")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu_flags": cpu_summary(), "images": len(samples), "rounds": a.rounds,
            "img_size": a.img_size, "ms_per_image": med, "rounds_ms": times,
            "torch": torch.__version__, "opencv": cv2.__version__,
        }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
