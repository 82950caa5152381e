"""Settings as frozen dataclasses: model, loss, augmentation and training.

Everything here is plain data (str, int, float, bool, tuples) so that it can be stored in a
checkpoint and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgeyolo.errors import ConfigError

ARCHS: tuple[str, ...] = ("yolov3", "yolov3-tiny")

#: Deployment NMS settings, the one place they are written: the score threshold, the NMS IoU
#: threshold and the detections kept per image of an export, of ``detect`` and of the Detector
#: on a checkpoint (darknet's and the seed tutorial's 0.25 / 0.45; 100 as COCO's evaluation keeps).
DEFAULT_CONF_THRES: float = 0.25
DEFAULT_IOU_THRES: float = 0.45
DEFAULT_MAX_DET: int = 100
#: Evaluation settings (mAP at COCO's conventions): a low score threshold and 300 detections, so
#: that the precision-recall curve reaches low-confidence boxes, and NMS at IoU 0.5.
EVAL_CONF_THRES: float = 0.001
EVAL_IOU_THRES: float = 0.5
EVAL_MAX_DET: int = 300
#: TensorRT's largest ``TopK`` K (NvInfer.h, ``addTopK``: "Currently only values of K up to 3840
#: are supported"): the bound of ``--max-det`` and of ``--max-candidates`` in an exported graph.
TRT_MAX_TOPK: int = 3840
#: Candidates per image that enter NMS, highest scores first, in the exported graph and in
#: :func:`edgeyolo.postprocess.postprocess` alike (so that the fp32 graph reproduces PyTorch).
#: TensorRT's NMS layer considers at most 5000 candidates per image (2000 on SM 5.3/6.2, which no
#: TensorRT >= 8.6 runs on) and drops the rest silently; the graph caps them itself with a
#: ``TopK``, whose K cannot pass 3840. So 3840: the most every target takes, which never binds at
#: the deployment threshold and keeps more than mmdetection's YOLOv3 (``nms_pre=1000``) at COCO's.
DEFAULT_MAX_CANDIDATES: int = TRT_MAX_TOPK

#: Official darknet anchors (pixels at 416), smallest first.
YOLOV3_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 13),
    (16, 30),
    (33, 23),
    (30, 61),
    (62, 45),
    (59, 119),
    (116, 90),
    (156, 198),
    (373, 326),
)
YOLOV3_TINY_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 14),
    (23, 27),
    (37, 58),
    (81, 82),
    (135, 169),
    (344, 319),
)


def num_scales(arch: str) -> int:
    """Number of detection heads: 3 for yolov3, 2 for yolov3-tiny."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")
    return 3 if arch == "yolov3" else 2


