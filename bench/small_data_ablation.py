"""Small-data ablation (issue 14 §3): which recipe change makes yolov3-tiny learn faster from
300 images.

    python bench/small_data_ablation.py --epochs 12 --seeds 0,1 --out bench/results/small_data

Builds, once, a fresh MNIST-detection set in ``data/mnist_small/`` (300 train / 100 val / 100
test images on the default 416-px canvas, seed 0, as ``edgeyolo data mnist --train 300 --val
100 --test 100`` writes it), then for every row and seed trains yolov3-tiny from scratch at
320 px with ``edgeyolo train``'s defaults as they were before issue 14 (``BEFORE_14``: batch 8,
2 warmup epochs, the stronger augmentation) plus that row's change, scores mAP@0.5 on val at 320
(the trainer's evaluation of the EMA weights after the last epoch; no epoch before it is
evaluated, so nothing is chosen on val) and writes ``OUT/ablation.json`` and ``OUT/ablation.md``
(row, seed, epochs, mAP@0.5, mAP@0.5:0.95, wall s, s/epoch, and per row the mean and range);
each run's checkpoints and metrics go to ``RUNS/<row>-s<seed>-e<epochs>/``.

Rows (``--rows``, comma-separated; see ``ROWS``): ``baseline`` (``BEFORE_14`` alone), one row
per change alone, ``defaults`` (today's defaults), ``all`` (every change together), and any
changes joined by ``+`` (e.g. ``batch4+light_aug+warmup_long``). Runs go one at a time (the
CPU's cores go to one run); a (row, seed, epochs) already in ``OUT/ablation.json`` is skipped unless
``--force``, so an interrupted ablation continues where it stopped. Rows can also run in
parallel, one process per (row, seed), with ``bench/small_data_parallel.sh``, which merges
their results with ``python bench/small_data_ablation.py --merge FOLDER... OUT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from edgeyolo.config import AugmentConfig, TrainConfig
from edgeyolo.data.mnist import build_mnist_detection
from edgeyolo.runtime.environment import environment
from edgeyolo.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
IMG_SIZE = 320
N_TRAIN, N_VAL, N_TEST = 300, 100, 100

Change = Callable[[TrainConfig], TrainConfig]

#: The ``edgeyolo train`` defaults before issue 14, the base every row changes (so the table stays
#: what it measured when the defaults move): batch 8, 2 warmup epochs, affine scale 0.75-1.25,
#: translate 0.1, colour jitter 0.2.
BEFORE_14 = dict(
    batch=8,
    warmup_epochs=2.0,
    augment=AugmentConfig(
        scale=(0.75, 1.25), translate=0.1, brightness=0.2, contrast=0.2, saturation=0.2
    ),
)


def _mosaic(cfg: TrainConfig) -> TrainConfig:
    """Mosaic on every sample, off for the last sixth of the epochs (at least one)."""
    close = max(1, cfg.epochs // 6)
    aug = dataclasses.replace(cfg.augment, mosaic=1.0, close_mosaic=close)
    return dataclasses.replace(cfg, augment=aug)


def _bias_prior(cfg: TrainConfig) -> TrainConfig:
    """The objectness prior for the training size (8 digits per 320-px image, not per 640)."""
    return dataclasses.replace(cfg, bias_prior_size=cfg.img_size)


def _warmup_short(cfg: TrainConfig) -> TrainConfig:
    """Half an epoch of warmup instead of two (a sixth of a 12-epoch run)."""
    return dataclasses.replace(cfg, warmup_epochs=0.5)


def _warmup_bias(cfg: TrainConfig) -> TrainConfig:
    """Biases warm down from 10x the lr (YOLOv5's warmup_bias_lr, scaled to Adam's lr)."""
    return dataclasses.replace(cfg, warmup_bias_lr=10 * cfg.lr_init)


def _lr2x(cfg: TrainConfig) -> TrainConfig:
    """Twice the default peak learning rate (2e-3)."""
    return dataclasses.replace(cfg, lr_init=2 * cfg.lr_init)


def _multi_scale(cfg: TrainConfig) -> TrainConfig:
    """A random input size per step, multiples of 32 in 0.5x..1.5x of 320."""
    return dataclasses.replace(cfg, multi_scale=True, multi_scale_range=(0.5, 1.5))


def _batch4(cfg: TrainConfig) -> TrainConfig:
    """Batch 4 instead of 8: twice the optimizer steps in the same epochs."""
    return dataclasses.replace(cfg, batch=4)


def _batch2(cfg: TrainConfig) -> TrainConfig:
    """Batch 2 instead of 8: four times the optimizer steps in the same epochs."""
    return dataclasses.replace(cfg, batch=2)


def _lr_half(cfg: TrainConfig) -> TrainConfig:
    """Half the default peak learning rate (5e-4)."""
    return dataclasses.replace(cfg, lr_init=cfg.lr_init / 2)


def _warmup_long(cfg: TrainConfig) -> TrainConfig:
    """Four epochs of warmup instead of two."""
    return dataclasses.replace(cfg, warmup_epochs=4.0)


def _no_ema(cfg: TrainConfig) -> TrainConfig:
    """No EMA: the raw weights are scored."""
    return dataclasses.replace(cfg, ema=False)


def _light_aug(cfg: TrainConfig) -> TrainConfig:
    """Lighter augmentation: scale 0.9-1.1, translate 0.05, no colour jitter."""
    aug = dataclasses.replace(
        cfg.augment,
        scale=(0.9, 1.1),
        translate=0.05,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
    )
    return dataclasses.replace(cfg, augment=aug)


def _no_aug(cfg: TrainConfig) -> TrainConfig:
    """No augmentation at all (letterboxed images as they are)."""
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, enabled=False))


def _close_aug(cfg: TrainConfig) -> TrainConfig:
    """Augmentation off for the last third of the epochs (YOLOX's no_aug_epochs)."""
    aug = dataclasses.replace(cfg.augment, close_aug=max(1, cfg.epochs // 3))
    return dataclasses.replace(cfg, augment=aug)


def _defaults(cfg: TrainConfig) -> TrainConfig:
    """Today's ``edgeyolo train`` defaults for batch, warmup and augmentation."""
    now = TrainConfig()
    return dataclasses.replace(
        cfg, batch=now.batch, warmup_epochs=now.warmup_epochs, augment=now.augment
    )


def _sgd(cfg: TrainConfig) -> TrainConfig:
    """YOLOv5's optimizer: SGD, Nesterov momentum 0.937, lr 0.01, weight decay 5e-4."""
    return dataclasses.replace(cfg, optimizer="sgd", lr_init=0.01, weight_decay=5e-4)


CHANGES: dict[str, Change] = {
    "mosaic": _mosaic,
    "bias_prior": _bias_prior,
    "warmup_short": _warmup_short,
    "warmup_bias": _warmup_bias,
    "lr2x": _lr2x,
    "multi_scale": _multi_scale,
    "batch4": _batch4,
    "batch2": _batch2,
    "lr_half": _lr_half,
    "warmup_long": _warmup_long,
    "no_ema": _no_ema,
    "light_aug": _light_aug,
    "no_aug": _no_aug,
    "sgd": _sgd,
    "close_aug": _close_aug,
    "defaults": _defaults,
}


def _all(cfg: TrainConfig) -> TrainConfig:
    for change in CHANGES.values():
        cfg = change(cfg)
    return cfg


ROWS: dict[str, Change] = {"baseline": lambda cfg: cfg, **CHANGES, "all": _all}


def change_for(row: str) -> Change:
    """The row's change: a name in ``ROWS``, or changes joined by ``+`` (applied in order)."""
    parts = row.split("+")
    unknown = [p for p in parts if p not in ROWS]
    if unknown:
        raise KeyError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}, or join them by +")

    def combined(cfg: TrainConfig) -> TrainConfig:
        for part in parts:
            cfg = ROWS[part](cfg)
        return cfg

    return combined


def describe(row: str) -> str:
    """The row's change in words (its function's docstring; a ``+`` row: its parts')."""
    if "+" in row:
        return "; ".join(describe(part).rstrip(".") for part in row.split("+"))
    if row == "baseline":
        return "edgeyolo train defaults before issue 14"
    if row == "all":
        return "every change above together"
    return " ".join((ROWS[row].__doc__ or row).split())


def build_data(folder: Path) -> Path:
    """``folder/data.yaml`` of the 300 / 100 / 100 set, built on first use."""
    data_yaml = folder / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    return build_mnist_detection(
        folder, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, seed=0, progress=False
    )


def check_data(data_yaml: Path) -> str:
    """The val folder of ``data_yaml``; SystemExit unless it holds 300 train / 100 val images."""
    spec = yaml.safe_load(data_yaml.read_text())
    root = data_yaml.parent / spec.get("path", ".")
    counts = {s: len(list((root / spec[s]).glob("*.jpg"))) for s in ("train", "val")}
    if counts != {"train": N_TRAIN, "val": N_VAL}:
        raise SystemExit(
            f"{data_yaml}: {counts['train']} train / {counts['val']} val images, not "
            f"{N_TRAIN} / {N_VAL}; delete the folder to rebuild it"
        )
    return str(spec["val"])


def run_one(row: str, seed: int, a: argparse.Namespace, data_yaml: Path) -> dict[str, object]:
    """Train one (row, seed) and return its table row."""
    base = TrainConfig(
        data=str(data_yaml),
        out=str(Path(a.runs) / f"{row}-s{seed}-e{a.epochs}"),
        img_size=IMG_SIZE,
        epochs=a.epochs,
        seed=seed,
        device=a.device,
        workers=a.workers,
        eval_interval=a.epochs,  # the last epoch only: nothing is chosen on val
        tensorboard=False,
        **BEFORE_14,
    )
    cfg = change_for(row)(base)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    wall = time.perf_counter() - t0
    metrics = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    return {
        "row": row,
        "seed": seed,
        "epochs": a.epochs,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "map50": round(result.best_map50, 4),
        "map50_95": round(float(metrics[-1]["val_map50_95"]), 4),
        "wall_s": round(wall, 1),
        "epoch_s": round(statistics.mean(m["epoch_s"] for m in metrics), 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "config": dataclasses.asdict(cfg),
    }


def markdown(runs: list[dict[str, object]]) -> str:
    """The per-run table and the per-row summary (mean and range of mAP@0.5 over seeds)."""
    lines = [
        "| row | change | seed | epochs | val mAP@0.5 | val mAP@0.5:0.95 | wall s | s/epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['row']} | {describe(str(r['row']))} | {r['seed']} | {r['epochs']} | "
            f"{r['map50']:.3f} | {r['map50_95']:.3f} | {r['wall_s']:.0f} | {r['epoch_s']:.1f} |"
        )
    lines += [
        "",
        "| row | epochs | seeds | mean mAP@0.5 | min | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        groups.setdefault((str(r["row"]), int(r["epochs"])), []).append(float(r["map50"]))
    for (row, epochs), maps in groups.items():
        lines.append(
            f"| {row} | {epochs} | {len(maps)} | {statistics.mean(maps):.3f} | "
            f"{min(maps):.3f} | {max(maps):.3f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated, of: {', '.join(ROWS)}; a+b is a and b together",
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--workers", type=int, default=1, help="data loader processes per run")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "mnist_small"))
    p.add_argument("--out", default="bench/results/small_data", help="ablation.json and .md")
    p.add_argument("--runs", default="runs/small_data", help="the runs' checkpoints and metrics")
    p.add_argument("--force", action="store_true", help="re-run (row, seed, epochs) already done")
    p.add_argument(
        "--data-only",
        action="store_true",
        help="build the data set (if absent) and stop: jobs started in parallel then find it",
    )
    a = p.parse_args()
    for row in a.rows.split(","):
        try:
            change_for(row)
        except KeyError as e:
            p.error(str(e.args[0]))
    return a


def merge(sources: list[Path], out: Path) -> None:
    """One ``out/ablation.{json,md}`` from the ``ablation.json`` of runs made in parallel (one
    folder per job, e.g. by ``bench/small_data_parallel.sh``); each run keeps the command,
    machine and versions of its job."""
    runs = []
    for src in sources:
        rec = json.loads((src / "ablation.json").read_text())
        meta = {k: rec[k] for k in ("date", "command", "machine", "versions") if k in rec}
        runs += [{**r, "job": meta} for r in rec["runs"]]
    runs.sort(key=lambda r: (r["row"].count("+"), r["row"], r["seed"], r["epochs"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"runs": runs}, indent=2))
    (out / "ablation.md").write_text(markdown(runs))
    print(f"merged {len(runs)} runs into {out / 'ablation.json'} and {out / 'ablation.md'}")


def main() -> None:
    if sys.argv[1:2] == ["--merge"]:
        *sources, out = sys.argv[2:]
        merge([Path(s) for s in sources], Path(out))
        return
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data_yaml = build_data(Path(a.data_dir))
    val_dir = check_data(data_yaml)
    if a.data_only:
        print(f"data set: {data_yaml}")
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "ablation.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"runs": []}
    env = environment()
    record.update(
        bench="small_data_ablation",
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python", *sys.argv]),
        machine={**env["machine"], "torch_threads": torch.get_num_threads()},
        versions={**env["versions"], "torch": torch.__version__},
        data={"yaml": str(data_yaml), "train": N_TRAIN, "val": N_VAL, "val_dir": val_dir},
    )
    for row in a.rows.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            key = (row, seed, a.epochs)
            done = [r for r in record["runs"] if (r["row"], r["seed"], r["epochs"]) == key]
            if done and not a.force:
                print(f"{row} seed {seed}: done before (mAP@0.5 {done[0]['map50']:.3f}), skipped")
                continue
            result = run_one(row, seed, a, data_yaml)
            record["runs"] = [r for r in record["runs"] if r not in done] + [result]
            record_path.write_text(json.dumps(record, indent=2))
            (out / "ablation.md").write_text(markdown(record["runs"]))
            print(
                f"{row} seed {seed}: val mAP@0.5 {result['map50']:.3f} in {result['wall_s']:.0f} s "
                f"({result['epoch_s']:.1f} s/epoch, load {result['load_before']})",
                flush=True,
            )
    (out / "ablation.md").write_text(markdown(record["runs"]))
    print(f"wrote {record_path} and {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
