"""COCO-style mAP computed by ``faster_coco_eval`` (no hand-written metric).

Ground truth and detections are turned into in-memory COCO datasets: image id = record index + 1,
category id = class id + 1 (COCO ids start at 1), boxes as ``[x, y, w, h]`` in original pixels,
``iscrowd = 0``, ``area = w * h``. The evaluation is the standard one: IoU thresholds
0.50:0.05:0.95, 101-point interpolated precision, at most 100 detections per image, area "all".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from rich.console import Console
from rich.table import Table

from edgeyolo.console import make_console
from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Prediction
from edgeyolo.errors import DataError

_MAX_DETS = 100


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """A ``print_function`` that keeps faster-coco-eval silent."""


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ClassAP:
    """AP of one class.

    ``ap50`` and ``ap50_95`` are ``nan`` when the class has no ground truth box (COCO's -1):
    such a class is left out of the means, and :meth:`MapResult.to_dict` writes it as ``None``.
    ``num_images`` counts the images holding at least one box of the class.
    """

    name: str
    ap50: float
    ap50_95: float
    num_gt: int
    num_images: int = 0


@dataclass(frozen=True)
class MapResult:
    """Dataset-level result; ``map50``/``map50_95`` are ``nan`` only without any ground truth."""

    map50: float
    map50_95: float
    per_class: tuple[ClassAP, ...]
    num_images: int
    num_gt: int
    num_dets: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``nan`` values become ``None``."""
        return {
            "map50": _nan_to_none(self.map50),
            "map50_95": _nan_to_none(self.map50_95),
            "per_class": {
                c.name: {
                    "ap50": _nan_to_none(c.ap50),
                    "ap50_95": _nan_to_none(c.ap50_95),
                    "num_gt": c.num_gt,
                    "num_images": c.num_images,
                }
                for c in self.per_class
            },
            "num_images": self.num_images,
            "num_gt": self.num_gt,
            "num_dets": self.num_dets,
        }


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """``float[N, 4]`` xyxy -> ``float64[N, 4]`` xywh."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _ground_truth(records: Sequence[ImageRecord], names: Sequence[str]) -> dict[str, Any]:
    images, annotations = [], []
    for i, rec in enumerate(records):
        images.append({"id": i + 1, "width": int(rec.width), "height": int(rec.height)})
        if len(rec.classes) and (rec.classes.min() < 0 or rec.classes.max() >= len(names)):
            raise DataError(
                f"class id outside [0, {len(names)}) in the ground truth", file=rec.path
            )
        for box, cls in zip(_xywh(rec.boxes), rec.classes, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(cls) + 1,
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": str(n)} for k, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(predictions: Sequence[Prediction], num_classes: int) -> list[dict[str, Any]]:
    dets: list[dict[str, Any]] = []
    for i, (boxes, scores, labels) in enumerate(predictions):
        xywh = _xywh(boxes)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if not len(xywh) == len(scores) == len(labels):
            raise ValueError(
                f"image {i}: {len(xywh)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"image {i}: predicted label outside [0, {num_classes})")
        dets.extend(
            {"image_id": i + 1, "category_id": int(c) + 1, "bbox": b.tolist(), "score": float(s)}
            for b, s, c in zip(xywh, scores, labels, strict=True)
        )
    return dets


def _mean_valid(precision: np.ndarray) -> float:
    """Mean of the entries that are not COCO's -1 ("no ground truth"), ``nan`` when none are."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan


def compute_map(
    predictions: Sequence[Prediction],
    records: Sequence[ImageRecord],
    names: Sequence[str],
) -> MapResult:
    """COCO mAP@0.5 and mAP@0.5:0.95 of ``predictions`` against ``records``.

    Args:
        predictions: one ``(boxes float[K, 4] xyxy, scores float[K], labels int[K])`` per record,
            in the same order, boxes in pixels of the original image.
        records: the ground truth; images without boxes are allowed (their detections are
            false positives).
        names: class names; class id ``k`` is ``names[k]``.

    Returns:
        :class:`MapResult`. Classes without ground truth have ``nan`` APs and do not enter the
        means. Without any detection the maps are 0.0; without any ground truth they are ``nan``.

    Raises:
        ValueError: ``predictions`` and ``records`` differ in length, or a prediction is malformed.
        DataError: a ground-truth class id is outside ``[0, len(names))``.
    """
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    gt_dict = _ground_truth(records, names)
    dets = _detections(predictions, len(names))

    gt = COCO(gt_dict, print_function=_quiet)
    dt = gt.loadRes(dets)
    dt.print_function = _quiet
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=_quiet)
    ev.params.maxDets = [1, 10, _MAX_DETS]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()

    # precision: [T IoU thresholds, R recall points, K classes, A area ranges, M maxDets].
    precision = np.asarray(ev.eval["precision"])
    area = ev.params.areaRngLbl.index("all")
    precision = precision[:, :, :, area, ev.params.maxDets.index(_MAX_DETS)]
    t50 = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))
    cat_index = {int(c): k for k, c in enumerate(ev.params.catIds)}

    per_class = []
    for cls, name in enumerate(names):
        in_class = [rec.classes == cls for rec in records]
        k = cat_index[cls + 1]
        per_class.append(
            ClassAP(
                name=str(name),
                ap50=_mean_valid(precision[t50, :, k]),
                ap50_95=_mean_valid(precision[:, :, k]),
                num_gt=int(sum(m.sum() for m in in_class)),
                num_images=int(sum(bool(m.any()) for m in in_class)),
            )
        )

    num_gt = len(gt_dict["annotations"])
    stats = [float(s) for s in ev.stats[:2]]
    map50_95, map50 = (math.nan if num_gt == 0 or s < 0 else s for s in stats)
    return MapResult(
        map50=map50,
        map50_95=map50_95,
        per_class=tuple(per_class),
        num_images=len(records),
        num_gt=num_gt,
        num_dets=len(dets),
    )


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def print_map_table(result: MapResult, console: Console | None = None) -> None:
    """Print one row per class and an ``all`` row: images, boxes, AP50, AP50:95."""
    table = Table(title="COCO mAP", show_footer=False)
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("boxes", justify="right")
    table.add_column("AP50", justify="right")
    table.add_column("AP50:95", justify="right")
    table.add_row(
        "all",
        str(result.num_images),
        str(result.num_gt),
        _fmt(result.map50),
        _fmt(result.map50_95),
        style="bold",
        end_section=True,
    )
    for c in result.per_class:
        table.add_row(c.name, str(c.num_images), str(c.num_gt), _fmt(c.ap50), _fmt(c.ap50_95))
    (console or make_console()).print(table)
