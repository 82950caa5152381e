"""Darknet ``.weights`` files: read them into our models, write our models as them.

Format (darknet's ``load_weights`` / ``save_weights``): int32 ``major, minor, revision``, then
``seen`` (images trained on) as int64 when ``major * 10 + minor >= 2`` and both are < 1000,
else int32; then, per ``[convolutional]`` layer in cfg order, either BatchNorm beta, gamma,
running mean, running variance (``out_channels`` floats each) or the conv bias, then the conv
weights ``[out, in, k, k]``; all float32 little-endian. :func:`darknet_layers` gives our convs
in that order. A file may stop at a layer boundary (``darknet partial``: ``darknet53.conv.74``
holds the 52 convs of Darknet-53, ``yolov3-tiny.conv.15`` the first 9 convs of yolov3-tiny).

BatchNorm epsilon: darknet-family readers normalise with ``sqrt(var + eps)`` and disagree on
``eps``: 1e-5 (darknet's CUDA path, AlexeyAB's darknet, NVIDIA's yolov3_onnx sample,
tensorrt_demos, DeepStream-Yolo; also our models) or 1e-6 (OpenCV's DNN). A file is written for
one reader epsilon ``eps``: its running variances are the model's plus ``MODEL_EPS - eps``
(``+9e-6`` for 1e-6), so that reader computes ``sqrt(var + MODEL_EPS)`` as the model does;
reading with ``eps`` subtracts it again, clamped at 0. pjreddie's darknet on the CPU divides by
``sqrt(var) + 1e-6`` instead, which neither file reproduces exactly (see the README).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgeyolo.config import ModelConfig
from edgeyolo.errors import CheckpointError
from edgeyolo.fileio import atomic_write
from edgeyolo.models.darknet import darknet_layers
from edgeyolo.models.darknet_cfg import (
    COCO_NAMES,
    MODEL_EPS,
    check_eps,
    eps_note,
    read_cfg,
    write_cfg,
)
from edgeyolo.models.yolov3 import YOLOv3, build_model

#: Float counts (after the header) of the official files, to name the one a user passed.
KNOWN_FILES: dict[int, tuple[str, str]] = {
    62_001_757: ("yolov3.weights", "yolov3"),
    40_620_640: ("darknet53.conv.74", "yolov3"),
    8_858_734: ("yolov3-tiny.weights", "yolov3-tiny"),
    7_743_344: ("yolov3-tiny.conv.15", "yolov3-tiny"),
}
#: Class count of the official files.
DARKNET_CLASSES: int = 80
#: Float counts of the official whole-model files (80 classes), by architecture.
WHOLE_MODEL_FLOATS: dict[int, str] = {62_001_757: "yolov3", 8_858_734: "yolov3-tiny"}


@dataclass(frozen=True)
class DarknetHeader:
    """The header of a ``.weights`` file; ``seen`` is the number of images trained on."""

    major: int
    minor: int
    revision: int
    seen: int


@dataclass(frozen=True)
class LoadReport:
    """What :func:`read_darknet` did.

    Attributes:
        path: the file read.
        header: its header.
        file_classes: class count of the file's head convs (given, inferred from the size, or 80).
        layers_total: conv layers of the model (75 for yolov3, 13 for yolov3-tiny).
        layers_in_file: conv layers the file holds (fewer for a partial file).
        loaded: indices (in :func:`darknet_layers` order) of the convs filled from the file.
        skipped: ``(index, reason)`` of convs read from the file but left as initialised.
        floats_read: floats after the header (all of them: a file must end at a layer boundary).
        backbone_only: the file holds exactly the backbone's convs (``darknet53.conv.74``).
        eps: the reader epsilon the file was read as written for (module docstring).
    """

    path: str
    header: DarknetHeader
    file_classes: int
    layers_total: int
    layers_in_file: int
    loaded: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]
    floats_read: int
    backbone_only: bool
    eps: float = MODEL_EPS

    @property
    def partial(self) -> bool:
        """The file stops before the model's last conv."""
        return self.layers_in_file < self.layers_total

    def summary(self) -> str:
        """One line for the training log."""
        h = self.header
        kind = " (backbone only)" if self.backbone_only else " (partial)" if self.partial else ""
        text = (
            f"{self.path}: darknet {h.major}.{h.minor}.{h.revision}, seen {h.seen:,}, "
            f"{self.floats_read:,} floats{kind}; loaded {len(self.loaded)}/{self.layers_total} "
            "conv layers"
        )
        if self.skipped:
            text += f", kept initialised {len(self.skipped)} ({self.skipped[0][1]})"
        return text