@dataclass(frozen=True)
class ModelConfig:
    """What is needed to rebuild a model.

    ``img_size`` is the default inference input size (the validation size of training).
    ``anchors`` are (w, h) in input pixels, sorted by area, smallest first;
    ``3 * num_scales`` of them. ``None`` means the official darknet anchors of ``arch``.
    Heads are ordered as in darknet's cfg: coarsest (stride 32) first; the largest anchors
    belong to the coarsest head.
    """

    arch: str = "yolov3-tiny"
    num_classes: int = 80
    img_size: int = 416
    anchors: tuple[tuple[float, float], ...] | None = None
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = num_scales(self.arch)
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.img_size % 32 != 0 or self.img_size < 32:
            raise ConfigError(f"img_size must be a positive multiple of 32, got {self.img_size}")
        if self.anchors is not None:
            anchors = tuple((float(w), float(h)) for w, h in self.anchors)
            if len(anchors) != 3 * n:
                raise ConfigError(
                    f"{self.arch} needs {3 * n} anchors (3 per head), got {len(anchors)}"
                )
            if any(w <= 0 or h <= 0 for w, h in anchors):
                raise ConfigError(f"anchors must be positive (w, h) pairs, got {anchors}")
            object.__setattr__(self, "anchors", tuple(sorted(anchors, key=lambda a: a[0] * a[1])))
        if self.names and len(self.names) != self.num_classes:
            raise ConfigError(f"{len(self.names)} class names given for {self.num_classes} classes")

    @property
    def resolved_anchors(self) -> tuple[tuple[float, float], ...]:
        if self.anchors is not None:
            return self.anchors
        return YOLOV3_ANCHORS if self.arch == "yolov3" else YOLOV3_TINY_ANCHORS

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.names or tuple(str(i) for i in range(self.num_classes))


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss components (the lambdas of the YOLO papers) and the box loss kind."""

    box_loss: str = "giou"
    lambda_box: float = 1.0
    lambda_obj: float = 1.0
    lambda_noobj: float = 1.0
    lambda_cls: float = 1.0
    ignore_thresh: float = 0.5

    def __post_init__(self) -> None:
        if self.box_loss not in ("giou", "diou", "ciou", "mse"):
            raise ConfigError(f"unknown box loss {self.box_loss!r}; use giou, diou, ciou or mse")
        if not 0.0 < self.ignore_thresh <= 1.0:
            raise ConfigError(f"ignore_thresh must be in (0, 1], got {self.ignore_thresh}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (torchvision.transforms.v2, and :mod:`edgeyolo.data.mosaic`).

    Flips are off by default: digits are not symmetric. ``mosaic`` is the probability that a
    training sample is a 4-image mosaic (0: never); ``close_mosaic`` turns mosaic off for the last
    that many epochs (Ultralytics' ``close_mosaic``), so that training ends on whole images;
    ``close_aug`` turns all augmentation off for the last that many epochs (YOLOX's
    ``no_aug_epochs``), so that training ends on the images as the evaluation sees them.
    """

    hflip: float = 0.0
    vflip: float = 0.0
    # Light by default (issue 14's small-data ablation, bench/RESULTS.md): scale 0.75-1.25,
    # translate 0.1 and colour jitter 0.2 cost 0.10 val mAP@0.5 on 300 images in 12 epochs.
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    degrees: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    enabled: bool = True
    mosaic: float = 0.0
    close_mosaic: int = 0
    close_aug: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mosaic <= 1.0:
            raise ConfigError(f"--mosaic is a probability in [0, 1], got {self.mosaic}")
        if self.close_mosaic < 0:
            raise ConfigError(f"--close-mosaic must be >= 0 epochs, got {self.close_mosaic}")
        if self.close_aug < 0:
            raise ConfigError(f"--close-aug must be >= 0 epochs, got {self.close_aug}")
        lo, hi = self.scale
        if not 0.0 < lo <= hi:
            raise ConfigError(f"--scale LOW HIGH needs 0 < LOW <= HIGH, got {lo} {hi}")
        if not 0.0 <= self.translate < 1.0:
            raise ConfigError(f"--translate is a fraction in [0, 1), got {self.translate}")
        if min(self.brightness, self.contrast, self.saturation) < 0:
            raise ConfigError(
                "--colour-jitter (brightness, contrast, saturation) must be >= 0, got "
                f"{self.brightness}, {self.contrast}, {self.saturation}"
            )


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""
    out: str = "runs/train"
    model: str = "yolov3-tiny"
    img_size: int = 416
    eval_img_size: int | None = None
    epochs: int = 30
    #: 4, not 8, and 4 warmup epochs, not 2: on 300 images in 12 epochs each gains val mAP@0.5
    #: (issue 14's ablation); the per-image speed on a CPU is the same.
    batch: int = 4
    workers: int = 2
    device: str = "auto"
    optimizer: str = "adam"
    lr_init: float = 1e-3
    lr_end: float = 1e-6
    warmup_epochs: float = 4.0
    momentum: float = 0.937
    weight_decay: float = 0.0
    ema: bool = True
    ema_decay: float = 0.999
    grad_clip: float = 0.0
    amp: bool = True
    #: bfloat16 autocast of the training forward on the CPU: ``off``, ``on``, or ``auto`` (on
    #: where bfloat16 is native, AMX-BF16 or AVX512-BF16: ``trainer.cpu_bf16_fast``);
    #: validation and the saved weights stay float32
    cpu_bf16: str = "off"
    #: channels-last weights and inputs while training (CUDA and CPU alike)
    channels_last: bool = True
    multi_scale: bool = False
    multi_scale_range: tuple[float, float] = (0.75, 1.25)
    #: the image size of the heads' objectness prior, 8 objects per image (YOLOv5's 640);
    #: 0: no prior (torch's default bias init); see ``YOLOv3.set_bias_prior``.
    bias_prior_size: int = 640
    #: the biases' learning rate at the first warmup step, falling linearly to ``lr_init`` by the
    #: warmup's end (YOLOv5's ``warmup_bias_lr``); 0: the biases warm up like the weights.
    warmup_bias_lr: float = 0.0
    eval_interval: int = 1
    conf_thres: float = EVAL_CONF_THRES
    iou_thres: float = EVAL_IOU_THRES
    seed: int = 0
    anchors: str = "auto"
    pretrained: str | None = None
    freeze_epochs: int = 0
    sync_bn: bool = False
    skip_bad: bool = False
    max_images: int | None = None
    #: decode the training images once, before the first epoch, and keep them in memory as
    #: uint8 (about H x W x 3 bytes each), shared with the loader workers
    cache: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tensorboard: bool = True

    def __post_init__(self) -> None:
        num_scales(self.model)
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use adam, adamw or sgd")
        if self.epochs < 1 or self.batch < 1:
            raise ConfigError("epochs and batch must be >= 1")
        if self.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be >= 0, got {self.freeze_epochs}")
        if self.img_size % 32 != 0:
            raise ConfigError(f"--img-size must be a multiple of 32, got {self.img_size}")
        if self.eval_img_size is not None and (
            self.eval_img_size % 32 != 0 or self.eval_img_size < 32
        ):
            raise ConfigError(
                f"--eval-img-size must be a positive multiple of 32, got {self.eval_img_size}"
            )
        self._check_recipe()

    def _check_recipe(self) -> None:
        """The small-data options: multi-scale range, bias prior size, bias warmup lr."""
        lo, hi = self.multi_scale_range
        if not 0.0 < lo <= hi:
            raise ConfigError(f"--multi-scale-range LOW HIGH needs 0 < LOW <= HIGH, got {lo} {hi}")
        if self.bias_prior_size < 0:
            raise ConfigError(
                f"--bias-prior-size must be an image size in pixels (0: no prior), "
                f"got {self.bias_prior_size}"
            )
        if self.cpu_bf16 not in ("off", "auto", "on"):
            raise ConfigError(f"--cpu-bf16 must be off, auto or on, got {self.cpu_bf16!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup_bias_lr < 0:
            raise ConfigError(f"--warmup-bias-lr must be >= 0, got {self.warmup_bias_lr}")

    @property
    def infer_size(self) -> int:
        """Input size for validation and the checkpoint's default inference size."""
        return self.img_size if self.eval_img_size is None else self.eval_img_size


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as nested plain dicts/lists (safe for ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(cfg)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown model config keys {sorted(unknown)}")
    return ModelConfig(**{k: _tuplify(v) for k, v in d.items()})


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    loss = LossConfig(**d.pop("loss", {}))
    aug = AugmentConfig(**{k: _tuplify(v) for k, v in d.pop("augment", {}).items()})
    return TrainConfig(**{k: _tuplify(v) for k, v in d.items()}, loss=loss, augment=aug)


def check_nms_settings(conf_thres: float, iou_thres: float, max_det: int) -> None:
    """The one range check of deployment NMS settings (export and every runtime backend):
    :class:`ConfigError` naming the flag when a value is out of range."""
    if not 0.0 <= conf_thres < 1.0:
        raise ConfigError(f"conf threshold (--conf) must be in [0, 1), got {conf_thres}")
    if not 0.0 < iou_thres <= 1.0:
        raise ConfigError(f"IoU threshold (--iou) must be in (0, 1], got {iou_thres}")
    if max_det < 1:
        raise ConfigError(f"max_det (--max-det) must be at least 1, got {max_det}")


#: The dtype outside an int8 graph's Q/DQ pairs (``--int8-high-precision``): ``auto`` is fp16 when
#: a ``--trt`` target builds strongly typed (10.12+, 11: precision from the graph), else fp32
#: (8.6, 10.3: weakly typed, the FP16 flag picks fp16 kernels); see
#: :func:`edgeyolo.export.quantize.resolve_high_precision`.
INT8_HIGH_PRECISIONS: tuple[str, ...] = ("auto", "fp16", "fp32")


#: How a TensorRT engine's network is typed (``--typing``): ``auto`` picks per TensorRT version
#: (:func:`edgeyolo.build.tensorrt.choose_typing`), ``strong`` / ``weak`` insist.
ENGINE_TYPINGS: tuple[str, ...] = ("auto", "strong", "weak")


#: TensorRT versions an exported graph is checked for (``--trt``; the table and the checks are in
#: :mod:`edgeyolo.runtime.trt_support` and :mod:`edgeyolo.runtime.conformance`): 8.6, 10.3 (what
#: JetPack 6.1/6.2 ship), the current 10.x and 11.x.
TRT_TARGETS: tuple[str, ...] = ("8.6", "10.3", "10", "11")


def parse_trt_targets(targets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"10.3, 8.6"`` (or a sequence of names) → ``("8.6", "10.3")``: known names only, each
    once, in :data:`TRT_TARGETS` order.

    Raises:
        ConfigError: a name is not one of :data:`TRT_TARGETS`, or none is given (``--trt``).
    """
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in TRT_TARGETS]
    if unknown or not names:
        what = f"unknown TensorRT target(s) {', '.join(unknown)}" if unknown else "no target"
        raise ConfigError(
            f"--trt: {what}; give one or more of {','.join(TRT_TARGETS)} (comma-separated)"
        )
    return tuple(t for t in TRT_TARGETS if t in names)


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``edgeyolo export`` (one ONNX file per precision, optional TensorRT engines)."""

    weights: str = ""
    out: str = "export/model"
    img_size: int | None = None
    batch: int = 1
    opset: int = 17
    conf_thres: float = DEFAULT_CONF_THRES
    iou_thres: float = DEFAULT_IOU_THRES
    max_det: int = DEFAULT_MAX_DET
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    multi_label: bool = False
    raw: bool = False
    simplify: bool = True
    fp16: bool = False
    int8: bool = False
    calib: str = "calib_data"
    calib_method: str = "percentile"
    calib_images: int | None = 256
    int8_max_drop: float = 1.0
    #: Fail the export when the int8 gate cannot decide (the drop is within ``int8_max_drop`` but
    #: its bootstrap interval's upper bound is not); without it the gate warns and keeps the graph.
    int8_strict: bool = False
    quantize_heads: bool = False
    int8_placement: str = "tensorrt"
    int8_reduce_range: bool | None = None
    int8_cpu_target: str = "any"
    int8_high_precision: str = "auto"
    darknet: bool = False
    #: The darknet ``.cfg`` of a ``weights`` that is a darknet ``.weights`` file (``None``: the
    #: ``.cfg`` beside it, else the official model its size names).
    darknet_cfg: str | None = None
    #: BatchNorm epsilon of the reader ``--darknet``'s files are written for (1e-5 or 1e-6).
    darknet_eps: float = 1e-5
    data: str | None = None
    val_split: str = "val"
    engine: bool = False
    workspace_gib: float = 2.0
    timing_cache: str | None = None
    engine_typing: str = "auto"
    tf32: bool = False
    trt_verbose: bool = False
    trt: tuple[str, ...] = TRT_TARGETS

    def __post_init__(self) -> None:
        if self.img_size is not None and (self.img_size % 32 != 0 or self.img_size < 32):
            raise ConfigError(f"--img-size must be a positive multiple of 32, got {self.img_size}")
        if self.batch < 1:
            raise ConfigError(f"--batch (the largest batch) must be >= 1, got {self.batch}")
        if self.opset < 17:
            raise ConfigError(f"--opset must be 17 or newer, got {self.opset}")
        check_nms_settings(self.conf_thres, self.iou_thres, self.max_det)
        self._check_topk_limits()
        if self.calib_method not in ("entropy", "percentile", "minmax"):
            raise ConfigError(
                f"unknown calibration method {self.calib_method!r}; "
                "use entropy, percentile or minmax"
            )
        if self.raw and self.int8:
            raise ConfigError(
                "--int8 needs the decode + NMS graph (its accuracy gate measures mAP); "
                "drop --raw or --int8"
            )
        if self.int8_placement not in ("tensorrt", "onnxruntime"):
            raise ConfigError(
                f"unknown --int8-placement {self.int8_placement!r}; use tensorrt or onnxruntime"
            )
        if self.int8_max_drop < 0:
            raise ConfigError(f"--int8-max-drop must be >= 0 points, got {self.int8_max_drop}")
        if self.int8_strict and not (self.int8 and self.data):
            raise ConfigError(
                "--strict holds the int8 accuracy gate to its interval; the gate runs only with "
                "--int8 and --data: add them, or drop --strict"
            )
        if self.val_split not in ("train", "val", "test"):
            raise ConfigError(f"--val-split must be train, val or test, got {self.val_split!r}")
        self._check_int8_target()
        self._check_int8_high_precision()
        self._check_engine_options()
        if not 0.0 < self.darknet_eps <= 1e-3:  # darknet_cfg.MAX_EPS
            raise ConfigError(f"--darknet-eps must be in (0, 0.001], got {self.darknet_eps}")
        if self.darknet_eps != 1e-5 and not self.darknet:
            raise ConfigError("--darknet-eps sets the epsilon of --darknet's files; add --darknet")
        object.__setattr__(self, "trt", parse_trt_targets(self.trt))

    def _check_engine_options(self) -> None:
        """The TensorRT options fit ``--engine``: a known typing, no ``--raw`` graph."""
        if self.engine_typing not in ENGINE_TYPINGS:
            raise ConfigError(
                f"unknown --typing {self.engine_typing!r}; use {', '.join(ENGINE_TYPINGS)}"
            )
        if self.engine and self.raw:
            raise ConfigError(
                "--engine builds from the decode + NMS graph: a --raw graph ends at the head "
                "maps, without the num_dets/boxes/scores/classes outputs an engine is run and "
                "checked with; drop --raw or --engine"
            )
        asked = [
            flag
            for flag, on in (
                ("--typing", self.engine_typing != "auto"),
                ("--tf32", self.tf32),
                ("--verbose", self.trt_verbose),
            )
            if on
        ]
        if asked and not self.engine:
            raise ConfigError(
                f"{' and '.join(asked)} only apply to TensorRT engine builds; add --engine, or "
                f"drop {'it' if len(asked) == 1 else 'them'}"
            )

    def _check_topk_limits(self) -> None:
        """``--max-det`` and ``--max-candidates`` are each the K of a ``TopK`` in the graph, which
        TensorRT takes up to :data:`TRT_MAX_TOPK` (every ``--trt`` target is a TensorRT)."""
        for flag, value in (("--max-det", self.max_det), ("--max-candidates", self.max_candidates)):
            if not 1 <= value <= TRT_MAX_TOPK:
                raise ConfigError(
                    f"{flag} must be between 1 and {TRT_MAX_TOPK}, got {value}: it is the K of a "
                    f"TopK in the exported graph, and TensorRT's TopK takes K up to {TRT_MAX_TOPK} "
                    "(NvInfer.h, addTopK)"
                )

    def _check_int8_high_precision(self) -> None:
        """``--int8-high-precision`` (the dtype outside the Q/DQ pairs) is known and, for the
        ``onnxruntime`` placement (a CPU graph), not fp16."""
        if self.int8_high_precision not in INT8_HIGH_PRECISIONS:
            raise ConfigError(
                f"unknown --int8-high-precision {self.int8_high_precision!r}; use "
                + ", ".join(INT8_HIGH_PRECISIONS)
            )
        if self.int8_placement == "onnxruntime" and self.int8_high_precision == "fp16":
            raise ConfigError(
                "--int8-high-precision fp16 is for --int8-placement tensorrt: the onnxruntime "
                "placement is a CPU graph, fp32 outside its Q/DQ pairs"
            )

    def _check_int8_target(self) -> None:
        """``--int8-cpu-target`` is valid for the placement; ``--int8-reduce-range`` agrees."""
        if self.int8_cpu_target not in ("any", "vnni"):
            raise ConfigError(
                f"unknown --int8-cpu-target {self.int8_cpu_target!r}; use any or vnni"
            )
        if self.int8_cpu_target == "vnni" and self.int8_placement != "onnxruntime":
            raise ConfigError(
                "--int8-cpu-target vnni is for --int8-placement onnxruntime (ONNX Runtime's CPU "
                "kernels); the tensorrt placement targets a GPU and always has full-range weights"
            )
        want = self.reduce_range_for(self.int8_placement, self.int8_cpu_target)
        if self.int8_reduce_range is not None and self.int8_reduce_range != want:
            flag = "--int8-reduce-range" if self.int8_reduce_range else "--no-int8-reduce-range"
            target = (
                f"--int8-cpu-target {self.int8_cpu_target}"
                if self.int8_placement == "onnxruntime"
                else "--int8-placement tensorrt"
            )
            raise ConfigError(
                f"{flag} contradicts {target}, which means {'7' if want else '8'}-bit weights; "
                "the weight range follows the target: drop the flag, or use --int8-placement "
                "onnxruntime with --int8-cpu-target any (7-bit, every x86 CPU) or vnni (8-bit, "
                "CPUs with AVX512-VNNI or AVX-VNNI)"
            )

    @staticmethod
    def reduce_range_for(placement: str, cpu_target: str = "any") -> bool:
        """The one rule for int8 weights: 7-bit exactly for the ``onnxruntime`` placement with
        CPU target ``any`` (ONNX Runtime's u8s8 kernels saturate with 8-bit weights on x86 CPUs
        without VNNI); 8-bit for target ``vnni`` and for the ``tensorrt`` placement."""
        return placement == "onnxruntime" and cpu_target == "any"

    @property
    def int8_target(self) -> str:
        """What the int8 graph is made for: ``any`` or ``vnni`` (x86 CPUs, ``onnxruntime``
        placement) or ``gpu`` (``tensorrt`` placement; on a CPU it is a float simulation)."""
        return self.int8_cpu_target if self.int8_placement == "onnxruntime" else "gpu"

    @property
    def precisions(self) -> tuple[str, ...]:
        """The ONNX variants to write, fp32 always first (the others are made from it)."""
        return ("fp32",) + (("fp16",) if self.fp16 else ()) + (("int8",) if self.int8 else ())
