"""How sure a small set can be about an mAP@0.5 difference: a paired bootstrap over images.

A difference of two mAPs measured on ``N`` images carries sampling noise (about +-1 point at
``N = 100`` on MNIST-detection). Resampling the images with replacement and scoring both models on
*the same* resampled images (paired) gives a percentile interval for the drop; pairing cancels the
noise the two models share (which images are hard), so the interval is far narrower than two
independent intervals would suggest.

The cost stays small because the detections are matched to the ground truth only once per model
(:func:`match_detections`, COCO's greedy matching at IoU 0.5): a resampled set only changes how
many times each image counts, so each resample's mAP@0.5 is a weighted cumulative sum over the
pooled, score-sorted matches (:func:`map50`), vectorised over the resamples. Resampling an image
``k`` times is the same as weighting its detections and ground truth by ``k``.

The AP is COCO's: per class, detections pooled over images and sorted by score, precision made
monotone from the right, read at the 101 recall points ``0, 0.01, ..., 1``; at most 100
detections per image and class; classes without ground truth are left out of the mean; no crowd
or ignore regions, area range "all". On a whole set it agrees with
:func:`edgeyolo.metrics.coco_map.compute_map`'s (faster-coco-eval) mAP@0.5 up to the order of
tied scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Prediction
from edgeyolo.errors import ConfigError, DataError

__all__ = [
    "DropInterval",
    "Matches",
    "images_needed",
    "map50",
    "match_detections",
    "paired_bootstrap",
]

#: A detection matches a ground-truth box of its class at IoU >= this (COCO's first threshold).
IOU_THRESHOLD = 0.5
#: COCO's detections kept per image (and class, as COCOeval applies it).
MAX_DETS = 100
#: The upper end of COCO's area range "all" (``1e5 ** 2`` square pixels).
_MAX_AREA = 1e10
#: COCO's recall points (``params.recThrs``).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
#: Elements of one ``[resamples, true positives]`` block of a class (bounds the memory used).
_BLOCK = 1 << 21


@dataclass(frozen=True)
class Matches:
    """One model's detections on a set, matched once to the ground truth at IoU 0.5.

    The detections are sorted by class, then by score (highest first; ties in image order), as
    COCO pools them; only the (at most :data:`MAX_DETS` per image and class) that COCO scores
    are kept.

    Attributes:
        labels: ``int64[D]``, class of each detection.
        scores: ``float64[D]``.
        tp: ``bool[D]``, matched to a ground-truth box of its class (else a false positive).
        image: ``int64[D]``, index of the image the detection belongs to.
        gt_counts: ``int64[N, C]``, ground-truth boxes of each class in each image.
    """

    labels: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    image: np.ndarray
    gt_counts: np.ndarray

    @property
    def num_images(self) -> int:
        """``N``."""
        return int(self.gt_counts.shape[0])

    @property
    def num_classes(self) -> int:
        """``C``."""
        return int(self.gt_counts.shape[1])


@dataclass(frozen=True)
class DropInterval:
    """The mAP@0.5 drop of a model against a reference, with its bootstrap interval.

    Attributes:
        drop: ``100 * (mAP50(ref) - mAP50(other))`` on the whole set, in points (positive: worse).
        low: lower end of the percentile interval, points.
        high: upper end, points.
        n_images: images in the set.
        resamples: bootstrap resamples drawn.
        half_width: ``(high - low) / 2``, points.
        level: the interval's confidence level (0.95: the 2.5th to 97.5th percentile).
    """

    drop: float
    low: float
    high: float
    n_images: int
    resamples: int
    half_width: float
    level: float = 0.95

    def describe(self) -> str:
        """``drop 0.92 points (95% interval -0.10 to 1.94, 100 images)``."""
        return (
            f"drop {self.drop:.2f} points ({100 * self.level:g}% interval {self.low:.2f} to "
            f"{self.high:.2f}, {self.n_images} images)"
        )


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """``float[K, 4]`` xyxy -> ``float64[K, 4]`` xywh (what COCO holds and computes IoU on)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``float64[D, G]`` IoU of xywh boxes, computed as COCO's ``maskUtils.iou`` (no crowd)."""
    w = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
    w = w - np.maximum(dt[:, None, 0], gt[None, :, 0])
    h = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
    h = h - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (dt[:, 2] * dt[:, 3])[:, None] + (gt[:, 2] * gt[:, 3])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def _greedy(iou: np.ndarray) -> np.ndarray:
    """``bool[D]``: COCO's greedy matching of score-sorted detections (rows) to ground truth
    (columns): each detection takes the still-unmatched box of highest IoU >= 0.5 (the last
    of equal ones, as COCOeval does)."""
    tp = np.zeros(iou.shape[0], dtype=bool)
    if iou.size == 0:
        return tp
    ok = iou >= IOU_THRESHOLD
    taken = np.zeros(iou.shape[1], dtype=bool)
    for d in np.flatnonzero(ok.any(axis=1)):
        row = np.where(ok[d] & ~taken, iou[d], -1.0)
        if row.max() < 0:
            continue
        g = len(row) - 1 - int(np.argmax(row[::-1]))
        taken[g] = tp[d] = True
    return tp


