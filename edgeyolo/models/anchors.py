"""Anchor boxes fitted to a dataset: k-means on box sizes with the IoU distance of YOLOv2.

Boxes and anchors are (w, h) pairs; their IoU is taken with both aligned at a common centre,
so only the sizes matter: ``IoU = min(w) * min(h) / (w * h + aw * ah - min(w) * min(h))``.
"""

from __future__ import annotations

import numpy as np

from edgeyolo.config import num_scales
from edgeyolo.errors import ConfigError

#: Default IoU threshold of :func:`best_possible_recall`. A box matched by an anchor of the
#: right aspect but 4x the size in one dimension has IoU 0.25, the width/height ratio limit
#: (``anchor_t = 4``) that Ultralytics uses to let an anchor learn a box.
BPR_THRESH: float = 0.25


def _check_wh(wh: np.ndarray, name: str = "wh") -> np.ndarray:
    arr = np.asarray(wh, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigError(f"{name} must be an array of (w, h) pairs, shape [N, 2]; got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1) | (arr <= 0).any(axis=1)
    if bad.any():
        raise ConfigError(
            f"{name} has {int(bad.sum())} box(es) with a non-positive or non-finite size, "
            f"e.g. {arr[bad][0].tolist()}; drop degenerate boxes first"
        )
    return arr


def anchor_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors aligned at a common centre.

    Args:
        wh: ``float[N, 2]`` box sizes (w, h).
        anchors: ``float[K, 2]`` anchor sizes (w, h), same unit.

    Returns:
        ``float64[N, K]`` IoU in (0, 1].
    """
    wh = _check_wh(wh)
    anchors = _check_wh(anchors, "anchors")
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(
        wh[:, None, 1], anchors[None, :, 1]
    )
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, thresh: float = BPR_THRESH) -> float:
    """Fraction of boxes whose best anchor has IoU (aligned at the centre) > ``thresh``.

    1.0 means every box has an anchor of roughly its size and shape; boxes below the
    threshold can still be assigned to their best anchor but are hard for it to learn.
    """
    if not 0.0 <= thresh < 1.0:
        raise ConfigError(f"thresh must be in [0, 1), got {thresh}")
    return float((anchor_iou(wh, anchors).max(axis=1) > thresh).mean())


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best anchor (the k-means objective)."""
    return float(anchor_iou(wh, anchors).max(axis=1).mean())


def _kmeans_once(
    wh: np.ndarray, k: int, iters: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    n = len(wh)
    # k-means++ seeding with d = 1 - IoU: each next centre drawn with probability ~ d^2.
    centres = [wh[rng.integers(n)]]
    for _ in range(1, k):
        d = 1.0 - anchor_iou(wh, np.stack(centres)).max(axis=1)
        p = d**2
        centres.append(wh[rng.choice(n, p=p / p.sum())])
    c = np.stack(centres)

    assign = np.full(n, -1)
    for _ in range(iters):
        iou = anchor_iou(wh, c)
        new_assign = iou.argmax(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = wh[members].mean(axis=0)
            else:  # empty cluster: restart it on the box worst served by the others
                c[j] = wh[iou.max(axis=1).argmin()]
    return c, mean_best_iou(wh, c)


def kmeans_anchors(
    wh: np.ndarray, k: int, *, iters: int = 300, seed: int = 0, restarts: int = 3
) -> np.ndarray:
    """``k`` anchors fitted to box sizes by k-means with distance ``1 - IoU``.

    k-means++ seeding from ``np.random.default_rng(seed)``, Lloyd iterations (assign each box
    to the anchor of highest IoU, move each anchor to the mean size of its boxes) until the
    assignment stops changing or ``iters`` is reached; of ``restarts`` runs the one with the
    highest :func:`mean_best_iou` is kept. Deterministic for a given seed.

    Args:
        wh: ``float[N, 2]`` box sizes (w, h), all positive; ``N >= k`` distinct sizes.
        k: number of anchors.
        iters: maximum Lloyd iterations per run.
        seed: random seed.
        restarts: number of independent k-means++ runs.

    Returns:
        ``float32[k, 2]`` anchors (w, h) in the unit of ``wh``, sorted by area, smallest first.
    """
    arr = _check_wh(wh)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if len(arr) < k:
        raise ConfigError(f"cannot fit {k} anchors to {len(arr)} boxes; need at least {k} boxes")
    distinct = len(np.unique(arr, axis=0))
    if distinct < k:
        raise ConfigError(
            f"cannot fit {k} anchors to {distinct} distinct box sizes; need at least {k}"
        )
    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(max(1, restarts)):
        c, fit = _kmeans_once(arr, k, iters, rng)
        if fit > best_fit:
            best, best_fit = c, fit
    assert best is not None
    order = np.argsort(best[:, 0] * best[:, 1], kind="stable")
    return best[order].astype(np.float32)


def anchors_for_boxes(
    wh: np.ndarray, arch: str, img_size: int, seed: int = 0
) -> tuple[tuple[float, float], ...]:
    """Anchors for :class:`~edgeyolo.config.ModelConfig` fitted to a dataset's boxes.

    Args:
        wh: ``float[N, 2]`` box sizes in pixels of the letterboxed ``img_size`` input, i.e.
            pixel size in the image times ``img_size / max(image width, image height)``.
        arch: ``"yolov3"`` (9 anchors) or ``"yolov3-tiny"`` (6 anchors).
        img_size: network input size the sizes are measured at; a box larger than it means
            the sizes were not scaled, which is an error.
        seed: random seed of :func:`kmeans_anchors`.

    Returns:
        ``3 * num_scales(arch)`` (w, h) pairs in pixels at ``img_size``, smallest area first,
        rounded to 0.01 px.
    """
    k = 3 * num_scales(arch)
    arr = _check_wh(wh)
    if arr.max() > img_size * (1 + 1e-6):
        raise ConfigError(
            f"box sizes up to {arr.max():.4g} px do not fit a {img_size} px input; give sizes "
            f"at the input size: pixels * {img_size} / max(image width, image height)"
        )
    anchors = kmeans_anchors(arr, k, seed=seed)
    return tuple((max(round(float(w), 2), 0.01), max(round(float(h), 2), 0.01)) for w, h in anchors)
