"""`edgeyolo train`: train YOLOv3 / YOLOv3-tiny (data-parallel with --devices)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeyolo.cli.common import _TRAIN_EXTRA, _cli_errors, console
from edgeyolo.config import AugmentConfig, LossConfig, TrainConfig
from edgeyolo.errors import ConfigError
from edgeyolo.lazy import lazy_import

if TYPE_CHECKING:
    from edgeyolo.train.trainer import TrainResult

_TRAINER = lazy_import("edgeyolo.train.trainer", **_TRAIN_EXTRA, needed_for="edgeyolo train")
_DISTRIBUTED = lazy_import("edgeyolo.train.distributed", **_TRAIN_EXTRA, needed_for="--devices")
_AUG = AugmentConfig()  # the augmentation defaults the train options show


def train(
    data: Annotated[Path, typer.Option(help="data.yaml of the dataset.")],
    model: Annotated[str, typer.Option(help="yolov3 or yolov3-tiny.")] = "yolov3-tiny",
    img_size: Annotated[int, typer.Option(help="Input size (multiple of 32).")] = 416,
    eval_img_size: Annotated[
        int | None,
        typer.Option(help="Validation size, also the model's inference size (default: img-size)"),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Number of epochs.")] = 30,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 4,
    out: Annotated[Path, typer.Option(help="Run folder for checkpoints and metrics.")] = Path(
        "runs/train"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(help="Data loader worker processes.")] = 2,
    optimizer: Annotated[str, typer.Option(help="adam, adamw or sgd.")] = "adam",
    lr: Annotated[float, typer.Option(help="Initial (peak) learning rate.")] = 1e-3,
    lr_end: Annotated[float, typer.Option(help="Final learning rate of the cosine decay.")] = 1e-6,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warmup length in epochs.")] = 4.0,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    box_loss: Annotated[str, typer.Option(help="giou, diou, ciou or mse.")] = "giou",
    lambda_box: Annotated[float, typer.Option(help="Weight of the box loss.")] = 1.0,
    lambda_obj: Annotated[float, typer.Option(help="Weight of the objectness loss.")] = 1.0,
    lambda_noobj: Annotated[float, typer.Option(help="Weight of the no-object loss.")] = 1.0,
    lambda_cls: Annotated[float, typer.Option(help="Weight of the class loss.")] = 1.0,
    ignore_thresh: Annotated[
        float, typer.Option(help="IoU above which a non-responsible prediction is not a negative.")
    ] = 0.5,
    anchors: Annotated[
        str, typer.Option(help="auto (k-means on the data), default (darknet's) or 'w,h w,h ...'.")
    ] = "auto",
    pretrained: Annotated[
        Path | None,
        typer.Option(
            help="Darknet .weights to start from: yolov3.weights, yolov3-tiny.weights or "
            "darknet53.conv.74 (heads are skipped when the class count differs)."
        ),
    ] = None,
    freeze_epochs: Annotated[
        int, typer.Option(help="Keep the backbone frozen for the first N epochs.")
    ] = 0,
    devices: Annotated[
        str | None,
        typer.Option(help="GPUs for data-parallel training, e.g. 0,1 (launches torchrun)."),
    ] = None,
    sync_bn: Annotated[bool, typer.Option(help="SyncBatchNorm across GPUs (DDP on CUDA).")] = False,
    ema: Annotated[bool, typer.Option(help="Keep an EMA of the weights.")] = True,
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = True,
    cpu_bf16: Annotated[
        str,
        typer.Option(
            help="bfloat16 autocast on the CPU: off, on, or auto (on where the CPU has "
            "AMX-BF16 or AVX512-BF16; float32 elsewhere)."
        ),
    ] = "off",
    channels_last: Annotated[
        bool, typer.Option(help="Channels-last memory while training (CPU and CUDA).")
    ] = True,
    multi_scale: Annotated[bool, typer.Option(help="Random input size per step.")] = False,
    multi_scale_range: Annotated[
        tuple[float, float],
        typer.Option(help="Multi-scale sizes: multiples of 32 in LOW..HIGH x img-size."),
    ] = (0.75, 1.25),
    augment: Annotated[bool, typer.Option(help="Affine + colour augmentation.")] = True,
    hflip: Annotated[float, typer.Option(help="Horizontal flip probability.")] = 0.0,
    mosaic: Annotated[
        float, typer.Option(help="Probability of a 4-image mosaic per training sample.")
    ] = 0.0,
    close_mosaic: Annotated[int, typer.Option(help="Turn mosaic off for the last N epochs.")] = 0,
    close_aug: Annotated[
        int, typer.Option(help="Turn all augmentation off for the last N epochs.")
    ] = 0,
    scale: Annotated[
        tuple[float, float], typer.Option(help="Random affine zoom range LOW HIGH.")
    ] = _AUG.scale,
    translate: Annotated[
        float, typer.Option(help="Random shift, a fraction of the image side.")
    ] = _AUG.translate,
    colour_jitter: Annotated[
        float, typer.Option(help="Brightness, contrast and saturation jitter (0: none).")
    ] = _AUG.brightness,
    bias_prior_size: Annotated[
        int,
        typer.Option(
            help="Image size of the heads' objectness prior, 8 objects per image (0: none)."
        ),
    ] = 640,
    warmup_bias_lr: Annotated[
        float,
        typer.Option(help="Biases' lr at the warmup's start, falling to --lr (0: off)."),
    ] = 0.0,
    grad_clip: Annotated[
        float,
        typer.Option(help="Max gradient norm (0: off; the summed loss has norms in the hundreds)."),
    ] = 0.0,
    eval_interval: Annotated[int, typer.Option(help="Validate every N epochs.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip and report bad labels/images instead of stopping.")
    ] = False,
    max_images: Annotated[
        int | None, typer.Option(help="Use only the first N images of each split.")
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(help="Decode the training images once and keep them in memory (uint8)."),
    ] = False,
    ema_decay: Annotated[
        float, typer.Option(help="EMA decay (ramped up over the first few hundred steps).")
    ] = 0.999,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train YOLOv3 / YOLOv3-tiny; writes OUT/best.pt, OUT/last.pt and OUT/metrics.{jsonl,csv}."""
    if devices and "WORLD_SIZE" not in os.environ:
        with _cli_errors():
            parts = [d.strip() for d in devices.split(",") if d.strip()]
            if not parts or not all(d.isdigit() for d in parts):
                raise ConfigError(f"--devices {devices!r}: give GPU indices like 0,1")
            ids = [int(d) for d in parts]
            code = _DISTRIBUTED.launch(ids, _DISTRIBUTED.train_argv_without_devices(sys.argv))
        raise typer.Exit(code)
    with _cli_errors():
        cfg = TrainConfig(
            data=str(data),
            out=str(out),
            model=model,
            img_size=img_size,
            eval_img_size=eval_img_size,
            epochs=epochs,
            batch=batch,
            workers=workers,
            device=device,
            optimizer=optimizer,
            lr_init=lr,
            lr_end=lr_end,
            warmup_epochs=warmup_epochs,
            weight_decay=weight_decay,
            ema=ema,
            amp=amp,
            cpu_bf16=cpu_bf16,
            channels_last=channels_last,
            grad_clip=grad_clip,
            multi_scale=multi_scale,
            multi_scale_range=multi_scale_range,
            bias_prior_size=bias_prior_size,
            warmup_bias_lr=warmup_bias_lr,
            eval_interval=eval_interval,
            seed=seed,
            anchors=anchors,
            pretrained=None if pretrained is None else str(pretrained),
            freeze_epochs=freeze_epochs,
            sync_bn=sync_bn,
            skip_bad=skip_bad,
            max_images=max_images,
            cache=cache,
            ema_decay=ema_decay,
            loss=LossConfig(
                box_loss=box_loss,
                lambda_box=lambda_box,
                lambda_obj=lambda_obj,
                lambda_noobj=lambda_noobj,
                lambda_cls=lambda_cls,
                ignore_thresh=ignore_thresh,
            ),
            augment=AugmentConfig(
                enabled=augment,
                hflip=hflip,
                mosaic=mosaic,
                close_mosaic=close_mosaic,
                close_aug=close_aug,
                scale=scale,
                translate=translate,
                brightness=colour_jitter,
                contrast=colour_jitter,
                saturation=colour_jitter,
            ),
        )
        result = _TRAINER.train(cfg, resume=resume, progress=progress, console=console)
    report(result)


def report(result: TrainResult) -> None:
    """The run's closing line, printed by the process that reports it only (rank 0 under
    torchrun: the other ranks never evaluate, so their best mAP would read -1)."""
    if not result.is_main:
        return
    console.print(
        f"done in {result.wall_s / 60:.1f} min ({result.images_per_s:.2f} img/s); "
        f"best val mAP@0.5 {result.best_map50:.4f}: [bold]{result.best}[/]"
    )
