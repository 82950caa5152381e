"""Box math as pure functions (xyxy pixels; shapes in the docstrings)."""

from __future__ import annotations

from edgeyolo.ops.boxes import (
    batched_box_iou,
    batched_nms,
    box_area,
    box_iou,
    complete_box_iou_loss,
    cxcywh_to_xyxy,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    make_grid,
    wh_iou,
    xyxy_to_cxcywh,
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
