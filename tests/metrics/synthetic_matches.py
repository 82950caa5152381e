"""Synthetic detection sets for the bootstrap and int8-gate tests (imported, not collected)."""

from __future__ import annotations

import numpy as np

from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Prediction
from edgeyolo.metrics.bootstrap import Matches


def one_box_matches(found: np.ndarray) -> Matches:
    """One ground-truth box of class 0 per image; image ``i``'s one detection is a true positive
    where ``found[i]`` and a false positive otherwise, every true positive scored above every
    false positive. AP@0.5 is then known: recall ``r = found.mean()`` at precision 1, so AP is
    the share of COCO's 101 recall points at or below ``r`` (:func:`one_box_ap`)."""
    found = np.asarray(found, dtype=bool)
    n = len(found)
    scores = np.where(found, 0.9, 0.1) - np.arange(n) * 1e-6  # no ties
    order = np.argsort(-scores, kind="stable")
    return Matches(
        labels=np.zeros(n, dtype=np.int64),
        scores=scores[order],
        tp=found[order],
        image=order.astype(np.int64),
        gt_counts=np.ones((n, 1), dtype=np.int64),
    )


def one_box_ap(found: np.ndarray) -> float:
    """The AP@0.5 of :func:`one_box_matches`: the share of COCO's recall points (as floats:
    ``np.linspace(0, 1, 101)[95]`` is ``0.9500000000000001``, above a recall of 0.95) at or below
    the recall."""
    recall = float(np.sum(found)) / len(found)
    return float(np.mean(np.linspace(0.0, 1.0, 101) <= recall))


def realistic_set(
    n: int, seed: int, num_classes: int = 10, max_fp: int = 30
) -> tuple[list[ImageRecord], list[Prediction]]:
    """``n`` images with 0-4 boxes of ``num_classes`` classes, and a detector that finds 90 % of
    them (jittered by ~6 px, 10 % of them with the wrong class) and adds up to ``max_fp`` low-score
    false positives per image: overlapping boxes, empty images, classes without ground truth."""
    rng = np.random.default_rng(seed)
    records: list[ImageRecord] = []
    predictions: list[Prediction] = []
    for i in range(n):
        g = int(rng.integers(0, 5))
        xy = rng.uniform(0, 300, (g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 100, (g, 2))], 1).astype(np.float32)
        classes = rng.integers(0, num_classes, g)
        records.append(ImageRecord(f"{i}.jpg", boxes, classes, 416, 416))
        found = rng.random(g) < 0.9
        k = int(found.sum())
        hit_boxes = boxes[found] + rng.normal(0, 6, (k, 4)).astype(np.float32)
        hit_labels = np.where(rng.random(k) < 0.9, classes[found], rng.integers(0, num_classes, k))
        m = int(rng.integers(0, max_fp))
        fxy = rng.uniform(0, 300, (m, 2))
        fp_boxes = np.concatenate([fxy, fxy + rng.uniform(10, 80, (m, 2))], 1).astype(np.float32)
        predictions.append(
            (
                np.concatenate([hit_boxes, fp_boxes]),
                np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.001, 0.6, m)]).astype(
                    np.float32
                ),
                np.concatenate([hit_labels, rng.integers(0, num_classes, m)]).astype(np.int64),
            )
        )
    return records, predictions