@dataclass(frozen=True)
class _Layer:
    index: int
    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    head: bool

    def tensors(self) -> list[Tensor]:
        """The layer's tensors in file order (the conv weight last)."""
        bn, conv = self.bn, self.conv
        if bn is not None:
            assert bn.running_mean is not None and bn.running_var is not None
            return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
        if conv.bias is None:
            raise CheckpointError(
                f"conv {self.index} ({self.name}) has neither BatchNorm nor a bias: "
                "darknet cannot store it"
            )
        return [conv.bias, conv.weight]

    def file_tensors(self, eps: float) -> list[Tensor]:
        """:meth:`tensors` as a file for reader epsilon ``eps`` holds them: the running variance
        plus ``bn.eps - eps``, clamped at 0 (module docstring)."""
        out = [t.detach().cpu().float() for t in self.tensors()]
        if self.bn is not None and eps != self.bn.eps:
            out[3] = (out[3] + (self.bn.eps - eps)).clamp_min(0.0)
        return out

    def file_floats(self, num_anchors: int, classes: int | None) -> int:
        """Floats the layer takes in a file whose head convs are for ``classes`` classes."""
        if not self.head or classes is None:
            return sum(t.numel() for t in self.tensors())
        out = num_anchors * (5 + classes)
        return out + out * self.conv.weight[0].numel()


def _layers(model: nn.Module) -> list[_Layer]:
    names = {id(m): n for n, m in model.named_modules()}
    heads = {id(c) for c in getattr(model, "head_convs", [])}
    return [
        _Layer(i, names.get(id(conv), "?"), conv, bn, id(conv) in heads)
        for i, (conv, bn) in enumerate(darknet_layers(model))
    ]


def _read_header(path: Path, raw: bytes, size: int) -> tuple[DarknetHeader, int]:
    """Parse the header from the file's first 20 bytes; returns it and its length (16 or 20)."""
    if raw[:2] == b"PK" or raw[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: a PyTorch/pickle file, not a darknet .weights file "
            "(load our .pt checkpoints with --resume or the checkpoint API)"
        )
    if len(raw) < 16:
        raise CheckpointError(f"{path}: {len(raw)} bytes, shorter than a darknet header (16-20)")
    major, minor, revision = struct.unpack_from("<3i", raw)
    if min(major, minor, revision) < 0:
        raise CheckpointError(f"{path}: header {major}.{minor}.{revision} is not darknet's")
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    offset = 20 if wide else 16
    if len(raw) < offset:
        raise CheckpointError(f"{path}: {len(raw)} bytes, shorter than its {offset}-byte header")
    (seen,) = struct.unpack_from("<q" if wide else "<i", raw, 12)
    if (size - offset) % 4:
        raise CheckpointError(
            f"{path}: {size} bytes = {offset}-byte header + {size - offset} bytes, not a whole "
            "number of float32s (truncated or not a darknet file)"
        )
    return DarknetHeader(major, minor, revision, seen), offset


def _file_classes(layers: list[_Layer], floats: int, anchors: int, model_classes: int) -> int:
    """Class count of a file of ``floats`` floats: one that makes it a whole model, else 80."""
    fixed = sum(ly.file_floats(anchors, None) for ly in layers if not ly.head)
    per_class = anchors * sum(ly.conv.weight[0].numel() + 1 for ly in layers if ly.head)
    for c in (DARKNET_CLASSES, model_classes):
        if fixed + per_class * (5 + c) == floats:
            return c
    if per_class and floats > fixed and (floats - fixed) % per_class == 0:
        c = (floats - fixed) // per_class - 5
        if c >= 1:
            return c
    return DARKNET_CLASSES


