"""NMS thresholds of an exported model against the ones a user asks for.

An exported graph carries its NMS settings as initializers of its tail (score threshold, IoU
threshold, detections kept); a TensorRT engine has them compiled in, as its manifest's ``nms``
section records. A user's ``--conf``/``--iou`` must not be silently ignored, so this module says,
for each request, what happens:

- the same settings as the model's own: nothing to do;
- a higher score threshold, or fewer detections: exact as a filter on the model's output (greedy
  NMS never lets a lower-scoring box suppress a higher one, and the outputs are sorted by score),
  so both kinds of model apply them after the fact;
- a lower score threshold, another IoU threshold, or more detections: an ONNX graph is re-targeted
  (:func:`retarget_nms` rewrites the tail's initializers in a copy; the
  network, fp32/fp16/int8, runs exactly as exported); a TensorRT engine cannot be changed, so the
  request is refused with the engine's own values and the command that rebuilds it.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeyolo.config import check_nms_settings
from edgeyolo.errors import ConfigError, ModelFileError

__all__ = [
    "NmsPlan",
    "NmsSettings",
    "graph_nms",
    "manifest_nms",
    "plan_nms",
    "read_graph",
    "retarget_nms",
]


@dataclass(frozen=True)
class NmsSettings:
    """Score threshold (a detection needs a score strictly above it), NMS IoU threshold, and
    the number of detections kept per image."""

    conf_thres: float
    iou_thres: float
    max_det: int

    def __str__(self) -> str:
        return f"conf {self.conf_thres:.4g}, IoU {self.iou_thres:.4g}, max_det {self.max_det}"

    def check(self) -> NmsSettings:
        """``self``, or :class:`ConfigError` when a value is out of range."""
        check_nms_settings(self.conf_thres, self.iou_thres, self.max_det)
        return self


@dataclass(frozen=True)
class NmsPlan:
    """What to do so that a model's output obeys ``want``.

    Attributes:
        want: the settings the output will obey.
        baked: the model's own settings.
        retarget: the ONNX graph must be re-targeted to ``want`` (never set for engines).
        limit: the output must be filtered to ``want`` (score above ``want.conf_thres``, first
            ``want.max_det``); ``False`` when the model's own output already obeys it.
    """

    want: NmsSettings
    baked: NmsSettings
    retarget: bool
    limit: bool


def _f32(v: float) -> np.float32:
    return np.float32(v)


def _short(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (0.3, not 0.30000001192)."""
    return float(np.format_float_positional(np.float32(v), trim="-"))


def _wanted(
    baked: NmsSettings, conf: float | None, iou: float | None, max_det: int | None
) -> NmsSettings:
    return NmsSettings(
        baked.conf_thres if conf is None else float(conf),
        baked.iou_thres if iou is None else float(iou),
        baked.max_det if max_det is None else int(max_det),
    ).check()


def plan_nms(
    baked: NmsSettings,
    *,
    conf_thres: float | None,
    iou_thres: float | None,
    max_det: int | None,
    engine: Path | None = None,
) -> NmsPlan:
    """How a model with ``baked`` settings can honour the requested ones (``None``: its own).

    Args:
        baked: the model's own settings (compared in float32, as the graph stores them).
        conf_thres, iou_thres, max_det: the request; ``None`` keeps the model's value.
        engine: the TensorRT engine's path when the model is one (it cannot be re-targeted).

    Raises:
        ConfigError: a value is out of range, or ``engine`` is given and the request needs a
            lower score threshold, another IoU threshold or more detections than it was built
            with; the message gives the engine's values and the command that rebuilds it.
    """
    want = _wanted(baked, conf_thres, iou_thres, max_det)
    lower = _f32(want.conf_thres) < _f32(baked.conf_thres)
    other_iou = _f32(want.iou_thres) != _f32(baked.iou_thres)
    more = want.max_det > baked.max_det
    if not (lower or other_iou or more):
        higher = _f32(want.conf_thres) > _f32(baked.conf_thres)
        return NmsPlan(want, baked, retarget=False, limit=higher or want.max_det < baked.max_det)
    if engine is None:
        return NmsPlan(want, baked, retarget=True, limit=False)
    asked = []
    if lower:
        asked.append(f"conf {want.conf_thres:g} is below the engine's {baked.conf_thres:.4g}")
    if other_iou:
        asked.append(f"IoU {want.iou_thres:g} is not the engine's {baked.iou_thres:.4g}")
    if more:
        asked.append(f"max_det {want.max_det} is above the engine's {baked.max_det}")
    raise ConfigError(
        f"{engine}: its NMS was built in with {baked} and cannot be changed ({'; '.join(asked)}); "
        "a higher conf or a smaller max_det is applied as a filter, anything else needs a "
        f"rebuild: `edgeyolo export --weights CHECKPOINT --engine --conf {want.conf_thres:g} "
        f"--iou {want.iou_thres:g}`, or run the .onnx beside the engine, which is re-targeted"
    )


