"""Metrics (floor 3): pure functions over predictions and ground truth; they run no model.

COCO mAP through faster-coco-eval (:mod:`~edgeyolo.metrics.coco_map`) and box-level agreement
between two backends' detections (:mod:`~edgeyolo.metrics.parity`).
"""

from __future__ import annotations

from edgeyolo.metrics.coco_map import ClassAP, MapResult, compute_map, print_map_table

__all__ = ["ClassAP", "MapResult", "compute_map", "print_map_table"]
