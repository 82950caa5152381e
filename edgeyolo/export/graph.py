"""The deployable ONNX graph: trained network + box decoding + class-aware NMS, fixed-shape outputs.

Two halves, joined by name:

1. ``DecodeHead`` (traced from PyTorch): ``images`` → ``pred_boxes`` ``[B, N, 4]`` (xyxy, input
   pixels) and ``pred_scores`` ``[B, N, C]`` (objectness × class probability). The network's
   nodes carry the ``/net/`` name prefix, which is how the precision passes tell the network
   (cast to fp16, quantized to int8) from the decode tail (always fp32).
2. The NMS tail (:func:`nms_tail`, written with ``onnx.helper``): a cap on the candidates per
   image, the standard ONNX ``NonMaxSuppression`` op (TensorRT maps it onto its built-in NMS
   layer; ONNX Runtime runs it on CPU), then a ``TopK`` per image over that image's survivors
   that turns their variable number into padded, fixed-shape outputs::

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

from edgeyolo.config import DEFAULT_MAX_CANDIDATES
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
    """``images [B, 3, H, W]`` → ``(pred_boxes [B, N, 4], pred_scores [B, N, C])``.

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
        return boxes, scores  # [B, N, C]: the tail reads each box's scores as one row


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
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    multi_label: bool = False,
    opset: int = 17,
) -> onnx.ModelProto:
    """The NMS tail as an ONNX model: ``pred_boxes [B, N, 4]``, ``pred_scores [B, N, C]`` → the
    four outputs. Every op is one TensorRT's ONNX parser takes from 8.6 on, ``Shape`` without
    ``start``/``end`` (8.6 ignores them) and no ``ScatterND`` (opset 18+ needs 10.9).

    Its steps, in node order:

    1. the candidate cap (:func:`_cap_nodes`, only where it can bind): the ``max_candidates``
       highest-scoring candidates of each image, ties to the lower index, as
       :func:`edgeyolo.postprocess.postprocess` picks them. A candidate is a box (its best
       score) or, with ``multi_label``, a (box, class) pair. TensorRT's NMS layer considers at
       most 5000 boxes per image (2000 on SM 5.3/6.2) and drops the rest without a word, so the
       cap makes its input the one ONNX Runtime and PyTorch see. Without the cap, the scores
       are transposed to ``[B, C, N]`` for NMS (what :class:`DecodeHead` once did).
    2. ``NonMaxSuppression`` and the survivors' scores, boxes and classes (:func:`_select_nodes`);
    3. per image, ``TopK`` over that image's survivors only (:func:`_top_k_nodes`): an
       ``[B, S + K]`` table of the ``S`` survivors of the batch (another image's entries read -1)
       padded with ``K`` zeros, so the work grows with the survivors, not with ``C * N``;
    4. the padded outputs (:func:`_output_nodes`).

    Ties in step 3 keep the NMS op's order: ONNX Runtime's (class, then score, then box index)
    gives the order of a sort by score, then class, then box index.

    Args:
        num_classes: ``C``.
        num_preds: ``N``, predictions per image (see :func:`num_predictions`).
        conf_thres: a (box, class) pair needs a score strictly above this.
        iou_thres: a box whose IoU with a better box of its class is above this is suppressed.
        max_det: ``K``, detections kept per image (and per class inside NMS).
        max_candidates: ``M``, candidates per image that enter NMS (TensorRT: ``M <= 3840``).
        multi_label: the scores hold every class of a box (the cap then counts pairs).
        opset: the ONNX opset the tail is written for (ReduceMax takes its axes as an input
            from 18 on).
    """

    if not 0.0 <= conf_thres < 1.0 or not 0.0 < iou_thres <= 1.0:
        raise ValueError(f"need 0 <= conf < 1 and 0 < iou <= 1, got {conf_thres}, {iou_thres}")
    if max_det < 1 or max_candidates < 1:
        raise ValueError(
            f"need max_det >= 1 and max_candidates >= 1, got {max_det}, {max_candidates}"
        )
    c, n = num_classes, num_preds
    k = min(max_det, c * n)
    cap = max_candidates if max_candidates < (c * n if multi_label else n) else None
    inits = _tail_constants(c, k, cap, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)
    if cap is None:  # NMS reads [B, C, N]
        first = [_node("Transpose", ["pred_scores"], ["nms/scores_cn"], perm=[0, 2, 1])]
        inputs = ("pred_boxes", "nms/scores_cn")
    else:
        first = _cap_nodes(multi_label=multi_label, opset=opset)
        inputs = ("nms/cand_boxes", "nms/cand_scores")
    nodes = [
        *_batch_nodes(),
        *first,
        *_select_nodes(*inputs),
        *_top_k_nodes(),
        *_output_nodes(),
    ]
    graph = h.make_graph(
        nodes,
        "edgeyolo_nms",
        [
            h.make_tensor_value_info("pred_boxes", TP.FLOAT, ["batch", n, 4]),
            h.make_tensor_value_info("pred_scores", TP.FLOAT, ["batch", n, c]),
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
    c: int, k: int, cap: int | None, *, conf_thres: float, iou_thres: float, max_det: int
) -> list[onnx.TensorProto]:
    """The tail's initializers: the three NMS settings, ``K`` (the output ``TopK``'s and the
    ``Pad`` widths after NMS: :func:`edgeyolo.runtime.thresholds.retarget_nms` rewrites these),
    the cap, and small index constants."""
    inits = [
        _const("max_output_boxes_per_class", [max_det], np.int64),
        _const("iou_threshold", [iou_thres], np.float32),
        _const("score_threshold", [conf_thres], np.float32),
        _const("nms/k", [k], np.int64),
        _const("nms/pad_rows", [0, 0, 0, k], np.int64),  # [B, S] -> [B, S + K]
        _const("nms/pad_list", [0, k], np.int64),  # [S] -> [S + K]
        _const("nms/pad_boxes", [0, 0, k, 0], np.int64),  # [S, 4] -> [S + K, 4]
        _const("nms/idx0", 0, np.int64),
        _const("nms/idx1", 1, np.int64),
        _const("nms/first", [0], np.int64),
        _const("nms/cols_bm", [0, 2], np.int64),
        _const("nms/axes1", [1], np.int64),
        _const("nms/minus_one", -1, np.int64),
        _const("nms/zero", 0.0, np.float32),
        _const("nms/minus_one_f", -1.0, np.float32),
    ]
    if cap is None:
        return inits
    return [
        *inits,
        _const("nms/cap", [cap], np.int64),
        _const("nms/axes2", [2], np.int64),
        _const("nms/num_classes", c, np.int64),
        _const("nms/class_ids", np.arange(c).reshape(1, c, 1).tolist(), np.int64),
    ]


def _batch_nodes() -> list[onnx.NodeProto]:
    """The batch size ``B`` as ``nms/batch`` (a scalar) and ``nms/batch1`` (``[1]``), from a
    plain ``Shape`` (TensorRT 8.6's parser ignores ``Shape``'s ``start`` and ``end``)."""
    return [
        _node("Shape", ["pred_scores"], ["nms/scores_shape"]),
        _node("Gather", ["nms/scores_shape", "nms/idx0"], ["nms/batch"], axis=0),
        _node("Gather", ["nms/scores_shape", "nms/first"], ["nms/batch1"], axis=0),
    ]


def _reduce_max(data: str, out: str, opset: int) -> onnx.NodeProto:
    """``ReduceMax`` over the last axis (2), without keeping it: axes as an attribute before
    opset 18 (the form TensorRT 8.6's importer reads), as an input from 18 on."""
    if opset >= 18:
        return _node("ReduceMax", [data, "nms/axes2"], [out], keepdims=0)
    return _node("ReduceMax", [data], [out], axes=[2], keepdims=0)


def _cap_nodes(*, multi_label: bool, opset: int) -> list[onnx.NodeProto]:
    """The ``M`` best candidates per image → ``nms/cand_boxes [B, M, 4]`` and
    ``nms/cand_scores [B, C, M]`` (the NMS inputs), from ``TopK`` over each box's best score
    (``[B, N]``) or, with ``multi_label``, over every (box, class) score (``[B, N * C]``, pair
    ``n * C + c``). The picked boxes' rows are gathered with ``GatherND`` (``batch_dims=1``)."""
    top = ["nms/cap_scores", "nms/cap_flat" if multi_label else "nms/cap_idx"]
    if multi_label:
        pick = [
            _node("Flatten", ["pred_scores"], ["nms/flat_scores"], axis=1),
            _node("TopK", ["nms/flat_scores", "nms/cap"], top, axis=1),
            _node("Div", ["nms/cap_flat", "nms/num_classes"], ["nms/cap_idx"]),
            _node("Mod", ["nms/cap_flat", "nms/num_classes"], ["nms/cap_cls"]),
            _node("Unsqueeze", ["nms/cap_cls", "nms/axes1"], ["nms/cap_cls1"]),
            _node("Equal", ["nms/class_ids", "nms/cap_cls1"], ["nms/cap_is_cls"]),
            _node("Unsqueeze", ["nms/cap_scores", "nms/axes1"], ["nms/cap_scores1"]),
            _node("Where", ["nms/cap_is_cls", "nms/cap_scores1", "nms/zero"], ["nms/cand_scores"]),
            _node("Unsqueeze", ["nms/cap_idx", "nms/axes2"], ["nms/cap_idx2"]),
        ]
    else:
        pick = [
            _reduce_max("pred_scores", "nms/best_scores", opset),
            _node("TopK", ["nms/best_scores", "nms/cap"], top, axis=1),
            _node("Unsqueeze", ["nms/cap_idx", "nms/axes2"], ["nms/cap_idx2"]),
            _node("GatherND", ["pred_scores", "nms/cap_idx2"], ["nms/cap_rows"], batch_dims=1),
            _node("Transpose", ["nms/cap_rows"], ["nms/cand_scores"], perm=[0, 2, 1]),
        ]
    return [
        *pick,
        _node("GatherND", ["pred_boxes", "nms/cap_idx2"], ["nms/cand_boxes"], batch_dims=1),
    ]


def _select_nodes(boxes: str, scores: str) -> list[onnx.NodeProto]:
    """``NonMaxSuppression`` on ``boxes [B, M, 4]`` and ``scores [B, C, M]`` → ``nms/selected
    [S, 3]`` (batch, class, box) and the survivors' ``nms/sel_scores [S]``, ``nms/sel_boxes
    [S, 4]``, ``nms/sel_b [S]`` (image) and ``nms/sel_c [S]`` (class)."""
    nms_inputs = [boxes, scores, "max_output_boxes_per_class", "iou_threshold", "score_threshold"]
    return [
        _node("NonMaxSuppression", nms_inputs, ["nms/selected"], center_point_box=0),
        _node("GatherND", [scores, "nms/selected"], ["nms/sel_scores"]),
        _node("Gather", ["nms/selected", "nms/cols_bm"], ["nms/sel_bm"], axis=1),
        _node("GatherND", [boxes, "nms/sel_bm"], ["nms/sel_boxes"]),
        _node("Gather", ["nms/selected", "nms/idx0"], ["nms/sel_b"], axis=1),
        _node("Gather", ["nms/selected", "nms/idx1"], ["nms/sel_c"], axis=1),
    ]


def _top_k_nodes() -> list[onnx.NodeProto]:
    """Each image's ``K`` best survivors: ``TopK`` over ``nms/rows [B, S + K]`` (row ``b``
    holds image ``b``'s survivors' scores, -1 at the other images' and 0 in the ``K`` padding
    columns, so that a row short of ``K`` survivors is filled from the padding) →
    ``scores [B, K]`` and their positions, which pick ``nms/top_cls [B, K]`` and ``boxes
    [B, K, 4]`` from the survivors' lists (padded with ``K`` zero rows)."""
    return [
        _node("Range", ["nms/idx0", "nms/batch", "nms/idx1"], ["nms/image_ids"]),
        _node("Unsqueeze", ["nms/image_ids", "nms/axes1"], ["nms/image_ids1"]),
        _node("Equal", ["nms/image_ids1", "nms/sel_b"], ["nms/own"]),
        _node("Where", ["nms/own", "nms/sel_scores", "nms/minus_one_f"], ["nms/own_scores"]),
        _node("Pad", ["nms/own_scores", "nms/pad_rows"], ["nms/rows"], mode="constant"),
        _node("TopK", ["nms/rows", "nms/k"], ["scores", "nms/top_pos"], axis=1),
        _node("Pad", ["nms/sel_c", "nms/pad_list"], ["nms/cls_list"], mode="constant"),
        _node("Gather", ["nms/cls_list", "nms/top_pos"], ["nms/top_cls"], axis=0),
        _node("Pad", ["nms/sel_boxes", "nms/pad_boxes"], ["nms/box_list"], mode="constant"),
        _node("Gather", ["nms/box_list", "nms/top_pos"], ["boxes"], axis=0),
    ]


def _output_nodes() -> list[onnx.NodeProto]:
    """``classes`` and ``num_dets`` from the top scores (a zero score is padding: class -1;
    its box row is already zero)."""
    return [
        _node("Greater", ["scores", "nms/zero"], ["nms/valid"]),
        _node("Where", ["nms/valid", "nms/top_cls", "nms/minus_one"], ["nms/cls64"]),
        _node("Cast", ["nms/cls64"], ["classes"], to=TP.INT32),
        _node("Cast", ["nms/valid"], ["nms/valid_f"], to=TP.FLOAT),
        _node("ReduceSum", ["nms/valid_f", "nms/axes1"], ["nms/count_f"], keepdims=1),
        _node("Cast", ["nms/count_f"], ["num_dets"], to=TP.INT32),
    ]
