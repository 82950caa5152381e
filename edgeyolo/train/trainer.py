"""The training loop: a small ``run_step`` plus hooks for evaluation, checkpoints and logging."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from edgeyolo.config import ModelConfig, TrainConfig, to_dict, train_config_from_dict
from edgeyolo.console import make_console
from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.records import ImageRecord, describe_problems
from edgeyolo.device import select_device
from edgeyolo.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from edgeyolo.evaluate.evaluator import evaluate_model
from edgeyolo.loss import YoloLoss
from edgeyolo.models import build_model
from edgeyolo.models.anchors import anchors_for_boxes
from edgeyolo.models.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from edgeyolo.models.darknet_weights import read_darknet
from edgeyolo.train.distributed import all_reduce_sums, init_distributed, shutdown
from edgeyolo.train.ema import make_ema
from edgeyolo.train.hooks import (
    EvalAndCheckpoint,
    FreezeBackbone,
    Hook,
    MetricsWriter,
    ProgressBar,
)
from edgeyolo.train.schedule import warmup_cosine


@dataclass(frozen=True)
class TrainResult:
    out: Path
    best: Path
    last: Path
    best_map50: float
    epochs: int
    wall_s: float
    images_per_s: float


def resolve_anchors(
    spec: str, records: list[ImageRecord], *, arch: str, img_size: int, seed: int
) -> tuple[tuple[float, float], ...] | None:
    """``default`` (darknet's), ``auto`` (k-means on the training boxes at ``img_size``), or a
    list ``"w,h w,h ..."`` in pixels."""
    spec = spec.strip()
    if spec == "default":
        return None
    if spec == "auto":
        wh = []
        for r in records:
            if len(r.boxes):
                s = img_size / max(r.width, r.height)
                wh.append((r.boxes[:, 2:] - r.boxes[:, :2]) * s)
        if not wh:
            raise DataError("no boxes in the training set: cannot compute anchors")
        return anchors_for_boxes(np.concatenate(wh), arch=arch, img_size=img_size, seed=seed)
    try:
        return tuple(
            (float(w), float(h))
            for w, h in (pair.split(",") for pair in spec.replace(";", " ").split())
        )
    except ValueError as e:
        raise ConfigError(f"--anchors {spec!r}: use 'auto', 'default' or 'w,h w,h ...'") from e


class Trainer:
    """Trains a YOLOv3 model as ``cfg`` says. ``train()`` runs it; hooks do everything else."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        hooks: list[Hook] | None = None,
        console: Console | None = None,
        progress: bool = True,
    ) -> None:
        self.console = console or make_console()
        self.out = Path(cfg.out)
        if resume:
            cfg = self._resume_config(cfg)
        self.cfg = cfg
        self.resume = resume
        self._setup()
        default_hooks: list[Hook] = []
        if self.dist.is_main:  # one writer of checkpoints, metrics and progress
            default_hooks += [ProgressBar()] if progress else []
            default_hooks += [
                EvalAndCheckpoint(cfg.eval_interval),
                MetricsWriter(self.out, tensorboard=cfg.tensorboard),
            ]
        if cfg.freeze_epochs > 0:
            default_hooks.append(FreezeBackbone(cfg.freeze_epochs))
        self.hooks = default_hooks + list(hooks or [])

    # ------------------------------------------------------------------ set-up
    def _resume_config(self, cfg: TrainConfig) -> TrainConfig:
        last = self.out / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"--resume: {last} does not exist; nothing to resume")
        ckpt = load_checkpoint(last)
        saved = train_config_from_dict(ckpt["train"])
        # The run is continued as it was configured; only the epoch count may be extended.
        return dataclasses.replace(saved, epochs=max(cfg.epochs, saved.epochs), out=cfg.out)

    def log(self, message: str) -> None:
        if getattr(self, "dist", None) is None or self.dist.is_main:
            self.console.print(message)

    def _setup(self) -> None:

        cfg = self.cfg
        probe = self.out / f".write-test.{os.getpid()}"  # one per process (DDP ranks)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out {self.out}: not writable ({e.strerror})") from e

        self.device = select_device(cfg.device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.batch % self.dist.world_size:
            raise ConfigError(
                f"--batch {cfg.batch} (the global batch) must divide by the "
                f"{self.dist.world_size} processes"
            )
        self.rank_batch = cfg.batch // self.dist.world_size
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

        spec = load_data_yaml(cfg.data)
        self.names = spec.names
        train_split = read_split(spec, "train", skip_bad=cfg.skip_bad)
        val_split = read_split(spec, "val", skip_bad=cfg.skip_bad)
        for name, split in (("train", train_split), ("val", val_split)):
            for line in describe_problems(name, split.problems):
                self.console.print(line, markup=False, highlight=False)
        self.train_records = train_split.records[: cfg.max_images]
        self.val_records = val_split.records[: cfg.max_images]
        if not self.train_records:
            raise DataError(f"{cfg.data}: the train split has no images")

        if self.resume:
            ckpt = load_checkpoint(self.out / "last.pt")
            anchors = ckpt["model_config"]["anchors"]
            anchors = None if anchors is None else tuple(tuple(a) for a in anchors)
        else:
            ckpt = None
            anchors = resolve_anchors(
                cfg.anchors,
                self.train_records,
                arch=cfg.model,
                img_size=cfg.img_size,
                seed=cfg.seed,
            )
        self.model_config = ModelConfig(
            arch=cfg.model,
            num_classes=len(spec.names),
            img_size=cfg.infer_size,
            anchors=anchors,
            names=tuple(spec.names),
        )
        model = build_model(self.model_config)
        if cfg.sync_bn:
            if not (self.dist.enabled and self.device.type == "cuda"):
                raise ConfigError("--sync-bn needs a multi-GPU (torchrun) run on CUDA")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if cfg.pretrained and not self.resume:  # on resume the weights come from last.pt
            report = read_darknet(cfg.pretrained, model)
            self.log(report.summary())
            if not report.skipped and not report.partial and cfg.anchors != "default":
                self.log(
                    "warning: the loaded heads were trained with darknet's anchors; "
                    "pass --anchors default to keep them"
                )
        self.use_cuda = self.device.type == "cuda"
        if self.use_cuda and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._check_free_space(model)
        self.loss_fn = YoloLoss(model.anchors, model.strides, model.num_classes, cfg.loss)

        self.dataset = DetectionDataset(
            self.train_records,
            img_size=cfg.img_size,
            augment=cfg.augment if cfg.augment.enabled else None,
        )
        per_rank = math.ceil(len(self.dataset) / self.dist.world_size)
        self.steps_per_epoch = math.ceil(per_rank / self.rank_batch)
        total = self.steps_per_epoch * cfg.epochs
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        params_decay, params_no_decay = [], []
        for n, p in model.named_parameters():
            (params_no_decay if p.ndim <= 1 or n.endswith(".bias") else params_decay).append(p)
        groups = [
            {"params": params_decay, "weight_decay": cfg.weight_decay},
            {"params": params_no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                groups, lr=cfg.lr_init, momentum=cfg.momentum, nesterov=True
            )
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr_init, betas=(cfg.momentum, 0.999))
        else:
            self.optimizer = torch.optim.Adam(groups, lr=cfg.lr_init)
        self.scheduler = warmup_cosine(
            self.optimizer, total_steps=total, warmup_steps=warmup, lr_end=cfg.lr_end
        )
        self.amp = cfg.amp and self.use_cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = make_ema(model, decay=cfg.ema_decay) if cfg.ema else None
        self.forward_model: torch.nn.Module = model
        if self.dist.enabled:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.freeze_epochs > 0,
            )
        self.epoch = 0
        self.start_epoch = 0
        self.global_step = 0
        self.best_map50 = -1.0
        self.epoch_metrics: dict[str, Any] = {}
        if ckpt is not None:
            self._load_state(ckpt)

    def _check_free_space(self, model: torch.nn.Module) -> None:
        """Fail before training when the disk cannot hold the checkpoints: each holds the weights,
        the EMA and Adam's two moments (~4x the parameters); best.pt holds the weights only; and
        one temp file of last.pt's size."""

        need = (4 + 1 + 4) * sum(p.numel() * p.element_size() for p in model.parameters())
        free = shutil.disk_usage(self.out).free
        if free < need:
            raise ConfigError(
                f"--out {self.out}: {free / 1e6:.0f} MB free, but checkpoints need about "
                f"{need / 1e6:.0f} MB; free space or choose another --out"
            )

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        state = ckpt["state"]
        src = self.out / "last.pt"
        load_state_into(self.model, state["model"], source=src)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.global_step = int(state["global_step"])
        self.best_map50 = float(ckpt["best_map50"])
        self.log(f"resuming from {src} at epoch {self.start_epoch + 1}/{self.cfg.epochs}")

    # ------------------------------------------------------------------ loop
    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _loader(self, epoch: int) -> DataLoader:

        # Each epoch's shuffling and augmentation are a function of (seed, epoch) alone, so a run
        # resumed from last.pt sees exactly what an uninterrupted run would have seen.
        torch.manual_seed(self.cfg.seed + 1000003 * epoch)
        g = torch.Generator().manual_seed(self.cfg.seed + epoch)
        sampler = None
        if self.dist.enabled:
            sampler = DistributedSampler(
                self.dataset,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=self.cfg.seed,
            )
            sampler.set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.rank_batch,
            shuffle=sampler is None,
            sampler=sampler,
            generator=g,
            num_workers=self.cfg.workers,
            collate_fn=collate,
            pin_memory=self.use_cuda,
            drop_last=False,
            persistent_workers=False,
        )

    def _multi_scale(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.cfg.multi_scale_range
        size = self.cfg.img_size
        # multiples of 32 inside [lo * size, hi * size] (at least one: size itself)
        first = max(32, math.ceil(size * lo / 32) * 32)
        choices = list(range(first, int(size * hi) // 32 * 32 + 1, 32)) or [size]
        new = random.choice(choices)
        if new == images.shape[-1]:
            return images, targets
        scale = new / images.shape[-1]
        images = F.interpolate(images, size=(new, new), mode="bilinear", align_corners=False)
        targets = targets.clone()
        targets[:, 2:] *= scale
        return images, targets

    def run_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """One optimisation step on one batch; returns the loss components and lr."""
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.cfg.multi_scale:
            images, targets = self._multi_scale(images, targets)
        if self.use_cuda and self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            heads = self.forward_model(images)
        loss, parts = self.loss_fn(heads, targets, (images.shape[-2], images.shape[-1]))
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                epoch=self.epoch + 1,
                step=self.global_step + 1,
                components={k: float(v) for k, v in parts.items()},
            )
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.global_step += 1
        return {
            "loss": float(loss.detach()),
            **{k: float(v) for k, v in parts.items()},
            "lr": lr,
            "batch_size": float(images.shape[0]),
        }

    def evaluate(self):  # -> MapResult

        return evaluate_model(
            self.eval_model,
            self.val_records,
            self.names,
            img_size=self.cfg.infer_size,
            batch=max(1, self.cfg.batch * 2),
            device=self.device,
            conf_thres=self.cfg.conf_thres,
            iou_thres=self.cfg.iou_thres,
        )

    def checkpoint_payload(self, *, resumable: bool = True) -> dict[str, Any]:
        """What a checkpoint holds. ``resumable=False`` gives an inference checkpoint (best.pt,
        the file people ship and export): the weights to run and how they were made, about the
        size of the fp32 weights; ``resumable=True`` (last.pt) adds the raw weights, the EMA and
        the optimizer, schedule and scaler states that ``--resume`` needs (~4x larger)."""
        payload = {
            "model_config": to_dict(self.model_config),
            "model": {k: v.detach().cpu() for k, v in self.eval_model.state_dict().items()},
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_map50": self.best_map50,
            "metrics": {k: v for k, v in self.epoch_metrics.items() if isinstance(v, (int, float))},
            "train": to_dict(self.cfg),
        }
        if not resumable:
            return payload
        return payload | {
            "state": {
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "global_step": self.global_step,
            },
        }

    def save(self, name: str, *, resumable: bool = True) -> Path:
        return save_checkpoint(self.out / name, self.checkpoint_payload(resumable=resumable))

    def train(self) -> TrainResult:
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"training {cfg.model} ({n_params / 1e6:.2f} M params, {len(self.names)} classes) on "
            f"{self.device} | {len(self.train_records)} train / {len(self.val_records)} val images "
            f"| {cfg.img_size} px (eval {cfg.infer_size} px), batch {cfg.batch}"
            + (
                f" (global: {self.dist.world_size} processes x {self.rank_batch})"
                if self.dist.enabled
                else ""
            )
            + ", "
            f"{cfg.epochs} epochs, {cfg.optimizer} "
            f"lr {cfg.lr_init:g}->{cfg.lr_end:g}, warmup {cfg.warmup_epochs:g} epochs"
            f"{', AMP' if self.amp else ''} | anchors "
            + " ".join(f"{w:.0f},{h:.0f}" for w, h in self.model_config.resolved_anchors)
        )
        for h in self.hooks:
            h.before_train(self)
        t_start = time.perf_counter()
        seen = 0
        for epoch in range(self.start_epoch, cfg.epochs):
            self.epoch = epoch
            for h in self.hooks:
                h.before_epoch(self)
            sums: dict[str, float] = {}
            t0 = time.perf_counter()
            n_img = 0
            for images, targets, _idx in self._loader(epoch):
                m = self.run_step(images, targets)
                n_img += int(m["batch_size"])
                for k in ("loss", "box", "obj", "noobj", "cls"):
                    sums[k] = sums.get(k, 0.0) + m[k] * m["batch_size"]
                for h in self.hooks:
                    h.after_step(self, m)
            dt = time.perf_counter() - t0
            if self.dist.enabled:  # the epoch's figures over all ranks
                total = all_reduce_sums({**sums, "n_img": float(n_img)}, self.dist)
                n_img = int(total.pop("n_img"))
                sums = total
            seen += n_img
            self.epoch_metrics = {
                "epoch": epoch + 1,
                **{f"train_{k}": v / max(1, n_img) for k, v in sums.items()},
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_s": dt,
                "images_per_s": n_img / dt,
            }
            for h in self.hooks:
                h.after_epoch(self)
            row = self.epoch_metrics
            val = (
                f" | val mAP@0.5 {row['val_map50']:.4f} mAP@0.5:0.95 {row['val_map50_95']:.4f}"
                if "val_map50" in row
                else ""
            )
            self.log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}, "
                f"{row['images_per_s']:.1f} img/s, {dt:.0f} s{val}"
            )
        for h in self.hooks:
            h.after_train(self)

        shutdown(self.dist)
        wall = time.perf_counter() - t_start
        return TrainResult(
            out=self.out,
            best=self.out / "best.pt",
            last=self.out / "last.pt",
            best_map50=self.best_map50,
            epochs=cfg.epochs,
            wall_s=wall,
            images_per_s=seen / max(wall, 1e-9),
        )


def train(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, console: Console | None = None
) -> TrainResult:
    """Train as ``cfg`` says and return where the checkpoints are and how good the best one is."""
    return Trainer(cfg, resume=resume, progress=progress, console=console).train()
