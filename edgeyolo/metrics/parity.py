"""Box-level agreement between two backends' detections of the same images.

mAP says whether two models are equally good; parity says whether they are the *same*: which
boxes of the reference (the PyTorch model) reappear in the other backend's output, how well they
overlap, and how far their scores moved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.detections import Detections

__all__ = [
    "ImageParity",
    "box_iou",
    "ParityReport",
    "ParitySummary",
    "match_detections",
    "parity_summary",
    "parity_report",
]


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, as ``torchvision.ops.box_iou`` (numpy, float64).

    Args:
        boxes1 (float[N, 4]), boxes2 (float[M, 4]): xyxy.

    Returns:
        float64[N, M]: IoU (0 where a union is empty).
    """
    a = np.asarray(boxes1, np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detections(
    ref: Detections, other: Detections, *, iou_thres: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of same-class boxes, reference boxes in score order.

    Each reference box takes the unmatched ``other`` box of its class with the highest IoU, if
    that IoU is at least ``iou_thres``.

    Returns:
        ``(pairs int64[M, 2] (ref index, other index), ious float64[M])``.
    """
    pairs: list[tuple[int, int]] = []
    ious: list[float] = []
    rb, rs, rl = ref.numpy()
    ob, _, ol = other.numpy()
    if len(rb) and len(ob):
        iou = box_iou(rb, ob)  # [R, O]
        iou[rl[:, None] != ol[None, :]] = -1.0
        taken = np.zeros(len(ob), dtype=bool)
        for r in np.argsort(-rs.astype(np.float64), kind="stable").tolist():
            row = np.where(taken, -1.0, iou[r])
            best = int(row.argmax())
            if row[best] >= iou_thres:
                taken[best] = True
                pairs.append((r, best))
                ious.append(float(row[best]))
    return np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(ious, np.float64)


@dataclass(frozen=True)
class ParitySummary:
    """Agreement of ``other`` with ``ref`` over a set of images.

    ``matched_fraction`` is matched pairs over ``max(ref_count, other_count)`` (1.0 only when
    both found the same boxes and nothing else; ``None`` when neither found a box: there is
    nothing to compare, which is neither agreement nor disagreement); IoU and score statistics
    are over matched pairs (NaN when there are none).
    """

    images: int
    ref_count: int
    other_count: int
    matched: int
    matched_fraction: float | None
    mean_iou: float
    min_iou: float
    max_score_diff: float
    mean_score_diff: float
    same_count_images: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def parity_summary(
    refs: Sequence[Detections], others: Sequence[Detections], *, iou_thres: float = 0.5
) -> ParitySummary:
    """Compare two backends' detections image by image (same order) and aggregate."""
    if len(refs) != len(others):
        raise ValueError(f"{len(refs)} reference images but {len(others)} to compare")
    all_iou: list[np.ndarray] = [np.zeros(0)]
    all_ds: list[np.ndarray] = [np.zeros(0)]
    n_ref = n_other = same = 0
    for ref, other in zip(refs, others, strict=True):
        pairs, ious = match_detections(ref, other, iou_thres=iou_thres)
        n_ref += len(ref)
        n_other += len(other)
        same += int(len(ref) == len(other))
        all_iou.append(ious)
        rs, os_ = ref.numpy()[1].astype(np.float64), other.numpy()[1].astype(np.float64)
        all_ds.append(np.abs(rs[pairs[:, 0]] - os_[pairs[:, 1]]))
    iou, ds = np.concatenate(all_iou), np.concatenate(all_ds)
    m = int(iou.size)
    nan = float("nan")
    denom = max(n_ref, n_other)
    return ParitySummary(
        images=len(refs),
        ref_count=n_ref,
        other_count=n_other,
        matched=m,
        matched_fraction=m / denom if denom else None,
        mean_iou=float(iou.mean()) if m else nan,
        min_iou=float(iou.min()) if m else nan,
        max_score_diff=float(ds.max()) if m else nan,
        mean_score_diff=float(ds.mean()) if m else nan,
        same_count_images=same,
    )


@dataclass(frozen=True)
class ImageParity:
    """Agreement on one image (see :func:`parity_report` for the definitions).

    ``mean_iou``/``min_iou`` are NaN when nothing matched; ``matched_fraction`` is ``None`` when
    both sides are empty (nothing to compare).
    """

    index: int
    file: str | None
    ref_count: int
    other_count: int
    matched: int
    missed: int
    extra: int
    class_disagreement: int
    matched_fraction: float | None
    mean_iou: float
    min_iou: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ParityReport:
    """:class:`ParitySummary`'s totals plus the fields the bench reports.

    Attributes:
        summary: the totals of :func:`parity_summary` (same definitions).
        missed: reference boxes left unmatched.
        extra: ``other`` boxes left unmatched.
        class_disagreement: unmatched ``other`` boxes that overlap a reference box of another
            class with IoU >= ``iou_thres`` (they are also counted in ``extra``).
        p5_iou: 5th percentile of the matched pairs' IoU (``numpy.percentile``, linear
            interpolation between order statistics); NaN without matches.
        score_mae: mean |score difference| over matched pairs (``summary.mean_score_diff``).
        ious (float64[M]): the IoU of every matched pair, image by image.
        images: per-image detail, in input order.
        worst: the images with the lowest matched fraction, then lowest mean IoU (images with
            no box on either side are never listed).
    """

    summary: ParitySummary
    missed: int
    extra: int
    class_disagreement: int
    p5_iou: float
    score_mae: float
    ious: np.ndarray
    images: tuple[ImageParity, ...]
    worst: tuple[ImageParity, ...]

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """JSON-ready (NaN → ``None``): the totals, the extra fields and ``worst_images``;
        ``images`` (every image) only with ``per_image=True``."""
        out: dict[str, Any] = {k: _json_float(v) for k, v in self.summary.to_dict().items()}
        out.update(
            missed=self.missed,
            extra=self.extra,
            class_disagreement=self.class_disagreement,
            p5_iou=_json_float(self.p5_iou),
            score_mae=_json_float(self.score_mae),
            worst_images=[w.to_dict() for w in self.worst],
        )
        if per_image:
            out["images"] = [im.to_dict() for im in self.images]
        return out


def _json_float(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _class_disagreements(
    ref: Detections, other: Detections, pairs: np.ndarray, iou_thres: float
) -> int:
    """Unmatched ``other`` boxes with IoU >= ``iou_thres`` to a reference box of another class."""
    if not len(ref) or not len(other):
        return 0
    rb, _, rl = ref.numpy()
    ob, _, ol = other.numpy()
    free = np.ones(len(ob), dtype=bool)
    free[pairs[:, 1]] = False
    iou = box_iou(ob, rb)  # [O, R]
    overlap = (iou >= iou_thres) & (ol[:, None] != rl[None, :])
    return int((overlap.any(axis=1) & free).sum())


def parity_report(
    refs: Sequence[Detections],
    others: Sequence[Detections],
    *,
    iou_thres: float = 0.5,
    files: Sequence[str | Path] | None = None,
    worst: int = 5,
) -> ParityReport:
    """:func:`parity_summary` with per-image detail, missed/extra boxes, class disagreement and
    p5 IoU.

    Matching, image by image, is :func:`match_detections`: greedy and one-to-one, reference
    boxes taken in descending score order, each paired with the still-free ``other`` box *of the
    same class* with the highest IoU, if that IoU is >= ``iou_thres`` (0.5). Not Hungarian: the
    greedy order is the one NMS itself uses, and the two differ only for boxes that overlap two
    candidates almost equally.

    Args:
        refs, others: detections per image (same images, same order, same pixel frame).
        files: the image files, named in the per-image detail (optional).
        worst: how many worst images to keep.
    """
    summary = parity_summary(refs, others, iou_thres=iou_thres)
    if files is not None and len(files) != len(refs):
        raise ValueError(f"{len(files)} file names for {len(refs)} images")
    per_image: list[ImageParity] = []
    all_iou: list[np.ndarray] = [np.zeros(0)]
    nan = float("nan")
    for i, (ref, other) in enumerate(zip(refs, others, strict=True)):
        pairs, ious = match_detections(ref, other, iou_thres=iou_thres)
        m, denom = len(ious), max(len(ref), len(other))
        all_iou.append(ious)
        per_image.append(
            ImageParity(
                index=i,
                file=None if files is None else str(files[i]),
                ref_count=len(ref),
                other_count=len(other),
                matched=m,
                missed=len(ref) - m,
                extra=len(other) - m,
                class_disagreement=_class_disagreements(ref, other, pairs, iou_thres),
                matched_fraction=m / denom if denom else None,
                mean_iou=float(ious.mean()) if m else nan,
                min_iou=float(ious.min()) if m else nan,
            )
        )
    iou = np.concatenate(all_iou)
    ranked = sorted(  # an image with boxes on either side has a matched fraction
        (p for p in per_image if p.matched_fraction is not None),
        key=lambda p: (p.matched_fraction or 0.0, -1.0 if math.isnan(p.mean_iou) else p.mean_iou),
    )
    return ParityReport(
        summary=summary,
        missed=sum(p.missed for p in per_image),
        extra=sum(p.extra for p in per_image),
        class_disagreement=sum(p.class_disagreement for p in per_image),
        p5_iou=float(np.percentile(iou, 5)) if len(iou) else nan,
        score_mae=summary.mean_score_diff,
        ious=iou,
        images=tuple(per_image),
        worst=tuple(ranked[:worst]),
    )
