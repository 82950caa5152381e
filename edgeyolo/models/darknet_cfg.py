"""Darknet ``.cfg`` text for the two official topologies: write one for a model, read one back.

Only the layer lists of darknet's ``cfg/yolov3.cfg`` and ``cfg/yolov3-tiny.cfg`` (the models of
:mod:`edgeyolo.models.yolov3`) are accepted. A cfg is compared with them layer by layer
(section, ``filters``, ``size``, ``stride``, padding, ``batch_normalize``, ``activation``,
``[maxpool]``/``[route]``/``[shortcut]``/``[upsample]`` parameters, anchors per ``[yolo]``) and
refused at the first layer that differs, naming its index, section, key, and both values.
What may differ from the official files: the input size (``[net] width = height``, a multiple
of 32), the class count (``[yolo] classes = C`` with head ``filters = 3 * (5 + C)``) and the
anchors (``[yolo] anchors`` and ``mask``). Keys darknet reads only for training (the ``[net]``
hyper-parameters, ``[yolo] jitter`` ...) are ignored; any other key is refused, since it may
change the forward pass.

Parsing follows darknet's ``read_cfg``: every blank inside a line is dropped, lines starting
with ``#`` or ``;`` are comments, ``[conv]``/``[max]``/``[network]`` are aliases. Written files
follow the official files' layout (a blank line after each section, ``[net]`` in two blocks),
which the line-oriented readers of NVIDIA's yolov3_onnx sample and tensorrt_demos rely on.

This module is plain Python: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeyolo._version import __version__
from edgeyolo.config import YOLOV3_ANCHORS, YOLOV3_TINY_ANCHORS, ModelConfig, num_scales
from edgeyolo.errors import ConfigError
from edgeyolo.fileio import atomic_write

#: BatchNorm epsilon of edgeyolo's models (``edgeyolo.models.common.BN_EPS``) and of the darknet
#: readers that normalise with ``sqrt(var + 1e-5)``: darknet's CUDA path (and AlexeyAB's CPU
#: path), NVIDIA's yolov3_onnx sample, tensorrt_demos, DeepStream-Yolo. Files written for it
#: store the model's running variances unchanged.
MODEL_EPS: float = 1e-5
#: Epsilon of OpenCV's DNN darknet importer (``sqrt(var + 1e-6)``).
OPENCV_EPS: float = 1e-6
#: Largest reader epsilon accepted by ``--darknet-eps``.
MAX_EPS: float = 1e-3

#: darknet's ``data/coco.names``: the 80 classes of the official ``.weights`` files, in order.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: Residual blocks per Darknet-53 stage (``edgeyolo.models.darknet.DARKNET53_BLOCKS``).
_DARKNET53_BLOCKS: tuple[int, ...] = (1, 2, 8, 8, 4)
#: darknet's section aliases (``string_to_layer_type``).
_ALIASES = {"conv": "convolutional", "network": "net", "max": "maxpool"}
#: Keys checked apart from the layer comparison.
_SEPARATE: dict[str, set[str]] = {"net": {"width", "height"}, "yolo": {"anchors"}}
#: Keys darknet reads only for training (or, in ``[net]``, every other key).
_TRAINING_ONLY: dict[str, set[str]] = {
    "convolutional": {"stopbackward", "train_only_bn", "learning_rate"},
    "yolo": {
        "jitter", "ignore_thresh", "truth_thresh", "random", "max", "max_delta",
        "counters_per_class", "label_smooth_eps", "iou_loss", "iou_normalizer",
        "obj_normalizer", "cls_normalizer", "delta_normalizer", "iou_thresh", "iou_thresh_kind",
        "beta_nms", "nms_kind", "focal_loss", "objectness_smooth", "resize", "map",
        "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
        "track_ciou_norm", "embedding_layer", "equidistant_point",
    },
}  # fmt: skip
_EPS_RE = re.compile(r"^#.*\bdarknet-eps=(\S+?):?(?:\s|$)", re.MULTILINE)


@dataclass
class Section:
    """One ``[kind]`` section of a cfg: its options as written (blanks dropped) and the 1-based
    line of its header (0 for a generated section)."""

    kind: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class DarknetCfg:
    """What a checked cfg says about the model.

    Attributes:
        arch: ``"yolov3"`` or ``"yolov3-tiny"``.
        classes: ``C`` of every ``[yolo]`` layer.
        img_size: ``[net] width`` (= ``height``).
        anchors: per head, in head order (coarsest first), the ``(w, h)`` of its mask; flattened
            from the finest head on, these are sorted by area, as :class:`ModelConfig` keeps them.
        eps: the reader epsilon recorded by edgeyolo's writer (``darknet-eps=`` comment), or
            ``None`` for a cfg that does not say.
        source: the file (or ``"cfg"``).
    """

    arch: str
    classes: int
    img_size: int
    anchors: tuple[tuple[tuple[float, float], ...], ...]
    eps: float | None
    source: str

    def model_config(self, names: Sequence[str] | None = None) -> ModelConfig:
        """The :class:`ModelConfig` of this cfg. ``names``: class names; default COCO's for 80
        classes, else ``class0 .. class{C-1}``. Official anchors become ``anchors=None``."""
        flat = tuple(a for head in reversed(self.anchors) for a in head)
        official = YOLOV3_ANCHORS if self.arch == "yolov3" else YOLOV3_TINY_ANCHORS
        same = [tuple(map(float, a)) for a in official] == list(flat)
        if names is None:
            names = COCO_NAMES if self.classes == 80 else [f"class{i}" for i in range(self.classes)]
        return ModelConfig(
            arch=self.arch,
            num_classes=self.classes,
            img_size=self.img_size,
            anchors=None if same else flat,
            names=tuple(names),
        )


def check_eps(eps: float, *, what: str = "--darknet-eps") -> float:
    """``eps`` as a float in ``(0, MAX_EPS]``.

    Raises:
        ConfigError: otherwise.
    """
    if not 0.0 < float(eps) <= MAX_EPS:
        raise ConfigError(
            f"{what} must be in (0, {MAX_EPS:g}], got {eps!r}: the BatchNorm epsilon of the "
            f"reader the files are for ({MODEL_EPS:g}: darknet GPU, TensorRT samples, "
            f"DeepStream-Yolo; {OPENCV_EPS:g}: OpenCV DNN)"
        )
    return float(eps)


# ------------------------------------------------------------------------------------ parsing


def parse_cfg(text: str, *, source: str = "cfg") -> list[Section]:
    """Split cfg text into sections, as darknet's ``read_cfg`` does.

    Raises:
        ConfigError: a line that is neither ``[section]``, ``key=value`` nor a comment, an option
            before the first section or repeated within one, or no section at all (with
            ``source:line``).
    """
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        where = f"{source}:{number}"
        if line[0] == "[":
            if len(line) < 3 or line[-1] != "]":
                raise ConfigError(f"{where}: {raw.strip()!r} is not a [section] header")
            kind = line[1:-1]
            sections.append(Section(_ALIASES.get(kind, kind), {}, number))
            continue
        key, eq, value = line.partition("=")
        if not (eq and key and value):
            raise ConfigError(f"{where}: {raw.strip()!r} is not key=value")
        if not sections:
            raise ConfigError(f"{where}: option {key!r} before the first [section]")
        if key in sections[-1].options:
            raise ConfigError(f"{where}: {key!r} given twice in [{sections[-1].kind}]")
        sections[-1].options[key] = value
    if not sections:
        raise ConfigError(f"{source}: no [section] in it: not a darknet cfg")
    return sections


def recorded_eps(text: str) -> float | None:
    """The reader epsilon of a ``# ... darknet-eps=E`` comment (edgeyolo's writer), or ``None``."""
    m = _EPS_RE.search(text)
    if m is None:
        return None
    try:
        return check_eps(float(m.group(1)), what="the cfg's darknet-eps comment")
    except ValueError as e:
        raise ConfigError(f"the cfg's darknet-eps comment {m.group(1)!r} is not a number") from e