def read_graph(path: Path) -> onnx.ModelProto:
    """``onnx.load(path)``, or :class:`ModelFileError` saying the file is not readable ONNX."""
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError, onnx's own errors, OSError
        text = " ".join(str(e).split()) or type(e).__name__
        raise ModelFileError(
            f"{path}: cannot be read as an ONNX model ({text}); the file is damaged or not "
            "ONNX: copy it again, or export it again with `edgeyolo export`"
        ) from e


def graph_nms(model: onnx.ModelProto, *, where: str | Path) -> NmsSettings:
    """The NMS settings held by an exported graph's tail (see :mod:`edgeyolo.export.graph`).

    Args:
        model (onnx.ModelProto): an edgeyolo deploy graph, of any precision.
        where: the file it came from, for messages.

    Raises:
        ModelFileError: the graph has no NonMaxSuppression node with constant thresholds.
    """
    nodes = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    inits = {i.name: i for i in model.graph.initializer}
    if len(nodes) != 1 or len(nodes[0].input) < 5 or not set(nodes[0].input[2:5]) <= set(inits):
        raise ModelFileError(
            f"{where}: not an edgeyolo deploy graph (it needs one NonMaxSuppression node whose "
            "thresholds are initializers); export the checkpoint with `edgeyolo export`"
        )
    value = [onnx.numpy_helper.to_array(inits[n]).reshape(-1)[0] for n in nodes[0].input[2:5]]
    # float32 thresholds as the shortest decimals that read back as them (0.3, not 0.30000001)
    conf, iou = (_short(v) for v in (value[2], value[1]))
    return NmsSettings(conf_thres=conf, iou_thres=iou, max_det=int(value[0]))


def retarget_nms(
    model: onnx.ModelProto, *, conf_thres: float, iou_thres: float, max_det: int
) -> onnx.ModelProto:
    """A copy of an exported graph (any precision) with other NMS thresholds and ``K``.

    Only the tail's settings change, so a quantized or fp16 network is scored exactly as it
    is: this is how a graph exported with deployment thresholds is evaluated with COCO's
    (``conf 0.001``, ``max_det 300``). What changes: the ``NonMaxSuppression`` node's three
    settings, the ``K`` of the one ``TopK`` after it, and the ``K`` in the pads of the ``Pad``
    nodes after it (the per-image padding of :func:`edgeyolo.export.graph.nms_tail`). Each gets
    an initializer of its own: onnxsim merges equal initializers, so the candidate cap's ``TopK``
    (before NMS) or an axes constant may share a name with ``K``, and must keep its value.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = list(m.graph.node)
    at = [i for i, n in enumerate(nodes) if n.op_type == "NonMaxSuppression"]
    after = nodes[at[0] + 1 :] if len(at) == 1 else []
    topk = [n for n in after if n.op_type == "TopK"]
    if len(at) != 1 or len(topk) != 1:
        raise ValueError(
            "not an edgeyolo deploy graph (needs one NonMaxSuppression and one TopK after it)"
        )
    nms = nodes[at[0]]
    inits = {i.name: i for i in m.graph.initializer}
    pads = [n for n in after if n.op_type == "Pad"]
    replaced = {*nms.input[2:5], topk[0].input[1], *(n.input[1] for n in pads)}
    for name in sorted(replaced - set(inits)):
        raise ValueError(f"NMS input {name!r} is not an initializer; cannot retarget")
    old_k = int(onnx.numpy_helper.to_array(inits[topk[0].input[1]]).reshape(-1)[0])
    _own_input(m, nms, 2, np.array([max_det], np.int64))
    _own_input(m, nms, 3, np.array([iou_thres], np.float32))
    _own_input(m, nms, 4, np.array([conf_thres], np.float32))
    _own_input(m, topk[0], 1, np.array([max_det], np.int64))
    for pad in pads:
        width = onnx.numpy_helper.to_array(inits[pad.input[1]]).astype(np.int64)
        _own_input(m, pad, 1, np.where(width == old_k, max_det, width))
    _drop_unused_initializers(m.graph, replaced)
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name != "num_dets" and len(dims) >= 2:
            dims[1].dim_value = max_det
    del m.graph.value_info[:]
    return m


def _own_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    """Point ``node.input[index]`` at an initializer holding ``value`` that no other input uses."""
    name = f"retarget/{node.output[0]}/{index}"
    new = onnx.numpy_helper.from_array(value, name)
    for init in model.graph.initializer:
        if init.name == name:  # retargeted before: the initializer is this input's own
            init.CopyFrom(new)
            break
    else:
        model.graph.initializer.append(new)
    node.input[index] = name


def _drop_unused_initializers(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove those of ``names`` that no node reads any more (ONNX Runtime warns about each)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used or i.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def manifest_nms(manifest: dict[str, Any] | None) -> NmsSettings | None:
    """The ``nms`` section of an export manifest, or ``None`` where it has none."""
    nms = (manifest or {}).get("nms")
    if not isinstance(nms, dict):
        return None
    try:
        return NmsSettings(float(nms["conf_thres"]), float(nms["iou_thres"]), int(nms["max_det"]))
    except (KeyError, TypeError, ValueError):
        return None
