"""The check every TensorRT engine gets at build: its detections of the export's check images
against the PyTorch model's, as every ONNX variant gets (:mod:`edgeyolo.export.pipeline`).

An fp32 engine built with TF32 off must reproduce PyTorch within the fp32 graph's own tolerance
(:data:`FP32_FLOOR`: every box matched, IoU >= 0.999, scores within 1e-4), or the export fails.
fp16, int8 and fp32 built with ``--tf32`` are held to stated floors (:data:`FLOORS`) and the
result is recorded in the engine's manifest entry; one below its floor is reported with a
warning, not refused, as their ONNX graphs are: reduced precision moves boxes near a threshold
by design, and which kernels TensorRT picks depends on the GPU.

The comparison (:func:`engine_detections`, :func:`engine_parity`, :func:`check_engine_parity`)
takes any callable that maps a batch of images to the graph's four outputs, so it is tested on
CPU with made-up outputs; :func:`run_engine` plugs in
:class:`~edgeyolo.runtime.tensorrt.EngineRunner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.errors import ExportError
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.postprocess import Detections, from_outputs
from edgeyolo.runtime.tensorrt import EngineRunner

__all__ = [
    "FLOORS",
    "FP32_FLOOR",
    "Floor",
    "check_engine_parity",
    "engine_detections",
    "engine_parity",
    "floor_for",
    "run_engine",
]


@dataclass(frozen=True)
class Floor:
    """What an engine's parity summary must reach; ``None``: that statistic is not held.

    Attributes:
        rule: what the floor is, for the manifest and messages.
        matched_fraction: matched boxes over the larger of the two box counts.
        min_iou: the worst matched box's IoU.
        mean_iou: the mean IoU over matched boxes.
        max_score_diff: the largest score difference of a matched box.
    """

    rule: str
    matched_fraction: float
    min_iou: float | None = None
    mean_iou: float | None = None
    max_score_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


#: fp32 with TF32 off: the one fp32 tolerance, which the fp32 ONNX graph is held to as well
#: (``export.pipeline.FP32_MIN_IOU``, ``FP32_MAX_SCORE_DIFF`` are read from it); GPU and CPU fp32
#: kernels differ by float rounding only.
FP32_FLOOR = Floor("fp32 (TF32 off) reproduces PyTorch", 1.0, min_iou=0.999, max_score_diff=1e-4)
#: Stated floors for the reduced-precision engines. ONNX Runtime on CPU reached (bench/RESULTS.md,
#: MNIST-detection, 1,349 boxes): fp16 0.999 matched / mean IoU 0.993; int8 0.93-0.99 / 0.90-0.98
#: (the gate's entropy fallback at the low end). TF32 rounds inputs to fp16's 10-bit mantissa.
FLOORS: dict[str, Floor] = {
    "tf32": Floor("fp32 with TF32: matched >= 0.95, mean IoU >= 0.98", 0.95, mean_iou=0.98),
    "fp16": Floor("fp16: matched >= 0.95, mean IoU >= 0.98", 0.95, mean_iou=0.98),
    "int8": Floor("int8: matched >= 0.85, mean IoU >= 0.90", 0.85, mean_iou=0.90),
}


def floor_for(precision: str, tf32: bool) -> Floor:
    """The floor an engine of ``precision`` built with or without TF32 is held to."""
    if precision == "fp32":
        return FLOORS["tf32"] if tf32 else FP32_FLOOR
    if precision not in FLOORS:
        raise ExportError(f"no parity floor for precision {precision!r}; use fp32, fp16 or int8")
    return FLOORS[precision]


def engine_detections(
    run: Callable[[np.ndarray], Mapping[str, np.ndarray]], images: np.ndarray, max_batch: int
) -> list[Detections]:
    """Detections of ``images`` (``float32[N, 3, S, S]``) through ``run``, ``max_batch`` at a
    time; ``run`` returns the export's ``num_dets`` / ``boxes`` / ``scores`` / ``classes``."""
    if max_batch < 1:
        raise ExportError(f"max_batch must be >= 1 to run the engine, got {max_batch}")
    found: list[Detections] = []
    for start in range(0, len(images), max_batch):
        chunk = images[start : start + max_batch]
        outputs = run(chunk)
        got = from_outputs(outputs)
        if len(got) != len(chunk):
            raise ExportError(
                f"the engine returned detections for {len(got)} images from a batch of "
                f"{len(chunk)}; its outputs do not follow the export's graph"
            )
        found += got
    return found


def meets(summary: Mapping[str, Any], floor: Floor) -> bool:
    """Whether a :func:`~edgeyolo.metrics.parity.parity_summary` dict reaches ``floor``;
    no box on either side (``matched_fraction`` None) has nothing to disagree on."""
    fraction = summary["matched_fraction"]
    if fraction is None:
        return True
    if fraction < floor.matched_fraction:
        return False
    if summary["matched"] == 0:
        return True
    held = (
        (floor.min_iou, summary["min_iou"], 1),
        (floor.mean_iou, summary["mean_iou"], 1),
        (floor.max_score_diff, summary["max_score_diff"], -1),
    )
    for bound, value, sign in held:
        if bound is None:
            continue
        if math.isnan(float(value)) or sign * (float(value) - bound) < 0:
            return False
    return True


def engine_parity(
    reference: Sequence[Detections], got: Sequence[Detections], *, precision: str, tf32: bool
) -> dict[str, Any]:
    """Parity summary of an engine's detections against PyTorch's, with its floor and verdict:
    the ``parity_vs_torch`` of an engine's manifest entry."""
    summary = parity_summary(reference, got).to_dict()
    floor = floor_for(precision, tf32)
    return {**summary, "floor": floor.to_dict(), "passed": meets(summary, floor)}


def check_engine_parity(
    record: Mapping[str, Any], engine: Path, log: Callable[[str], object]
) -> None:
    """Fail an engine held to :data:`FP32_FLOOR` that misses it; warn for any other that misses
    its floor; say so when the check images gave no box to compare."""
    floor = record["floor"]
    if record["matched_fraction"] is None:
        log(
            f"note: neither PyTorch nor {engine.name} found a box on the {record['images']} check "
            "images, so its parity is unchecked; pass --calib with real images"
        )
    if record["passed"]:
        return
    numbers = (
        f"{record['matched']} of {max(record['ref_count'], record['other_count'])} boxes "
        f"matched, min IoU {record['min_iou']:.4f}, mean IoU {record['mean_iou']:.4f}, "
        f"max |score diff| {record['max_score_diff']:.3g}"
    )
    if floor["rule"] == FP32_FLOOR.rule:
        raise ExportError(
            f"{engine} does not reproduce the PyTorch model on {record['images']} images "
            f"({numbers}; the rule: {floor['rule']}); TF32 was off, so this is a TensorRT or "
            "export problem: please report it with the checkpoint and the --verbose build log"
        )
    log(f"warning: {engine.name} is below its parity floor ({floor['rule']}): {numbers}")


def run_engine(engine: Path, images: np.ndarray) -> list[Detections]:
    """Detections of ``images`` by the engine just built (no manifest yet: no compat check)."""
    with EngineRunner(engine, check_compat=False) as runner:
        return engine_detections(runner.run, images, runner.max_batch)