# ------------------------------------------------------------------- the official layer lists


def _num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def _conv(filters: int, size: int, stride: int = 1) -> Section:
    opts = {"batch_normalize": "1", "filters": str(filters), "size": str(size)}
    return Section(
        "convolutional", {**opts, "stride": str(stride), "pad": "1", "activation": "leaky"}
    )


def _head(classes: int) -> Section:
    opts = {"size": "1", "stride": "1", "pad": "1", "filters": str(3 * (5 + classes))}
    return Section("convolutional", {**opts, "activation": "linear"})


def _yolo(mask: Sequence[int], anchors: Sequence[tuple[float, float]], classes: int) -> Section:
    text = ",  ".join(f"{_num(w)},{_num(h)}" for w, h in anchors)
    opts = {"mask": ",".join(map(str, mask)), "anchors": text, "classes": str(classes)}
    opts |= {"num": str(len(anchors)), "jitter": ".3", "ignore_thresh": ".7"}
    return Section("yolo", {**opts, "truth_thresh": "1", "random": "1"})


def _route(*layers: int) -> Section:
    return Section("route", {"layers": ", ".join(map(str, layers))})


def _yolov3_layers(classes: int, anchors: Sequence[tuple[float, float]]) -> list[Section]:
    layers = [_conv(32, 3)]
    channels, stage_ends = 32, []
    for blocks in _DARKNET53_BLOCKS:
        channels *= 2
        layers.append(_conv(channels, 3, 2))
        for _ in range(blocks):
            layers += [_conv(channels // 2, 1), _conv(channels, 3)]
            layers.append(Section("shortcut", {"from": "-3", "activation": "linear"}))
        stage_ends.append(len(layers) - 1)  # 36 and 61 are routed to
    for head, width in enumerate((512, 256, 128)):
        if head:
            layers += [_route(-4), _conv(width, 1), Section("upsample", {"stride": "2"})]
            layers.append(_route(-1, stage_ends[-1 - head]))
        for _ in range(3):
            layers += [_conv(width, 1), _conv(2 * width, 3)]
        mask = range(3 * (2 - head), 3 * (3 - head))
        layers += [_head(classes), _yolo(mask, anchors, classes)]
    return layers


def _tiny_layers(classes: int, anchors: Sequence[tuple[float, float]]) -> list[Section]:
    layers: list[Section] = []
    for filters in (16, 32, 64, 128, 256, 512):
        stride = 1 if filters == 512 else 2  # the size-2 stride-1 pool keeps stride 32
        layers += [_conv(filters, 3), Section("maxpool", {"size": "2", "stride": str(stride)})]
    layers += [_conv(1024, 3), _conv(256, 1), _conv(512, 3)]
    layers += [_head(classes), _yolo((3, 4, 5), anchors, classes)]
    layers += [_route(-4), _conv(128, 1), Section("upsample", {"stride": "2"}), _route(-1, 8)]
    layers += [_conv(256, 3), _head(classes), _yolo((0, 1, 2), anchors, classes)]
    return layers


def official_layers(
    arch: str, classes: int = 80, anchors: Sequence[tuple[float, float]] | None = None
) -> list[Section]:
    """The sections after ``[net]`` of darknet's ``yolov3.cfg`` / ``yolov3-tiny.cfg``, with
    ``classes`` classes and ``anchors`` (sorted by area; ``None``: darknet's)."""
    num_scales(arch)  # raises ConfigError for an unknown arch
    if anchors is None:
        anchors = YOLOV3_ANCHORS if arch == "yolov3" else YOLOV3_TINY_ANCHORS
    build = _yolov3_layers if arch == "yolov3" else _tiny_layers
    return build(classes, anchors)


# ---------------------------------------------------------------------------------- writing

_NET_HEAD = "[net]\n# Testing\nbatch=1\nsubdivisions=1\n# Training\n# batch=64\n# subdivisions=16"
_NET_TAIL = (
    "channels=3\nmomentum=0.9\ndecay=0.0005\nangle=0\nsaturation = 1.5\nexposure = 1.5\nhue=.1\n"
    "\nlearning_rate=0.001\nburn_in=1000\nmax_batches = 500200\npolicy=steps\n"
    "steps=400000,450000\nscales=.1,.1\n"
)


def eps_note(eps: float) -> str:
    """Which darknet-family readers reproduce a file written for reader epsilon ``eps``."""
    if eps == MODEL_EPS:
        return (
            "readers normalising with sqrt(var + 1e-5): darknet GPU, AlexeyAB darknet, "
            "TensorRT yolov3_onnx, tensorrt_demos, DeepStream-Yolo"
        )
    if eps == OPENCV_EPS:
        return "readers normalising with sqrt(var + 1e-6): OpenCV DNN"
    return f"readers normalising with sqrt(var + {eps:g})"


def cfg_text(config: ModelConfig, *, img_size: int | None = None, eps: float = MODEL_EPS) -> str:
    """darknet cfg text of ``config``'s model: the official layer list with its classes,
    ``filters = 3 * (5 + C)``, anchors and input size (``img_size``, default the config's), and a
    comment recording the reader epsilon its ``.weights`` are written for."""
    eps = check_eps(eps)
    size = img_size or config.img_size
    if size % 32 or size < 32:
        raise ConfigError(f"input size {size} is not a positive multiple of 32")
    layers = official_layers(config.arch, config.num_classes, config.resolved_anchors)
    head = [
        f"# {config.arch}, {config.num_classes} classes, {size}x{size} input: written by "
        f"edgeyolo {__version__}",
        f"# edgeyolo darknet-eps={eps:g}: the .weights beside this file hold BatchNorm running",
        f"# variances for {eps_note(eps)}",
        "",
        _NET_HEAD,
        f"width={size}\nheight={size}",
        _NET_TAIL,
    ]
    body = [
        "\n".join([f"[{s.kind}]", *(f"{k}={v}" for k, v in s.options.items())]) + "\n"
        for s in layers
    ]
    return "\n".join(head + body) + "\n"


def write_cfg(
    path: str | Path, config: ModelConfig, *, img_size: int | None = None, eps: float = MODEL_EPS
) -> Path:
    """Write :func:`cfg_text` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    text = cfg_text(config, img_size=img_size, eps=eps)
    with atomic_write(path) as f:
        f.write(text.encode())
    return path


# --------------------------------------------------------------------------------- checking


class _Reader:
    """Reads one section's options with darknet's defaults and remembers the keys it read."""

    def __init__(self, section: Section, index: int, source: str) -> None:
        self.section, self.index, self.source = section, index, source
        self.read: set[str] = set()

    def where(self) -> str:
        s = self.section
        return f"{self.source}:{s.line}: layer {self.index} [{s.kind}]"

    def text(self, key: str, default: str | None) -> str | None:
        self.read.add(key)
        return self.section.options.get(key, default)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.text(key, None if default is None else str(default))
        if value is None:
            raise ConfigError(f"{self.where()}: no {key}=")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{self.where()}: {key}={value!r} is not an integer") from None

    def numbers(self, key: str, default: str | None = None) -> tuple[float, ...]:
        value = self.text(key, default)
        if value is None:
            raise ConfigError(f"{self.where()}: no {key}=")
        try:
            return tuple(float(v) for v in value.split(",") if v)
        except ValueError:
            raise ConfigError(f"{self.where()}: {key}={value!r} is not a list of numbers") from None

    def refs(self, key: str) -> tuple[int, ...]:
        """Layer indices (``layers=``, ``from=``), relative ones made absolute as darknet does."""
        values = self.numbers(key)
        if any(not v.is_integer() for v in values):
            raise ConfigError(f"{self.where()}: {key}= must hold layer indices (integers)")
        return tuple(self.index + int(v) if v < 0 else int(v) for v in values)


def _values(section: Section, index: int, source: str) -> tuple[dict[str, object], list[str]]:
    """The compared values of layer ``index`` (darknet's defaults filled in) and the keys it
    has that edgeyolo neither compares nor knows to be training-only."""
    r, kind = _Reader(section, index, source), section.kind
    v: dict[str, object] = {}
    if kind == "convolutional":
        size = r.integer("size", 1)
        v = {"batch_normalize": r.integer("batch_normalize", 0), "filters": r.integer("filters", 1)}
        v |= {"size": size, "stride": r.integer("stride", 1)}
        pad, padding = r.integer("pad", 0), r.integer("padding", 0)
        v["padding (pad=1: size/2)"] = size // 2 if pad else padding
        v["activation"] = r.text("activation", "logistic")
        v |= {k: r.integer(k, 1) for k in ("groups", "dilation")}
        v |= {k: r.integer(k, 0) for k in ("binary", "xnor", "dontload", "dontloadscales")}
    elif kind == "maxpool":
        stride = r.integer("stride", 1)
        size = r.integer("size", stride)
        v = {"size": size, "stride": stride, "padding": r.integer("padding", size - 1)}
    elif kind == "route":
        v = {"layers": r.refs("layers"), "groups": r.integer("groups", 1)}
        v["group_id"] = r.integer("group_id", 0)
    elif kind == "shortcut":
        v = {"from": r.refs("from"), "activation": r.text("activation", "linear")}
    elif kind == "upsample":
        v = {"stride": r.integer("stride", 2), "scale": r.numbers("scale", "1")}
    elif kind == "yolo":
        v = {"classes": r.integer("classes", 20), "num": r.integer("num", 1)}
        v["anchors per head (mask)"] = len(r.refs("mask"))
        v |= {"scale_x_y": r.numbers("scale_x_y", "1"), "new_coords": r.integer("new_coords", 0)}
    known = r.read | _SEPARATE.get(kind, set()) | _TRAINING_ONLY.get(kind, set())
    return v, [k for k in section.options if k not in known]


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(_num(x) if isinstance(x, float) else str(x) for x in value)
    return str(value)


def _first_difference(
    found: list[Section], expected: list[Section], arch: str, source: str
) -> tuple[int, str] | None:
    """``(index, what differs)`` of the first layer of ``found`` unlike ``arch``'s, or ``None``."""
    for i, (f, e) in enumerate(zip(found, expected, strict=False)):
        where = f"layer {i} [{f.kind}] (line {f.line})"
        if f.kind != e.kind:
            return i, f"{where}: {arch} has a [{e.kind}] layer here"
        got, unknown = _values(f, i, source)
        want, _ = _values(e, i, arch)
        for key, value in want.items():
            if got[key] != value:
                why = f"{where}: {key}: {arch} has {_show(value)}, the cfg {_show(got[key])}"
                if key == "filters" and e.options.get("activation") == "linear":
                    why += (
                        f" (a head conv: 3 * (5 + classes), [yolo] classes={int(value) // 3 - 5})"
                    )
                return i, why
        if unknown:
            return i, (
                f"{where}: key {unknown[0]!r} is not in {arch}.cfg (edgeyolo cannot tell whether "
                "it changes the output)"
            )
    n = min(len(found), len(expected))
    if len(found) > n:
        return n, f"layer {n} [{found[n].kind}] (line {found[n].line}): {arch} ends before it"
    if len(expected) > n:
        return n, f"the cfg ends after layer {n - 1}; {arch} goes on with a [{expected[n].kind}]"
    return None


def _check_topology(layers: list[Section], classes: int, source: str) -> str:
    """The arch whose official layer list ``layers`` is (with ``classes`` classes).

    Raises:
        ConfigError: neither; names the first difference from the closer of the two.
    """
    best: tuple[tuple[int, int], str, str] | None = None
    for arch in ("yolov3", "yolov3-tiny"):
        expected = official_layers(arch, classes)
        diff = _first_difference(layers, expected, arch, source)
        if diff is None:
            return arch
        # the later first difference wins; on a tie, the closer layer count
        rank = (diff[0], -abs(len(layers) - len(expected)))
        if best is None or rank > best[0]:
            best = (rank, arch, diff[1])
    assert best is not None
    _, arch, detail = best
    raise ConfigError(
        f"{source}: not darknet's {arch} topology (the closer of yolov3 and yolov3-tiny): "
        f"{detail}. edgeyolo builds those two layer lists only; their input size, classes and "
        "anchors may differ"
    )


def _input_size(net: Section, source: str) -> int:
    r = _Reader(net, -1, source)
    width, height, channels = (
        r.integer("width", 0),
        r.integer("height", 0),
        r.integer("channels", 0),
    )
    where = f"{source}:{net.line}: [net]"
    if channels != 3:
        raise ConfigError(f"{where}: channels={channels}; edgeyolo's models take 3 (RGB)")
    if width != height:
        raise ConfigError(f"{where}: width={width}, height={height}; edgeyolo takes square inputs")
    if width < 32 or width % 32:
        raise ConfigError(f"{where}: width={width} is not a positive multiple of 32")
    return width


def _head_anchors(
    layers: list[Section], source: str
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Per ``[yolo]`` layer (head order), the anchors its mask picks.

    Raises:
        ConfigError: anchors that are not ``num`` positive pairs, a mask index out of range, or
            anchors that edgeyolo's heads cannot take (not sorted by area from the last head).
    """
    heads = []
    for i, s in enumerate(layers):
        if s.kind != "yolo":
            continue
        r = _Reader(s, i, source)
        num, values, mask = r.integer("num", 1), r.numbers("anchors", ""), r.refs("mask")
        if len(values) != 2 * num or any(x <= 0 for x in values):
            raise ConfigError(
                f"{r.where()}: anchors= must be num={num} positive (w, h) pairs; it has "
                f"{len(values)} numbers"
            )
        pairs = list(zip(values[::2], values[1::2], strict=True))
        if any(not 0 <= m < num for m in mask):
            raise ConfigError(f"{r.where()}: mask={_show(mask)} has an index outside 0..{num - 1}")
        heads.append(tuple(pairs[m] for m in mask))
    flat = [a for head in reversed(heads) for a in head]
    areas = [w * h for w, h in flat]
    if any(b < a for a, b in zip(areas, areas[1:], strict=False)):
        raise ConfigError(
            f"{source}: the anchors the [yolo] masks pick, from the last head to the first, are "
            f"not sorted by area ({_show(tuple(x for a in flat for x in a))}); edgeyolo's heads "
            "take anchors sorted by area, the largest for the first head"
        )
    return tuple(heads)


def _classes(layers: list[Section], source: str) -> int:
    """The ``classes=`` all ``[yolo]`` layers share (80 when there are none).

    Raises:
        ConfigError: the layers disagree, or say fewer than 1.
    """
    said = {
        i: _Reader(s, i, source).integer("classes", 20)
        for i, s in enumerate(layers)
        if s.kind == "yolo"
    }
    if len(set(said.values())) > 1:
        parts = ", ".join(f"layer {i}: {c}" for i, c in said.items())
        raise ConfigError(f"{source}: the [yolo] layers disagree on classes= ({parts})")
    classes = next(iter(said.values()), 80)
    if classes < 1:
        raise ConfigError(f"{source}: classes={classes}; a model needs at least 1 class")
    return classes


def describe_cfg(text: str, *, source: str = "cfg") -> DarknetCfg:
    """Check cfg text against the official topologies and say what model it describes.

    Raises:
        ConfigError: unparsable text, a first section other than ``[net]``, a non-square input
            or one not a multiple of 32, a layer unlike the official ones (the first, named), or
            anchors edgeyolo cannot take.
    """
    sections = parse_cfg(text, source=source)
    net, layers = sections[0], sections[1:]
    if net.kind != "net":
        raise ConfigError(
            f"{source}:{net.line}: the first section is [{net.kind}]; "
            "a darknet cfg starts with [net]"
        )
    size = _input_size(net, source)
    classes = _classes(layers, source)
    arch = _check_topology(layers, classes, source)
    return DarknetCfg(
        arch, classes, size, _head_anchors(layers, source), recorded_eps(text), source
    )


def read_cfg(path: str | Path) -> DarknetCfg:
    """:func:`describe_cfg` of a file.

    Raises:
        ConfigError: the file cannot be read, or as :func:`describe_cfg`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the cfg ({e.strerror})") from e
    return describe_cfg(text, source=str(path))
