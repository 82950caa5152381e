"""The one decode + NMS definition used by training eval, ``detect``, ONNX export and every backend.

Raw head maps (what the model's ``forward`` returns) go through :func:`decode_heads` to boxes in
input pixels with objectness and class probabilities, then :func:`postprocess` turns those into
:class:`Detections` per image. Decoding is darknet's YOLOv3::

    x = (sigmoid(tx) + grid_x) * stride        w = exp(tw) * anchor_w
    y = (sigmoid(ty) + grid_y) * stride        h = exp(th) * anchor_h
    obj = sigmoid(t_obj)                       p_c = sigmoid(t_c)   (multi-label classes)

with one deviation: ``tw`` and ``th`` are clamped to at most ``MAX_LOG_WH`` (a box at most 1000
times its anchor) before ``exp``, so that an untrained or fp16 model gives finite boxes instead of
``inf`` and NaN IoUs. The loss decodes through the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
)
from edgeyolo.detections import Detections, Prediction, from_outputs, from_padded
from edgeyolo.ops.boxes import batched_nms, make_grid

__all__ = [
    "MAX_LOG_WH",
    "Detections",
    "Prediction",
    "decode_boxes",
    "decode_heads",
    "from_outputs",
    "from_padded",
    "postprocess",
    "split_head",
]

#: Upper clamp of ``tw``/``th`` before ``exp`` (``exp(MAX_LOG_WH) == 1000``).
MAX_LOG_WH: float = math.log(1000.0)


def split_head(head: Tensor, num_anchors: int) -> Tensor:
    """Rearrange one raw head map so that each prediction is a row of its channels.

    Args:
        head (Tensor[B, A*(5+C), h, w]): raw head map; the channels of anchor ``a`` are
            ``head[:, a*(5+C):(a+1)*(5+C)]`` in the order (tx, ty, tw, th, obj, cls_0..cls_{C-1}).
        num_anchors: ``A``.

    Returns:
        Tensor[B, A, h, w, 5+C]: ``out[b, a, y, x]`` are the raw logits of anchor ``a`` at
        row ``y``, column ``x``.
    """
    b, ch, h, w = head.shape
    return head.view(b, num_anchors, ch // num_anchors, h, w).permute(0, 1, 3, 4, 2)


def decode_boxes(raw: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """Decode (tx, ty, tw, th) of every prediction of one head to xyxy boxes in input pixels.

    Args:
        raw (Tensor[B, A, h, w, K]): output of :func:`split_head` (``K >= 4``; only the first four
            channels are read).
        anchors (Tensor[A, 2]): (w, h) of this head's anchors in input pixels.
        stride: input pixels per cell of this head.

    Returns:
        Tensor[B, A, h, w, 4]: xyxy boxes in input pixels.
    """
    h, w = raw.shape[2], raw.shape[3]
    stride = float(stride)
    grid = make_grid(h, w, device=raw.device, dtype=raw.dtype)  # [h, w, 2] (x, y)
    xy = (raw[..., 0:2].sigmoid() + grid) * stride
    anchor_wh = anchors.to(device=raw.device, dtype=raw.dtype).view(1, -1, 1, 1, 2)
    wh = raw[..., 2:4].clamp(max=MAX_LOG_WH).exp() * anchor_wh
    return torch.cat((xy - 0.5 * wh, xy + 0.5 * wh), dim=-1)


def decode_heads(
    heads: Sequence[Tensor], anchors: Tensor, strides: Sequence[int | float]
) -> tuple[Tensor, Tensor, Tensor]:
    """Decode the raw head maps of a YOLOv3 model to boxes, objectness and class probabilities.

    Traceable by ``torch.onnx.export(..., dynamo=False)``: no Python loop over tensor values (only
    over the 2 or 3 heads), grids from ``torch.arange`` of each head's shape, so batch size and
    input size may be dynamic axes.

    Args:
        heads (list of Tensor[B, A*(5+C), h_s, w_s]): raw head maps, coarsest first.
        anchors (Tensor[S, A, 2]): (w, h) in input pixels, per head in the order of ``heads``.
        strides: input pixels per cell of each head, e.g. ``(32, 16, 8)``.

    Returns:
        A tuple ``(boxes, obj, cls_prob)`` with ``N = sum_s A * h_s * w_s`` predictions per image:

        - boxes (Tensor[B, N, 4]): xyxy in input pixels (not clipped to the image),
        - obj (Tensor[B, N]): objectness probability,
        - cls_prob (Tensor[B, N, C]): class probabilities (independent sigmoids).

        Prediction ``n`` runs head by head (in the order of ``heads``), then within a head by
        anchor, then row ``y``, then column ``x``: in head ``s`` the prediction of anchor ``a`` at
        ``(y, x)`` is ``n = offset_s + (a * h_s + y) * w_s + x`` with
        ``offset_s = sum_{t<s} A * h_t * w_t``.
    """
    if len(heads) != len(strides) or len(heads) != anchors.shape[0]:
        raise ValueError(
            f"{len(heads)} head maps, {len(strides)} strides and {anchors.shape[0]} anchor groups "
            "must agree"
        )
    num_anchors = anchors.shape[1]
    all_boxes, all_obj, all_cls = [], [], []
    for head, anchor, stride in zip(heads, anchors, strides, strict=True):
        raw = split_head(head, num_anchors)  # [B, A, h, w, 5+C]
        all_boxes.append(decode_boxes(raw, anchor, stride).flatten(1, 3))
        all_obj.append(raw[..., 4].sigmoid().flatten(1, 3))
        all_cls.append(raw[..., 5:].sigmoid().flatten(1, 3))
    return torch.cat(all_boxes, dim=1), torch.cat(all_obj, dim=1), torch.cat(all_cls, dim=1)


def postprocess(
    boxes: Tensor,
    obj: Tensor,
    cls_prob: Tensor,
    *,
    conf_thres: float = DEFAULT_CONF_THRES,
    iou_thres: float = DEFAULT_IOU_THRES,
    max_det: int = DEFAULT_MAX_DET,
    multi_label: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> list[Detections]:
    """Score threshold and class-aware NMS, image by image.

    The score of a (box, class) pair is ``obj * cls_prob``. With ``multi_label=False`` each box
    keeps only its best class; with ``True`` every pair with a score above ``conf_thres`` is a
    candidate. Candidates (at most ``max_candidates``, the highest-scoring) go through
    ``torchvision.ops.batched_nms`` (boxes of different classes never suppress each other), and the
    ``max_det`` best survivors are kept.

    The cap is the exported graph's (:func:`edgeyolo.export.graph.nms_tail`), tie for tie: of
    candidates with equal scores the one with the lower index is kept, where a box's index is its
    prediction index ``n`` and a (box, class) pair's is ``n * C + class``.

    Args:
        boxes (Tensor[B, N, 4]): xyxy boxes, e.g. from :func:`decode_heads`.
        obj (Tensor[B, N]): objectness probabilities.
        cls_prob (Tensor[B, N, C]): class probabilities.
        conf_thres: keep pairs with score strictly greater than this.
        iou_thres: suppress a box whose IoU with a better box of the same class is greater.
        max_det: at most this many detections per image.
        multi_label: score every class of a box, not only the best.
        max_candidates: at most this many candidates per image enter NMS.

    Returns:
        One :class:`Detections` per image, sorted by score, descending.
    """
    out: list[Detections] = []
    for b, o, c in zip(boxes, obj, cls_prob, strict=True):
        # Class probabilities are <= 1, so obj > conf_thres is necessary for any score to pass.
        keep = o > conf_thres
        b, o, c = b[keep], o[keep], c[keep]
        scores = o[:, None] * c  # [n, C]
        if multi_label:
            idx, labels = (scores > conf_thres).nonzero(as_tuple=True)
            b, s = b[idx], scores[idx, labels]
        else:
            s, labels = scores.max(dim=1)
            keep = s > conf_thres
            b, s, labels = b[keep], s[keep], labels[keep]
        top = _top_candidates(s, max_candidates)
        if top is not None:
            b, s, labels = b[top], s[top], labels[top]
        keep = batched_nms(b, s, labels, iou_thres)[:max_det]
        out.append(Detections(boxes=b[keep], scores=s[keep], labels=labels[keep].long()))
    return out


def _top_candidates(scores: Tensor, cap: int) -> Tensor | None:
    """Indices of the ``cap`` highest ``scores`` (Tensor[n]), ties to the lower index, in index
    order (as ONNX ``TopK`` picks them); ``None`` when there are at most ``cap``."""
    if cap < 1:
        raise ValueError(f"max_candidates must be at least 1, got {cap}")
    if scores.shape[0] <= cap:
        return None
    order = torch.sort(scores, descending=True, stable=True).indices[:cap]
    return order.sort().values
