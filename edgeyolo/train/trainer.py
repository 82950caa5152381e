"""The training loop: overridable ``build_*`` set-up steps, a small ``run_step``, and hooks for
checkpoints, metrics and progress that receive each epoch's result as data."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from edgeyolo.config import ModelConfig, TrainConfig, to_dict, train_config_from_dict
from edgeyolo.console import make_console
from edgeyolo.cpuinfo import cpu_flags
from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.data.records import ImageRecord, describe_problems
from edgeyolo.device import select_device
from edgeyolo.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from edgeyolo.evaluate.evaluator import evaluate_model
from edgeyolo.loss import COMPONENTS, YoloLoss
from edgeyolo.metrics.coco_map import MapResult
from edgeyolo.models import build_model as build_yolo
from edgeyolo.models.anchors import anchors_for_boxes
from edgeyolo.models.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from edgeyolo.models.darknet_weights import read_darknet
from edgeyolo.models.yolov3 import PRIOR_IMG_SIZE
from edgeyolo.train.distributed import all_reduce_sums, init_distributed, shutdown
from edgeyolo.train.ema import make_ema
from edgeyolo.train.hooks import (
    Checkpointer,
    EpochResult,
    FreezeBackbone,
    Hook,
    MetricsWriter,
    ProgressBar,
)
from edgeyolo.train.schedule import (
    augmenting,
    mosaic_probability,
    multi_scale_sizes,
    warmup_cosine,
)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    best: Path
    last: Path
    best_map50: float
    epochs: int
    wall_s: float
    images_per_s: float
    #: this process reports the run: rank 0 of a DDP job, or the only process. Other ranks end
    #: with ``best_map50`` -1 (they never evaluate) and must stay silent.
    is_main: bool = True


def cpu_bf16_fast() -> bool:
    """Whether bfloat16 is native on this CPU for oneDNN: the CPU has AMX-BF16 or AVX512-BF16
    and oneDNN may use it (``ONEDNN_MAX_CPU_ISA`` can cap it below, e.g. ``AVX2``). On AVX2 or
    plain AVX-512 bfloat16 is emulated and slower than float32, so ``--cpu-bf16 auto`` keeps
    float32 there."""
    flags = cpu_flags()
    if not ({"amx_bf16", "avx512_bf16"} & flags) or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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


@dataclass(frozen=True)
class TrainData:
    """What :meth:`Trainer.build_data` returns.

    Attributes:
        names: class names; their number is the model's ``C``.
        train_records: the training images and boxes (at most ``max_images``).
        val_records: the validation images and boxes (at most ``max_images``).
        dataset: the training samples (letterboxed, augmented as configured), in the order of
            ``train_records``; each epoch's loader shuffles it.
    """

    names: Sequence[str]
    train_records: list[ImageRecord]
    val_records: list[ImageRecord]
    dataset: DetectionDataset


class Trainer:
    """Trains a YOLOv3 model as ``cfg`` says: ``train()`` runs it, ``run_step`` does one step,
    hooks (:mod:`edgeyolo.train.hooks`) write checkpoints, metrics and progress.

    Set-up runs these steps in order. The ``build_*`` ones return what they build and are the
    places for a subclass to change the recipe (as detectron2's ``DefaultTrainer``); each is
    called once, from ``__init__``, and may read what the earlier steps set on ``self``:

    1. check that ``cfg.out`` is writable; pick the device, join DDP; seed torch, random, numpy;
    2. :meth:`build_data` -> :class:`TrainData` (sets ``names``, ``train_records``,
       ``val_records``, ``dataset``);
    3. anchors (from ``last.pt`` on resume, else ``cfg.anchors``) -> ``model_config``;
    4. :meth:`build_model` -> the bare model (sets ``model`` once the trainer has converted it
       to SyncBatchNorm if asked, moved it to the device, loaded ``cfg.pretrained`` and made it
       channels-last if asked, on the CPU too); then the free-space check;
    5. :meth:`build_loss` -> ``loss_fn``;
    6. :meth:`build_optimizer` -> ``optimizer``, then :meth:`build_schedule` -> ``scheduler``
       (``steps_per_epoch`` is set before), and the AMP grad scaler;
    7. :meth:`build_ema` -> ``ema`` (or None), then the DDP wrapper ``forward_model``;
    8. on resume, every state above is loaded from ``last.pt``.

    Each epoch the trainer itself evaluates (every ``cfg.eval_interval`` epochs and at the last,
    on the main process), updates ``best_map50``, and hands the finished
    :class:`~edgeyolo.train.hooks.EpochResult` to every hook's ``after_epoch``.
    """

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
            default_hooks += [Checkpointer(), MetricsWriter(self.out, tensorboard=cfg.tensorboard)]
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
        """The set-up steps of the class docstring, in order."""
        self._check_out_dir()
        self._setup_device()
        self._seed()
        data = self.build_data()
        self.names = data.names
        self.train_records = data.train_records
        self.val_records = data.val_records
        self.dataset = data.dataset
        ckpt = load_checkpoint(self.out / "last.pt") if self.resume else None
        self.model_config = self._make_model_config(ckpt)
        self.model = self._prepare_model(self.build_model())
        self._check_free_space(self.model)
        self.loss_fn = self.build_loss(self.model)
        per_rank = math.ceil(len(self.dataset) / self.dist.world_size)
        self.steps_per_epoch = math.ceil(per_rank / self.rank_batch)
        self.optimizer = self.build_optimizer(self.model)
        self.scheduler = self.build_schedule(self.optimizer)
        self.amp, self.amp_dtype = self._autocast()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.use_cuda)
        self.ema = self.build_ema(self.model)
        self.forward_model = self._wrap_distributed(self.model)
        self.epoch = 0
        self.start_epoch = 0
        self.global_step = 0
        self.best_map50 = -1.0
        self.last_epoch: EpochResult | None = None
        if ckpt is not None:
            self._load_state(ckpt)

    def _autocast(self) -> tuple[bool, torch.dtype]:
        """Whether the training forward runs under autocast, and in which dtype: float16 on
        CUDA (``cfg.amp``); bfloat16 on the CPU as ``cfg.cpu_bf16`` says (``auto``: where
        :func:`cpu_bf16_fast`)."""
        if self.use_cuda:
            return self.cfg.amp, torch.float16
        if self.device.type != "cpu":
            return False, torch.float32
        mode = self.cfg.cpu_bf16
        return mode == "on" or (mode == "auto" and cpu_bf16_fast()), torch.bfloat16

    def _check_out_dir(self) -> None:
        """``ConfigError`` unless ``cfg.out`` can be created and written (by this process)."""
        probe = self.out / f".write-test.{os.getpid()}"  # one per process (DDP ranks)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out {self.out}: not writable ({e.strerror})") from e

    def _setup_device(self) -> None:
        """Sets ``device``, ``dist`` (DDP membership), ``rank_batch`` and ``use_cuda``."""
        cfg = self.cfg
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
        self.use_cuda = self.device.type == "cuda"

    def _seed(self) -> None:
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)

    def build_data(self) -> TrainData:
        """The class names, train and val records of ``cfg.data`` (problems printed, bad
        files skipped if ``cfg.skip_bad``), and the training dataset over the train records."""
        cfg = self.cfg
        spec = load_data_yaml(cfg.data)
        train_split = read_split(spec, "train", skip_bad=cfg.skip_bad)
        val_split = read_split(spec, "val", skip_bad=cfg.skip_bad)
        for name, split in (("train", train_split), ("val", val_split)):
            for line in describe_problems(name, split.problems):
                self.console.print(line, markup=False, highlight=False)
        train_records = train_split.records[: cfg.max_images]
        val_records = val_split.records[: cfg.max_images]
        if not train_records:
            raise DataError(f"{cfg.data}: the train split has no images")
        dataset = DetectionDataset(
            train_records,
            img_size=cfg.img_size,
            augment=cfg.augment if cfg.augment.enabled else None,
        )
        if cfg.cache:  # before any loader worker is forked: they share the decoded images
            held = dataset.preload()
            self.log(f"cached {len(dataset)} decoded training images ({held / 1e6:.0f} MB)")
        return TrainData(spec.names, train_records, val_records, dataset)

    def _make_model_config(self, ckpt: dict[str, Any] | None) -> ModelConfig:
        """The model's config: its anchors come from ``ckpt`` (resume) or ``cfg.anchors``."""
        cfg = self.cfg
        if ckpt is not None:
            anchors = ckpt["model_config"]["anchors"]
            anchors = None if anchors is None else tuple(tuple(a) for a in anchors)
        else:
            anchors = resolve_anchors(
                cfg.anchors,
                self.train_records,
                arch=cfg.model,
                img_size=cfg.img_size,
                seed=cfg.seed,
            )
        return ModelConfig(
            arch=cfg.model,
            num_classes=len(self.names),
            img_size=cfg.infer_size,
            anchors=anchors,
            names=tuple(self.names),
        )

    def build_model(self) -> torch.nn.Module:
        """The bare model of ``model_config``, on the CPU, freshly initialised (from torch's
        global generator, seeded by then). An override must return a module with the
        attributes the loss and hooks read: ``anchors``, ``strides``, ``num_classes`` and a
        ``backbone`` submodule (for ``freeze_epochs``), as :func:`edgeyolo.models.build_model`'s
        models have. The heads' bias prior is for ``cfg.bias_prior_size`` (0: none)."""
        model = build_yolo(self.model_config)
        if self.cfg.bias_prior_size != PRIOR_IMG_SIZE:
            model.set_bias_prior(self.cfg.bias_prior_size)
        return model

    def _prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """SyncBatchNorm (``cfg.sync_bn``), the device, ``cfg.pretrained`` weights (not on
        resume: those come from last.pt) and channels-last memory (``cfg.channels_last``; on the
        CPU too, where oneDNN's convolutions run faster on it); sets ``channels_last``."""
        cfg = self.cfg
        if cfg.sync_bn:
            if not (self.dist.enabled and self.device.type == "cuda"):
                raise ConfigError("--sync-bn needs a multi-GPU (torchrun) run on CUDA")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if cfg.pretrained and not self.resume:
            report = read_darknet(cfg.pretrained, model)
            self.log(report.summary())
            if not report.skipped and not report.partial and cfg.anchors != "default":
                self.log(
                    "warning: the loaded heads were trained with darknet's anchors; "
                    "pass --anchors default to keep them"
                )
        self.channels_last = cfg.channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def build_loss(self, model: torch.nn.Module) -> YoloLoss:
        """The YOLOv3 loss for ``model``'s anchors, strides and classes (``cfg.loss``)."""
        return YoloLoss(model.anchors, model.strides, model.num_classes, self.cfg.loss)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """``cfg.optimizer`` (SGD with Nesterov momentum, AdamW or Adam; the fused kernels on
        the CPU) at ``cfg.lr_init``, in two groups: weights with ``cfg.weight_decay``, biases
        and norm parameters without. With ``cfg.warmup_bias_lr`` the biases are a third group
        (last), whose warmup starts there."""
        cfg = self.cfg
        params_decay, params_no_decay, biases = [], [], []
        for n, p in model.named_parameters():
            if cfg.warmup_bias_lr > 0 and n.endswith(".bias"):
                biases.append(p)
            else:
                no_decay = p.ndim <= 1 or n.endswith(".bias")
                (params_no_decay if no_decay else params_decay).append(p)
        groups = [
            {"params": params_decay, "weight_decay": cfg.weight_decay},
            {"params": params_no_decay, "weight_decay": 0.0},
        ]
        if biases:
            groups.append({"params": biases, "weight_decay": 0.0})
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr_init, momentum=cfg.momentum, nesterov=True)
        # torch's fused CPU kernel: one pass over each tensor instead of foreach's several
        # (Adam's step on yolov3-tiny: 7 against 19 ms, bench/RESULTS.md, issue 22)
        fused = {"fused": True} if self.device.type == "cpu" else {}
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr_init, betas=(cfg.momentum, 0.999), **fused)
        return torch.optim.Adam(groups, lr=cfg.lr_init, **fused)

    def build_schedule(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        """Linear warmup over ``cfg.warmup_epochs``, then cosine decay to ``cfg.lr_end``,
        stepped once per step for ``steps_per_epoch * cfg.epochs`` steps; the bias group (if
        :meth:`build_optimizer` made one) warms up from ``cfg.warmup_bias_lr``."""
        total = self.steps_per_epoch * self.cfg.epochs
        warmup = round(self.cfg.warmup_epochs * self.steps_per_epoch)
        starts = {2: self.cfg.warmup_bias_lr} if len(optimizer.param_groups) == 3 else None
        return warmup_cosine(
            optimizer,
            total_steps=total,
            warmup_steps=warmup,
            lr_end=self.cfg.lr_end,
            warmup_start=starts,
        )

    def build_ema(self, model: torch.nn.Module) -> AveragedModel | None:
        """The EMA of ``model``'s weights (``cfg.ema``, ``cfg.ema_decay``), or None. When there
        is one, it is what is evaluated and what best.pt holds."""
        return make_ema(model, decay=self.cfg.ema_decay) if self.cfg.ema else None

    def _wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` itself, or under DDP its ``DistributedDataParallel`` wrapper."""
        if not self.dist.enabled:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
            find_unused_parameters=self.cfg.freeze_epochs > 0,
        )

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
        """The epoch's loader; sets the dataset's mosaic probability for ``epoch`` (0 in the last
        ``cfg.augment.close_mosaic`` epochs) and whether it augments (not in the last
        ``cfg.augment.close_aug``)."""
        if isinstance(self.dataset, DetectionDataset):
            self.dataset.mosaic = mosaic_probability(self.cfg.augment, epoch, self.cfg.epochs)
            self.dataset.augmenting = augmenting(self.cfg.augment, epoch, self.cfg.epochs)
        # Each epoch's shuffling and augmentation (multi-scale sizes too) are a function of
        # (seed, epoch) alone, so a run resumed from last.pt sees exactly what an uninterrupted
        # run would have seen.
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
        """``images`` and ``targets`` resized to a size drawn (torch's generator) from
        :func:`~edgeyolo.train.schedule.multi_scale_sizes` of ``cfg.multi_scale_range``."""
        choices = multi_scale_sizes(self.cfg.img_size, self.cfg.multi_scale_range)
        new = choices[int(torch.randint(len(choices), ()))]
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
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
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

    def evaluate(self) -> MapResult:
        """COCO mAP of :attr:`eval_model` (the EMA if any) on the val records."""
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
        row = self.last_epoch.row() if self.last_epoch is not None else {}
        payload = {
            "model_config": to_dict(self.model_config),
            "model": {k: v.detach().cpu() for k, v in self.eval_model.state_dict().items()},
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_map50": self.best_map50,
            "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
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
        """Runs the epochs from ``start_epoch`` to ``cfg.epochs``, calling the hooks."""
        self.log(self._describe())
        for h in self.hooks:
            h.before_train(self)
        t_start = time.perf_counter()
        seen = 0
        for epoch in range(self.start_epoch, self.cfg.epochs):
            self.epoch = epoch
            for h in self.hooks:
                h.before_epoch(self)
            sums, n_img, dt = self._run_epoch(epoch)
            result = self._finish_epoch(epoch, sums, n_img, dt)
            seen += result.images
            self.last_epoch = result
            for h in self.hooks:
                h.after_epoch(self, result)
            self.log(self._epoch_line(result))
        for h in self.hooks:
            h.after_train(self)

        shutdown(self.dist)
        wall = time.perf_counter() - t_start
        return TrainResult(
            out=self.out,
            best=self.out / "best.pt",
            last=self.out / "last.pt",
            best_map50=self.best_map50,
            epochs=self.cfg.epochs,
            wall_s=wall,
            images_per_s=seen / max(wall, 1e-9),
            is_main=self.dist.is_main,
        )

    def _run_epoch(self, epoch: int) -> tuple[dict[str, float], int, float]:
        """The steps of one epoch: ``(sums, images, seconds)``, where ``sums`` holds the loss
        and each :data:`~edgeyolo.loss.COMPONENTS` entry summed over images (all ranks)."""
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        n_img = 0
        for images, targets, _idx in self._loader(epoch):
            m = self.run_step(images, targets)
            n_img += int(m["batch_size"])
            for k in ("loss", *COMPONENTS):
                sums[k] = sums.get(k, 0.0) + m[k] * m["batch_size"]
            for h in self.hooks:
                h.after_step(self, m)
        dt = time.perf_counter() - t0
        if self.dist.enabled:  # the epoch's figures over all ranks
            total = all_reduce_sums({**sums, "n_img": float(n_img)}, self.dist)
            n_img = int(total.pop("n_img"))
            sums = total
        return sums, n_img, dt

    def _evaluates(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is evaluated: every ``cfg.eval_interval`` epochs and the
        last, on the main process only."""
        number = epoch + 1
        interval = max(1, self.cfg.eval_interval)
        return self.dist.is_main and (number % interval == 0 or number == self.cfg.epochs)

    def _finish_epoch(
        self, epoch: int, sums: dict[str, float], n_img: int, dt: float
    ) -> EpochResult:
        """The epoch's record: training means, lr, and (when due) evaluation; updates
        ``best_map50``."""
        train_means = {k: v / max(1, n_img) for k, v in sums.items()}
        lr = self.optimizer.param_groups[0]["lr"]
        val = self.evaluate() if self._evaluates(epoch) else None
        improved = val is not None and val.map50 > self.best_map50
        if improved:
            self.best_map50 = val.map50
        return EpochResult(
            epoch=epoch + 1,
            train=MappingProxyType(train_means),
            lr=lr,
            epoch_s=dt,
            images=n_img,
            images_per_s=n_img / dt,
            val=val,
            improved=improved,
        )

    def _describe(self) -> str:
        """The line that opens a run: model, device, data, sizes, schedule, anchors."""
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        return (
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
            f"{self._amp_note()}{self._recipe_notes()} | anchors "
            + " ".join(f"{w:.0f},{h:.0f}" for w, h in self.model_config.resolved_anchors)
        )

    def _amp_note(self) -> str:
        """``, AMP`` (float16 on CUDA) or ``, bf16 autocast`` (CPU) when on, else empty."""
        if not self.amp:
            return ""
        return ", AMP" if self.amp_dtype == torch.float16 else ", bf16 autocast"

    def _recipe_notes(self) -> str:
        """The small-data options that are on, for the opening line (empty when none is)."""
        cfg, aug = self.cfg, self.cfg.augment
        notes = []
        if aug.enabled and aug.mosaic > 0:
            close = f", off for the last {aug.close_mosaic}" if aug.close_mosaic else ""
            notes.append(f"mosaic {aug.mosaic:g}{close}")
        if aug.enabled and aug.close_aug:
            notes.append(f"augmentation off for the last {aug.close_aug} epochs")
        if cfg.multi_scale:
            notes.append("multi-scale " + "-".join(f"{v:g}x" for v in cfg.multi_scale_range))
        if cfg.bias_prior_size != PRIOR_IMG_SIZE:
            notes.append(f"bias prior {cfg.bias_prior_size or 'off'}")
        if cfg.warmup_bias_lr > 0:
            notes.append(f"warmup bias lr {cfg.warmup_bias_lr:g}")
        return "".join(f", {n}" for n in notes)

    def _epoch_line(self, result: EpochResult) -> str:
        val = (
            f" | val mAP@0.5 {result.val.map50:.4f} mAP@0.5:0.95 {result.val.map50_95:.4f}"
            if result.val is not None
            else ""
        )
        return (
            f"epoch {result.epoch}/{self.cfg.epochs}: loss {result.train['loss']:.4f}, "
            f"{result.images_per_s:.1f} img/s, {result.epoch_s:.0f} s{val}"
        )


def train(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, console: Console | None = None
) -> TrainResult:
    """Train as ``cfg`` says and return where the checkpoints are and how good the best one is."""
    return Trainer(cfg, resume=resume, progress=progress, console=console).train()
