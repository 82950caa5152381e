"""The deployable ONNX graph: trained network + box decoding + class-aware NMS, fixed-shape outputs.

Two halves, joined by name:

1. ``DecodeHead`` (traced from PyTorch): ``images`` → ``pred_boxes`` ``[B, N, 4]`` (xyxy, input
   pixels) and ``pred_scores`` ``[B, C, N]`` (objectness × class probability). The network's
   nodes carry the ``/net/`` name prefix, which is how the precision passes tell the network
   (cast to fp16, quantized to int8) from the decode tail (always fp32).
2. The NMS tail (:func:`nms_tail`, written with ``onnx.helper``): the standard ONNX
   ``NonMaxSuppression`` op (TensorRT maps it onto its built-in NMS layer; ONNX Runtime runs it on
   CPU), then a scatter + ``TopK`` that turns the variable number of survivors into padded,
   fixed-shape outputs::

       num_dets [B, 1] int32      boxes [B, K, 4] float32 (xyxy, input pixels)
       scores   [B, K] float32    classes [B, K] int32   (entries past num_dets: 0, 0 and -1)

The tail is written by hand (not traced) so that its thresholds are named initializers that stay
readable in the file and so that no data-dependent shape reaches the tracer.

Input contract: ``images`` is ``float32[B, 3, H, W]``, RGB, values 0..1, letterboxed exactly as
:func:`edgeyolo.data.transforms.letterbox` does (pad value 114). ``B`` is dynamic; ``H`` and ``W``
are fixed at export.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto as TP
from onnx import helper as h
from torch import Tensor, nn

from edgeyolo.postprocess import decode_heads

__all__ = [
    "INPUT_NAME",
    "NET_PREFIX",
    "OUTPUT_NAMES",
    "DecodeHead",
    "RawHeads",
    "dedupe_opsets",
    "export_torch_part",
    "nms_tail",
    "num_predictions",
]

INPUT_NAME = "images"
#: Node-name prefix of the traced network (everything before decoding).
NET_PREFIX = "/net/"
OUTPUT_NAMES = ("num_dets", "boxes", "scores", "classes")
_PRED = ("pred_boxes", "pred_scores")


class DecodeHead(nn.Module):
    """``images [B, 3, H, W]`` → ``(pred_boxes [B, N, 4], pred_scores [B, C, N])``.

    With ``multi_label=False`` (the default, as in :func:`edgeyolo.postprocess.postprocess`) only
    each box's best class keeps its score; the others are zeroed so NMS never sees them.
    """

    def __init__(self, net: nn.Module, *, multi_label: bool = False) -> None:
        super().__init__()
        self.net = net
        self.multi_label = multi_label

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        boxes, obj, cls_prob = decode_heads(self.net(images), self.net.anchors, self.net.strides)
        scores = obj.unsqueeze(-1) * cls_prob  # [B, N, C]
        if not self.multi_label:
            scores = scores * (scores >= scores.amax(dim=-1, keepdim=True)).to(scores.dtype)
        return boxes, scores.transpose(1, 2)


class RawHeads(nn.Module):
    """``images`` → the raw head maps (``--raw``): for people who post-process themselves."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.net(images))


