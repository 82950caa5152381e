"""Accuracy measures: COCO mAP (through faster-coco-eval)."""

from __future__ import annotations

from edgeyolo.metrics.coco_map import ClassAP, MapResult, compute_map, print_map_table

__all__ = ["ClassAP", "MapResult", "compute_map", "print_map_table"]
