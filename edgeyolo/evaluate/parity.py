"""Box-level agreement between two backends' detections of the same images.

mAP says whether two models are equally good; parity says whether they are the *same*: which
boxes of the reference (the PyTorch model) reappear in the other backend's output, how well they
overlap, and how far their scores moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from edgeyolo.postprocess import Detections

__all__ = ["ParityResult", "match_detections", "parity"]


def match_detections(
    ref: Detections, other: Detections, *, iou_thres: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Greedy one-to-one matching of same-class boxes, reference boxes in score order.

    Each reference box takes the unmatched ``other`` box of its class with the highest IoU, if
    that IoU is at least ``iou_thres``.

    Returns:
        ``(pairs Tensor[M, 2] int64 (ref index, other index), ious Tensor[M])``.
    """
    pairs: list[tuple[int, int]] = []
    ious: list[float] = []
    if len(ref) and len(other):
        iou = box_iou(ref.boxes.double(), other.boxes.double())  # [R, O]
        iou[ref.labels[:, None] != other.labels[None, :]] = -1.0
        taken = torch.zeros(len(other), dtype=torch.bool)
        for r in torch.argsort(ref.scores, descending=True, stable=True).tolist():
            row = iou[r].masked_fill(taken, -1.0)
            best = int(row.argmax())
            if row[best] >= iou_thres:
                taken[best] = True
                pairs.append((r, best))
                ious.append(float(row[best]))
    return (
        torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2),
        torch.tensor(ious, dtype=torch.float64),
    )


@dataclass(frozen=True)
class ParityResult:
    """Agreement of ``other`` with ``ref`` over a set of images.

    ``matched_fraction`` is matched pairs over ``max(ref_count, other_count)`` (1.0 only when
    both found the same boxes and nothing else); IoU and score statistics are over matched
    pairs (NaN when there are none).
    """

    images: int
    ref_count: int
    other_count: int
    matched: int
    matched_fraction: float
    mean_iou: float
    min_iou: float
    max_score_diff: float
    mean_score_diff: float
    same_count_images: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def parity(
    refs: Sequence[Detections], others: Sequence[Detections], *, iou_thres: float = 0.5
) -> ParityResult:
    """Compare two backends' detections image by image (same order) and aggregate."""
    if len(refs) != len(others):
        raise ValueError(f"{len(refs)} reference images but {len(others)} to compare")
    all_iou: list[Tensor] = []
    all_ds: list[Tensor] = []
    n_ref = n_other = same = 0
    for ref, other in zip(refs, others, strict=True):
        ref, other = ref.to("cpu"), other.to("cpu")
        pairs, ious = match_detections(ref, other, iou_thres=iou_thres)
        n_ref += len(ref)
        n_other += len(other)
        same += int(len(ref) == len(other))
        all_iou.append(ious)
        all_ds.append((ref.scores[pairs[:, 0]].double() - other.scores[pairs[:, 1]].double()).abs())
    iou = torch.cat(all_iou) if all_iou else torch.zeros(0, dtype=torch.float64)
    ds = torch.cat(all_ds) if all_ds else torch.zeros(0, dtype=torch.float64)
    m = int(iou.numel())
    nan = float("nan")
    denom = max(n_ref, n_other)
    return ParityResult(
        images=len(refs),
        ref_count=n_ref,
        other_count=n_other,
        matched=m,
        matched_fraction=m / denom if denom else 1.0,
        mean_iou=float(iou.mean()) if m else nan,
        min_iou=float(iou.min()) if m else nan,
        max_score_diff=float(ds.max()) if m else nan,
        mean_score_diff=float(ds.mean()) if m else nan,
        same_count_images=same,
    )