def num_predictions(net: nn.Module, img_size: int) -> int:
    """``N``: predictions per image of ``net`` at a square ``img_size`` input."""
    return sum(net.num_anchors * (img_size // int(s)) ** 2 for s in net.strides)


def export_torch_part(
    net: nn.Module,
    path: Path,
    *,
    img_size: int,
    opset: int = 17,
    raw: bool = False,
    multi_label: bool = False,
) -> list[str]:
    """Trace ``DecodeHead`` (or ``RawHeads`` with ``raw``) to ``path``; returns the output names.

    Uses the TorchScript-based exporter (``dynamo=False``), whose node names keep the module
    path (``/net/stages.0/head/Conv``), which the precision passes rely on.
    """
    wrapper = RawHeads(net) if raw else DecodeHead(net, multi_label=multi_label)
    wrapper.eval()
    names = [f"head{i}" for i in range(len(net.strides))] if raw else list(_PRED)
    dummy = torch.zeros(1, 3, img_size, img_size)
    axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return names


def dedupe_opsets(model: onnx.ModelProto) -> None:
    """Merge duplicate opset imports of ``model`` in place, keeping each domain's highest version
    in first-seen order (``onnx.compose.merge_models`` writes the default domain twice; ONNX
    Runtime's quantizer rejects that: "Failed to find proper ai.onnx domain")."""
    seen: dict[str, int] = {}
    for op in model.opset_import:
        seen[op.domain] = max(seen.get(op.domain, 0), op.version)
    del model.opset_import[:]
    for domain, version in seen.items():
        model.opset_import.add(domain=domain, version=version)


def nms_tail(
    *,
    num_classes: int,
    num_preds: int,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    opset: int = 17,
) -> onnx.ModelProto:
    """The NMS tail as an ONNX model: ``pred_boxes``, ``pred_scores`` → the four outputs.

    Its steps, in node order: NMS (:func:`_select_nodes`), the survivors' scores scattered into
    a dense ``[B, C * N]`` map (:func:`_scatter_nodes`), ``TopK`` over it and the boxes gathered
    (:func:`_top_k_nodes`), then the padded outputs (:func:`_output_nodes`).

    Args:
        num_classes: ``C``.
        num_preds: ``N``, predictions per image (see :func:`num_predictions`).
        conf_thres: a (box, class) pair needs a score strictly above this.
        iou_thres: a box whose IoU with a better box of its class is above this is suppressed.
        max_det: ``K``, detections kept per image (and per class inside NMS).
    """

    if not 0.0 <= conf_thres < 1.0 or not 0.0 < iou_thres <= 1.0:
        raise ValueError(f"need 0 <= conf < 1 and 0 < iou <= 1, got {conf_thres}, {iou_thres}")
    c, n = num_classes, num_preds
    k = min(max_det, c * n)
    inits = _tail_constants(c, n, k, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)
    nodes = [*_select_nodes(), *_scatter_nodes(), *_top_k_nodes(), *_output_nodes()]
    graph = h.make_graph(
        nodes,
        "edgeyolo_nms",
        [
            h.make_tensor_value_info("pred_boxes", TP.FLOAT, ["batch", n, 4]),
            h.make_tensor_value_info("pred_scores", TP.FLOAT, ["batch", c, n]),
        ],
        [
            h.make_tensor_value_info("num_dets", TP.INT32, ["batch", 1]),
            h.make_tensor_value_info("boxes", TP.FLOAT, ["batch", k, 4]),
            h.make_tensor_value_info("scores", TP.FLOAT, ["batch", k]),
            h.make_tensor_value_info("classes", TP.INT32, ["batch", k]),
        ],
        initializer=inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(name: str, value: float | list[float] | list[int], dtype: type) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> onnx.NodeProto:
    """A tail node named ``/nms/<its first output's last part>``."""
    return h.make_node(op, inputs, outputs, name=f"/nms/{outputs[0].split('/')[-1]}", **attrs)


def _tail_constants(
    c: int, n: int, k: int, *, conf_thres: float, iou_thres: float, max_det: int
) -> list[onnx.TensorProto]:
    """The tail's initializers: the three NMS settings (by these names
    :mod:`edgeyolo.runtime.thresholds` finds them), sizes, gather indices and axes."""
    return [
        _const("max_output_boxes_per_class", [max_det], np.int64),
        _const("iou_threshold", [iou_thres], np.float32),
        _const("score_threshold", [conf_thres], np.float32),
        _const("nms/num_preds", n, np.int64),
        _const("nms/k", [k], np.int64),
        _const("nms/dense_width", [c * n], np.int64),
        _const("nms/idx0", 0, np.int64),
        _const("nms/idx1", 1, np.int64),
        _const("nms/idx2", 2, np.int64),
        _const("nms/axes1", [1], np.int64),
        _const("nms/axes2", [2], np.int64),
        _const("nms/four", [4], np.int64),
        _const("nms/minus_one", -1, np.int64),
        _const("nms/zero", 0.0, np.float32),
    ]


def _select_nodes() -> list[onnx.NodeProto]:
    """``NonMaxSuppression`` → ``nms/selected [S, 3]`` (batch, class, box) and the survivors'
    scores ``nms/sel_scores [S]``, with the three index columns ``nms/sel_b``, ``_c``, ``_i``."""
    nms_inputs = [
        "pred_boxes",
        "pred_scores",
        "max_output_boxes_per_class",
        "iou_threshold",
        "score_threshold",
    ]
    return [
        _node("NonMaxSuppression", nms_inputs, ["nms/selected"], center_point_box=0),
        _node("GatherND", ["pred_scores", "nms/selected"], ["nms/sel_scores"]),
        _node("Gather", ["nms/selected", "nms/idx0"], ["nms/sel_b"], axis=1),
        _node("Gather", ["nms/selected", "nms/idx1"], ["nms/sel_c"], axis=1),
        _node("Gather", ["nms/selected", "nms/idx2"], ["nms/sel_i"], axis=1),
    ]


def _scatter_nodes() -> list[onnx.NodeProto]:
    """The survivors' scores scattered into ``nms/dense [B, C * N]`` (zero elsewhere) at
    ``class * N + box``."""
    zero = h.make_tensor("value", TP.FLOAT, [1], [0.0])
    return [
        _node("Mul", ["nms/sel_c", "nms/num_preds"], ["nms/sel_cn"]),
        _node("Add", ["nms/sel_cn", "nms/sel_i"], ["nms/sel_flat"]),
        _node("Unsqueeze", ["nms/sel_b", "nms/axes1"], ["nms/sel_b1"]),
        _node("Unsqueeze", ["nms/sel_flat", "nms/axes1"], ["nms/sel_flat1"]),
        _node("Concat", ["nms/sel_b1", "nms/sel_flat1"], ["nms/scatter_idx"], axis=1),
        _node("Shape", ["pred_scores"], ["nms/scores_shape"], start=0, end=1),
        _node("Concat", ["nms/scores_shape", "nms/dense_width"], ["nms/dense_shape"], axis=0),
        _node("ConstantOfShape", ["nms/dense_shape"], ["nms/dense_zero"], value=zero),
        _node("ScatterND", ["nms/dense_zero", "nms/scatter_idx", "nms/sel_scores"], ["nms/dense"]),
    ]


def _top_k_nodes() -> list[onnx.NodeProto]:
    """``TopK`` of ``nms/dense`` → ``nms/top_scores [B, K]``, their class ``nms/top_cls`` and
    box ``nms/top_boxes [B, K, 4]`` (gathered from ``pred_boxes``)."""
    return [
        _node("TopK", ["nms/dense", "nms/k"], ["nms/top_scores", "nms/top_idx"], axis=1),
        _node("Div", ["nms/top_idx", "nms/num_preds"], ["nms/top_cls"]),
        _node("Mod", ["nms/top_idx", "nms/num_preds"], ["nms/top_box"]),
        _node("Unsqueeze", ["nms/top_box", "nms/axes2"], ["nms/top_box1"]),
        _node("Shape", ["nms/top_box1"], ["nms/top_box1_shape"], start=0, end=2),
        _node("Concat", ["nms/top_box1_shape", "nms/four"], ["nms/gather_shape"], axis=0),
        _node("Expand", ["nms/top_box1", "nms/gather_shape"], ["nms/gather_idx"]),
        _node("GatherElements", ["pred_boxes", "nms/gather_idx"], ["nms/top_boxes"], axis=1),
    ]


def _output_nodes() -> list[onnx.NodeProto]:
    """The four outputs, padded past ``num_dets`` (a zero score): boxes 0, scores 0, class -1."""
    return [
        _node("Greater", ["nms/top_scores", "nms/zero"], ["nms/valid"]),
        _node("Cast", ["nms/valid"], ["nms/valid_f"], to=TP.FLOAT),
        _node("Unsqueeze", ["nms/valid_f", "nms/axes2"], ["nms/valid_f2"]),
        _node("Mul", ["nms/top_boxes", "nms/valid_f2"], ["boxes"]),
        _node("Identity", ["nms/top_scores"], ["scores"]),
        _node("Where", ["nms/valid", "nms/top_cls", "nms/minus_one"], ["nms/cls64"]),
        _node("Cast", ["nms/cls64"], ["classes"], to=TP.INT32),
        _node("ReduceSum", ["nms/valid_f", "nms/axes1"], ["nms/count_f"], keepdims=1),
        _node("Cast", ["nms/count_f"], ["num_dets"], to=TP.INT32),
    ]