def read_darknet(
    path: str | Path,
    model: nn.Module,
    *,
    file_classes: int | None = None,
    eps: float = MODEL_EPS,
) -> LoadReport:
    """Load a darknet ``.weights`` file into ``model`` in place (all or nothing).

    Conv layers are matched in :func:`darknet_layers` order. When the file's head convs are
    for another class count than the model's, they are read past and the model's heads keep
    their initialisation. A file may end at any layer boundary (``darknet53.conv.74``); it
    fills that many convs. Nothing is copied unless the whole file fits the model.

    Args:
        path: the ``.weights`` file.
        model: a :class:`~edgeyolo.models.YOLOv3` (or any module with darknet-ordered convs).
        file_classes: class count the file was trained for; ``None`` infers it from the file
            size (a whole model), falling back to 80 (partial files).
        eps: the reader epsilon the file was written for: the running variances read become
            ``var + eps - bn.eps``, clamped at 0 (module docstring). 1e-5 (the default, and
            darknet's own training): unchanged.

    Raises:
        CheckpointError: not a darknet file, a file ending inside a layer (which one, floats
            expected vs left), more floats than the model holds, or a file of another
            architecture; the message names the file and both sizes.
    """
    path = Path(path)
    if file_classes is not None and file_classes < 1:
        raise CheckpointError(f"{path}: file_classes must be >= 1, got {file_classes}")
    eps = check_eps(eps, what="eps")
    header, offset, data = _read_floats(path)
    layers = _layers(model)
    plan = _plan(path, model, layers, data.size, offset, file_classes)
    copies, skipped, in_file = _match_layers(path, layers, data, plan)
    skipped_ids = {i for i, _ in skipped}
    with torch.no_grad():
        for t, values in copies:
            t.copy_(torch.from_numpy(values).view_as(t))
        for ly in layers[:in_file]:
            if ly.bn is not None and ly.index not in skipped_ids and eps != ly.bn.eps:
                assert ly.bn.running_var is not None
                ly.bn.running_var.add_(eps - ly.bn.eps).clamp_(min=0.0)
    backbone = getattr(model, "backbone", None)
    n_backbone = len(darknet_layers(backbone)) if isinstance(backbone, nn.Module) else -1
    return LoadReport(
        path=str(path),
        header=header,
        file_classes=plan.file_classes,
        layers_total=len(layers),
        layers_in_file=in_file,
        loaded=tuple(i for i in range(in_file) if i not in skipped_ids),
        skipped=tuple(skipped),
        floats_read=data.size,
        backbone_only=in_file == n_backbone,
        eps=eps,
    )


def _read_floats(path: Path) -> tuple[DarknetHeader, int, np.ndarray]:
    """``(header, header length in bytes, float32[n] of everything after it)``."""
    try:
        with open(path, "rb") as f:
            header, offset = _read_header(path, f.read(20), path.stat().st_size)
            f.seek(offset)
            data = np.fromfile(f, dtype="<f4").astype(np.float32, copy=False)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    return header, offset, data


@dataclass(frozen=True)
class _Plan:
    """How a file of ``sizes`` floats per layer maps onto the model (see :func:`_plan`)."""

    arch: str
    file_classes: int
    model_classes: int
    sizes: tuple[int, ...]
    total: int
    #: Appended to size errors when the class count was inferred.
    guess: str


def _plan(
    path: Path,
    model: nn.Module,
    layers: list[_Layer],
    n: int,
    offset: int,
    file_classes: int | None,
) -> _Plan:
    """The file's class count and per-layer sizes for a file of ``n`` floats after an
    ``offset``-byte header, checked against the model.

    Raises:
        CheckpointError: ``n`` is the size of an official file of another architecture, the
            file has no weights, or more floats than the model holds.
    """
    anchors = int(getattr(model, "num_anchors", 3))
    model_classes = int(getattr(model, "num_classes", DARKNET_CLASSES))
    config = getattr(model, "config", None)
    arch = getattr(config, "arch", type(model).__name__)
    known = KNOWN_FILES.get(n)
    if config is not None and known and known[1] != arch:
        raise CheckpointError(
            f"{path}: {n:,} floats, the size of {known[0]}, a {known[1]} file; "
            f"the model is {arch} (use --model {known[1]})"
        )
    fc = file_classes or _file_classes(layers, n, anchors, model_classes)
    sizes = tuple(ly.file_floats(anchors, fc) for ly in layers)
    total = sum(sizes)
    guess = "" if file_classes else f" (file classes inferred as {fc}; pass file_classes)"
    if n == 0:
        raise CheckpointError(f"{path}: a header and no weights ({offset} bytes)")
    if n > total:
        raise CheckpointError(
            f"{path}: {n:,} floats but {arch} with {fc} classes holds {total:,} "
            f"({n - total:,} too many: wrong architecture or class count?){guess}"
        )
    return _Plan(arch, fc, model_classes, sizes, total, guess)


