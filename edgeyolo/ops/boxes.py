"""Box math as pure functions.

Conventions (as in ``torchvision.ops.boxes``): boxes are ``xyxy`` (x1, y1, x2, y2) in pixels with
the origin at the top-left corner unless a name says otherwise; ``cxcywh`` is (centre x,
centre y, width, height), as in torchvision (whose ``xywh`` is corner-based). Where torchvision
already has the function it is re-exported unchanged, so that there is one definition of each
quantity.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import (
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
)

__all__ = [
    "batched_box_iou",
    "batched_nms",
    "box_area",
    "box_iou",
    "complete_box_iou_loss",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "make_grid",
    "wh_iou",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert (cx, cy, w, h) boxes to (x1, y1, x2, y2).

    Args:
        boxes (Tensor[..., 4]): boxes as centre and size.

    Returns:
        Tensor[..., 4]: the same boxes as corners.
    """
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert (x1, y1, x2, y2) boxes to (cx, cy, w, h).

    Args:
        boxes (Tensor[..., 4]): boxes as corners.

    Returns:
        Tensor[..., 4]: the same boxes as centre and size.
    """
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes given only by their sizes, as if every box had the same centre.

    This is how YOLOv3 compares a ground-truth box with the anchors.

    Args:
        wh1 (Tensor[N, 2]): widths and heights.
        wh2 (Tensor[M, 2]): widths and heights.

    Returns:
        Tensor[N, M]: the pairwise IoU; 0 where both boxes are empty.
    """
    wh1 = wh1[:, None, :]  # [N, 1, 2]
    wh2 = wh2[None, :, :]  # [1, M, 2]
    inter = torch.min(wh1, wh2).clamp(min=0).prod(dim=2)
    union = wh1.prod(dim=2) + wh2.prod(dim=2) - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU within each batch element (``torchvision.ops.box_iou`` over a batch).

    Args:
        boxes1 (Tensor[B, N, 4]): xyxy boxes.
        boxes2 (Tensor[B, M, 4]): xyxy boxes.

    Returns:
        Tensor[B, N, M]: ``out[b, i, j]`` is the IoU of ``boxes1[b, i]`` and ``boxes2[b, j]``;
        0 where both boxes are empty.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])  # [B, N]
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])  # [B, M]
    lt = torch.max(boxes1[:, :, None, :2], boxes2[:, None, :, :2])  # [B, N, M, 2]
    rb = torch.min(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])  # [B, N, M, 2]
    inter = (rb - lt).clamp(min=0).prod(dim=3)  # [B, N, M]
    union = area1[:, :, None] + area2[:, None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def make_grid(
    h: int, w: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Cell indices of an ``h`` x ``w`` feature map.

    Built with ``torch.arange`` so that, under ``torch.onnx.export`` tracing, the grid follows the
    traced shape of the head map (dynamic input size).

    Args:
        h: number of rows.
        w: number of columns.
        device: where to build the grid.
        dtype: its element type.

    Returns:
        Tensor[h, w, 2]: ``grid[y, x] == (x, y)``.
    """
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)