def _match_class(
    dt: np.ndarray, scores: np.ndarray, gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections of one class (xywh ``[K, 4]``, ``[K]``) against its boxes of that
    class: ``(scores, tp)`` of those COCO scores, best first.

    As COCOeval: the :data:`MAX_DETS` best are kept, then an unmatched detection whose area
    (``w * h``) is outside the area range "all", ``[0, 1e10]`` (an inverted box), is ignored:
    neither a true nor a false positive.
    """
    order = np.argsort(-scores, kind="stable")[:MAX_DETS]
    dt, scores = dt[order], scores[order]
    tp = _greedy(_iou(dt, gt))
    area = dt[:, 2] * dt[:, 3]
    scored = tp | ((area >= 0) & (area <= _MAX_AREA))
    return scores[scored], tp[scored]


def _check_prediction(i: int, pred: Prediction, num_classes: int) -> tuple[np.ndarray, ...]:
    """``(xywh float64[K, 4], scores float64[K], labels int64[K])`` of image ``i``, checked."""
    boxes, scores, labels = pred
    xywh = _xywh(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if not len(xywh) == len(scores) == len(labels):
        raise DataError(f"image {i}: {len(xywh)} boxes, {len(scores)} scores, {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"image {i}: predicted label outside [0, {num_classes})")
    return xywh, scores, labels


def match_detections(
    predictions: Sequence[Prediction], records: Sequence[ImageRecord], num_classes: int
) -> Matches:
    """Match every image's detections to its ground truth once, COCO-style at IoU 0.5.

    Args:
        predictions: one ``(boxes float[K, 4] xyxy, scores float[K], labels int[K])`` per record,
            in the same order and pixels as the records' boxes.
        records: the ground truth (``boxes`` xyxy, ``classes``); images without boxes are allowed.
        num_classes: ``C``; labels and classes lie in ``[0, C)``.

    Returns:
        :class:`Matches`: per detection its class, score, image and whether it is a true positive,
        and the ground-truth count per image and class.

    Raises:
        DataError: ``predictions`` and ``records`` differ in length, a prediction is malformed, or
            a label or ground-truth class is outside ``[0, num_classes)``.
    """
    if len(predictions) != len(records):
        raise DataError(f"{len(predictions)} predictions for {len(records)} records")
    gt_counts = np.zeros((len(records), num_classes), dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    for i, (pred, rec) in enumerate(zip(predictions, records, strict=True)):
        xywh, scores, labels = _check_prediction(i, pred, num_classes)
        classes = np.asarray(rec.classes, dtype=np.int64).reshape(-1)
        if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
            raise DataError(
                f"class id outside [0, {num_classes}) in the ground truth", file=rec.path
            )
        gt_counts[i] = np.bincount(classes, minlength=num_classes)
        gt_xywh = _xywh(rec.boxes)
        for k in np.unique(labels):
            dt_scores, tp = _match_class(
                xywh[labels == k], scores[labels == k], gt_xywh[classes == k]
            )
            n = len(tp)
            parts.append((np.full(n, k), dt_scores, tp, np.full(n, i)))
    if parts:
        labels, scores, tp, image = (np.concatenate(p) for p in zip(*parts, strict=True))
    else:
        labels, scores, tp, image = (np.zeros(0, dt) for dt in (np.int64, float, bool, np.int64))
    order = np.lexsort((np.arange(len(labels)), -scores, labels))  # stable: ties in image order
    return Matches(
        labels=labels[order].astype(np.int64),
        scores=scores[order].astype(np.float64),
        tp=tp[order].astype(bool),
        image=image[order].astype(np.int64),
        gt_counts=gt_counts,
    )


def _fp_runs(tp: np.ndarray, image: np.ndarray, num_images: int) -> tuple[np.ndarray, ...]:
    """The false positives ranked above true positives, grouped by ``(run, image)``.

    Run ``r`` holds the false positives between true positives ``r - 1`` and ``r``; those after
    the last true positive are dropped (they never reach an interpolated precision). Returns
    ``(image int64[M], count float64[M], end int64[T])`` sorted by run then image, where
    ``end[t]`` is the number of groups ranked above true positive ``t``.
    """
    hits = np.flatnonzero(tp)
    misses = np.flatnonzero(~tp)
    run = np.searchsorted(hits, misses)
    keep = run < len(hits)
    keys, counts = np.unique(run[keep] * num_images + image[misses[keep]], return_counts=True)
    end = np.searchsorted(keys // num_images, np.arange(len(hits)), side="right")
    return keys % num_images, counts.astype(np.float64), end


def _class_ap(
    tp: np.ndarray, image: np.ndarray, weights: np.ndarray, npig: np.ndarray
) -> np.ndarray:
    """AP@0.5 of one class for every weight row: ``float64[B]`` (``nan`` where ``npig == 0``).

    ``tp``/``image`` (``[D]``) are the class's score-sorted detections, ``weights`` (``int[B, N]``)
    how many times each image counts, ``npig`` (``[B]``) the weighted ground-truth count.

    Only the ``T`` true positives' points of the precision/recall curve are computed: recall
    rises only there, and the interpolated precision (the maximum to the right) is always taken
    at one (precision falls along a run of false positives). The false positives enter as
    per-image counts between consecutive true positives (:func:`_fp_runs`), so a resample's
    cumulative sums run over those groups, not over every detection. (Plain numpy, no BLAS:
    a threaded matmul of this size is dominated by thread start-up on a busy machine.)
    """
    ap = np.where(npig > 0, 0.0, math.nan)
    hits = np.flatnonzero(tp)
    if not len(hits) or not (npig > 0).any():
        return ap
    fp_image, fp_count, fp_end = _fp_runs(tp, image, weights.shape[1])
    n_hits, n_points = len(hits), len(RECALL_POINTS)
    step = max(1, _BLOCK // max(n_hits, len(fp_image)))
    for start in range(0, len(weights), step):
        w = weights[start : start + step].astype(np.float64)
        n = npig[start : start + step]
        tps = np.cumsum(w[:, image[hits]], axis=1)  # [b, T]
        fps = np.cumsum(w[:, fp_image] * fp_count, axis=1)  # [b, M]
        fps = np.concatenate([np.zeros((len(w), 1)), fps], axis=1)[:, fp_end]  # [b, T]
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = np.where(n[:, None] > 0, tps / n[:, None], 0.0)
        pr = tps / (tps + fps + np.spacing(1))  # COCOeval.accumulate's precision
        envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        # COCO reads the envelope at the first point with recall >= RECALL_POINTS[t]: the number
        # of points that have at most t recall points at or below them
        below = np.searchsorted(RECALL_POINTS, rc, side="right")  # [b, T] in 0..101
        b = len(rc)
        codes = (np.arange(b)[:, None] * (n_points + 1) + below).ravel()
        hist = np.bincount(codes, minlength=b * (n_points + 1)).reshape(b, n_points + 1)
        first = np.cumsum(hist, axis=1)[:, :n_points]
        q = np.take_along_axis(envelope, np.minimum(first, n_hits - 1), axis=1)
        q = np.where(first < n_hits, q, 0.0)
        ap[start : start + step] = np.where(n > 0, q.mean(axis=1), math.nan)
    return ap


def _map50_rows(matches: Matches, weights: np.ndarray) -> np.ndarray:
    """mAP@0.5 (fraction) of ``matches`` under each row of image weights ``[B, N]``: ``[B]``."""
    bounds = np.searchsorted(matches.labels, np.arange(matches.num_classes + 1))
    npig = (weights @ matches.gt_counts).astype(np.float64)  # [B, C]; integer: no BLAS threads
    aps = np.stack(
        [
            _class_ap(
                matches.tp[bounds[k] : bounds[k + 1]],
                matches.image[bounds[k] : bounds[k + 1]],
                weights,
                npig[:, k],
            )
            for k in range(matches.num_classes)
        ],
        axis=1,
    )
    valid = ~np.isnan(aps)
    with np.errstate(invalid="ignore"):
        return np.where(valid.any(axis=1), np.nansum(aps, axis=1) / valid.sum(axis=1), math.nan)


def map50(matches: Matches) -> float:
    """COCO mAP@0.5 (a fraction) of the whole set; ``nan`` without any ground truth."""
    return float(_map50_rows(matches, np.ones((1, matches.num_images), dtype=np.int64))[0])


def _check_pair(ref: Matches, other: Matches, resamples: int, level: float) -> None:
    """The two match sets score the same ground truth, and the settings make sense."""
    if ref.gt_counts.shape != other.gt_counts.shape or not np.array_equal(
        ref.gt_counts, other.gt_counts
    ):
        raise DataError(
            f"the two models were matched against different ground truth ({ref.num_images} vs "
            f"{other.num_images} images, {int(ref.gt_counts.sum())} vs "
            f"{int(other.gt_counts.sum())} boxes): a paired bootstrap needs the same images"
        )
    if ref.num_images < 1:
        raise DataError("no images to resample: the set is empty")
    if resamples < 1:
        raise ConfigError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"the interval's level must be in (0, 1), got {level}")


def paired_bootstrap(
    ref_matches: Matches,
    other_matches: Matches,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    paired: bool = True,
) -> DropInterval:
    """The mAP@0.5 drop of ``other`` against ``ref``, with a percentile bootstrap interval.

    Each resample draws ``N`` images with replacement (as multinomial counts ``int64[B, N]``) and
    scores both models on them; the drop's interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles of the resampled drops. The interval's half-width shrinks as
    ``1 / sqrt(N)`` (:func:`images_needed`).

    Args:
        ref_matches: the reference (fp32) model's :class:`Matches`.
        other_matches: the other (int8) model's, on the same images and ground truth.
        resamples: ``B``, the number of resamples.
        seed: seed of the resampling (the same seed gives the same interval).
        level: confidence level of the interval.
        paired: ``True``: both models are scored on the same resampled images. ``False`` draws
            each model's images independently (what two separate evaluations would give; for
            comparison only).

    Returns:
        :class:`DropInterval` in points; identical matches give a drop and interval of exactly 0.

    Raises:
        DataError: the two were matched against different ground truth, or the set is empty.
        ConfigError: ``resamples < 1`` or ``level`` outside ``(0, 1)``.
    """
    _check_pair(ref_matches, other_matches, resamples, level)
    n = ref_matches.num_images
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    other_weights = weights if paired else rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    drops = 100.0 * (_map50_rows(ref_matches, weights) - _map50_rows(other_matches, other_weights))
    drops = drops[~np.isnan(drops)]  # a resample without any ground truth box has no mAP
    drop = 100.0 * (map50(ref_matches) - map50(other_matches))
    if not len(drops):
        raise DataError("no ground truth box in the set: the mAP@0.5 drop is undefined")
    low, high = (float(v) for v in np.percentile(drops, [50 * (1 - level), 50 * (1 + level)]))
    return DropInterval(
        drop=drop,
        low=low,
        high=high,
        n_images=n,
        resamples=resamples,
        half_width=(high - low) / 2,
        level=level,
    )


def images_needed(interval: DropInterval, target_half_width: float) -> int:
    """About how many images give an interval of half-width ``target_half_width`` (points).

    The bootstrap interval's half-width scales as ``1 / sqrt(N)`` (the standard error of a mean
    over images), so ``N' = N * (half_width / target)^2``, rounded up; at least 1. An estimate:
    it assumes the new images resemble the measured ones.

    Raises:
        ConfigError: ``target_half_width <= 0``.
    """
    if not target_half_width > 0:
        raise ConfigError(f"the target half-width must be > 0 points, got {target_half_width}")
    ratio = interval.half_width / target_half_width
    return max(1, math.ceil(interval.n_images * ratio * ratio))