def _match_layers(
    path: Path, layers: list[_Layer], data: np.ndarray, plan: _Plan
) -> tuple[list[tuple[Tensor, np.ndarray]], list[tuple[int, str]], int]:
    """Walk the file layer by layer: ``(copies, skipped, layers in file)``, where ``copies``
    pairs each model tensor to fill with its slice of ``data``; nothing is copied here.

    Raises:
        CheckpointError: the file ends inside a layer (which one, floats needed and left).
    """
    n, fc = data.size, plan.file_classes
    pos, in_file = 0, 0
    copies: list[tuple[Tensor, np.ndarray]] = []
    skipped: list[tuple[int, str]] = []
    for ly, size in zip(layers, plan.sizes, strict=True):
        if pos == n:
            break
        if n - pos < size:
            raise CheckpointError(
                f"{path}: ends inside conv {ly.index} of {len(layers)} ({ly.name}): it needs "
                f"{size:,} floats, {n - pos:,} are left; the file holds {n:,} floats, "
                f"{plan.arch} with {fc} classes {plan.total:,}{plan.guess}"
            )
        if ly.head and fc != plan.model_classes:
            skipped.append(
                (ly.index, f"class-dependent head: file {fc}, model {plan.model_classes}")
            )
        else:
            start = pos
            for t in ly.tensors():
                copies.append((t, data[start : start + t.numel()]))
                start += t.numel()
        pos += size
        in_file += 1
    return copies, skipped, in_file


def write_darknet(
    path: str | Path, model: nn.Module, *, seen: int = 0, eps: float = MODEL_EPS
) -> int:
    """Write ``model`` as a darknet ``.weights`` file (version 0.2.0, int64 ``seen``).

    ``eps``: the BatchNorm epsilon of the reader the file is for; the running variances are
    written as ``var + bn.eps - eps`` (clamped at 0), so that reader reproduces the model
    (module docstring). The default 1e-5 writes them unchanged (bit-exact round trip).

    Written to a temporary file beside ``path`` and renamed over it, so ``path`` is either the
    old file or the complete new one. Returns the number of floats written (after the header).
    """
    path = Path(path)
    eps = check_eps(eps)
    count = 0
    with atomic_write(path) as f:
        f.write(struct.pack("<3iq", 0, 2, 0, seen))
        for ly in _layers(model):
            for t in ly.file_tensors(eps):
                f.write(t.contiguous().numpy().astype("<f4").tobytes())
                count += t.numel()
    return count


def write_darknet_pair(
    folder: str | Path,
    model: YOLOv3,
    *,
    img_size: int | None = None,
    seen: int = 0,
    eps: float = MODEL_EPS,
) -> tuple[Path, Path, int]:
    """Write ``folder/<arch>.weights`` and the matching ``folder/<arch>.cfg`` (the official cfg
    with the model's classes, head filters, anchors, input size ``img_size`` (default the
    model's) and a ``darknet-eps`` comment). Returns both paths and the floats written."""
    folder = Path(folder)
    arch = model.config.arch
    weights, cfg = folder / f"{arch}.weights", folder / f"{arch}.cfg"
    write_cfg(cfg, model.config, img_size=img_size, eps=eps)
    floats = write_darknet(weights, model, seen=seen, eps=eps)
    return weights, cfg, floats


def _official_config(path: Path) -> ModelConfig:
    """The model of an official whole-model file, named by its float count (no cfg given).

    Raises:
        CheckpointError: the count is not that of yolov3.weights or yolov3-tiny.weights.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            _, offset = _read_header(path, f.read(20), size)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    n = (size - offset) // 4
    arch = WHOLE_MODEL_FLOATS.get(n)
    if arch is None:
        known = KNOWN_FILES.get(n)
        what = (
            f"the size of {known[0]}, a backbone only: train from it with `edgeyolo train "
            "--pretrained`"
            if known
            else "the size of neither official yolov3.weights (62,001,757) nor "
            "yolov3-tiny.weights (8,858,734)"
        )
        raise CheckpointError(
            f"{path}: {n:,} floats after the header, {what}; for a darknet-trained model give "
            f"its cfg with --cfg (or put {path.stem}.cfg beside it)"
        )
    return ModelConfig(arch=arch, num_classes=DARKNET_CLASSES, names=COCO_NAMES)


def load_darknet_model(
    weights: str | Path, cfg: str | Path | None = None, *, eps: float | None = None
) -> tuple[YOLOv3, dict[str, Any]]:
    """The model a darknet ``.weights`` (+ ``.cfg``) pair describes, loaded, in eval mode.

    The cfg is ``cfg``, else ``X.cfg`` beside ``X.weights`` when there is one; its architecture,
    classes, anchors and input size define the model, and it must be one of the two official
    topologies (:func:`edgeyolo.models.darknet_cfg.describe_cfg`). Without a cfg the file's float
    count must be that of the official ``yolov3.weights`` or ``yolov3-tiny.weights``: 80 COCO
    classes, darknet's anchors, input size 416.

    Args:
        weights: the ``.weights`` file (a whole model, not a backbone).
        cfg: its cfg, or ``None`` (see above).
        eps: the reader epsilon the file was written for (module docstring); ``None``: the
            ``darknet-eps`` the cfg records (edgeyolo's writer), else 1e-5.

    Returns:
        ``(model, info)``; ``info`` is plain data: ``format`` ("darknet"), ``weights``, ``cfg``
        (path or ``None``), ``eps``, ``header`` (major, minor, revision, seen), ``seen``,
        ``floats``, ``model_config``.

    Raises:
        CheckpointError: a missing or damaged file, one that does not fit the cfg, or a partial
            one (a backbone).
        ConfigError: a cfg that cannot be read or is not an official topology (the first layer
            that differs, named), or a bad ``eps``.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such darknet .weights file")
    if cfg is None and weights.with_suffix(".cfg").is_file():
        cfg = weights.with_suffix(".cfg")
    if cfg is not None:
        described = read_cfg(cfg)
        config, said = described.model_config(), described.eps
    else:
        config, said = _official_config(weights), None
    eps = check_eps(eps if eps is not None else said if said is not None else MODEL_EPS)
    model = build_model(config)
    report = read_darknet(weights, model, file_classes=config.num_classes, eps=eps)
    if report.partial:
        raise CheckpointError(
            f"{weights}: holds {report.layers_in_file} of the {report.layers_total} conv layers "
            f"of {config.arch} (a backbone or partial file): nothing to run; train from it with "
            "`edgeyolo train --pretrained`"
        )
    info = {
        "format": "darknet",
        "weights": str(weights),
        "cfg": None if cfg is None else str(cfg),
        "eps": eps,
        "readers": eps_note(eps),
        "header": dataclasses.asdict(report.header),
        "seen": report.header.seen,
        "floats": report.floats_read,
        "model_config": dataclasses.asdict(config),
    }
    return model.eval(), info


def freeze_backbone(model: nn.Module, frozen: bool = True) -> int:
    """Set ``requires_grad = not frozen`` on ``model.backbone``'s parameters.

    Returns how many parameter tensors changed (0 when already so). BatchNorm running
    statistics still update in train mode, as in Ultralytics' ``--freeze``. Frozen parameters
    get no gradient, so optimizers (which skip ``grad is None``) leave them untouched.
    """
    changed = 0
    for p in model.get_submodule("backbone").parameters():
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed += 1
    return changed
