"""Parity against the stored reference detections: the check every engine gets where it is built,
and that ``edgeyolo bench --models DIR`` runs for each artifact without the checkpoint.

The references are the PyTorch model's detections of the export's first 16 calibration frames,
at the graph's own NMS settings (:mod:`edgeyolo.runtime.references`). An artifact runs on the
same frames (:meth:`~edgeyolo.runtime.references.References.inputs`) and its detections are
compared box by box (:func:`edgeyolo.metrics.parity.parity_summary`) and held to a floor per
precision:

- fp32 with TF32 off must reproduce PyTorch within the fp32 graph's own tolerance
  (:data:`FP32_FLOOR`: every box matched, IoU >= 0.999, scores within 1e-4); GPU and CPU fp32
  kernels differ by float rounding only.
- fp16, int8, and fp32 built with ``--tf32`` are held to the stated floors of :data:`FLOORS`
  (matched fraction and mean IoU): reduced precision moves boxes near a threshold by design, and
  which kernels TensorRT picks depends on the GPU.

``edgeyolo build`` (and ``export --engine``, the same code) fails an engine below its floor, and
the engine is then not kept (:func:`check_parity`). Entry points:

- :func:`check_against_references` ``(artifact_path, refs, precision, tf32)``: runs an engine or
  an ONNX graph through :func:`edgeyolo.runtime.backends.open_backend` (engines are checked
  against the manifest there) and returns a :class:`ParityResult`.
- :func:`references_parity` ``(refs, detections, precision, tf32)``: the comparison alone, for a
  caller that ran the artifact itself; :func:`run_engine` runs an engine not yet in the
  manifest (:class:`~edgeyolo.runtime.tensorrt.EngineRunner` without its compatibility check).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.detections import Detections, from_outputs
from edgeyolo.errors import EngineBuildError, ExportError
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.runtime.backends import TensorRTBackend, open_backend
from edgeyolo.runtime.references import References
from edgeyolo.runtime.tensorrt import EngineRunner

__all__ = [
    "FLOORS",
    "FP32_FLOOR",
    "Floor",
    "ParityResult",
    "check_against_references",
    "check_parity",
    "detect_in_batches",
    "floor_for",
    "meets",
    "references_parity",
    "run_engine",
]


@dataclass(frozen=True)
class Floor:
    """What an artifact's parity summary must reach; ``None``: that statistic is not held.

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
    """The floor an artifact of ``precision`` (built with or without TF32) is held to."""
    if precision == "fp32":
        return FLOORS["tf32"] if tf32 else FP32_FLOOR
    if precision not in FLOORS:
        raise ExportError(f"no parity floor for precision {precision!r}; use fp32, fp16 or int8")
    return FLOORS[precision]


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


@dataclass(frozen=True)
class ParityResult:
    """An artifact's detections of the reference frames against the stored ones.

    Attributes:
        precision: the artifact's precision; ``tf32``: built with TF32 (engines).
        floor: what it is held to (:func:`floor_for`); ``passed``: whether it reaches it.
        summary: :meth:`~edgeyolo.metrics.parity.ParitySummary.to_dict` (``images``,
            ``matched``, ``matched_fraction``, ``min_iou``, ``mean_iou``, ``max_score_diff``,
            ``ref_count``, ``other_count``).
        references: the file the references came from.
    """

    precision: str
    tf32: bool
    floor: Floor
    summary: dict[str, Any]
    passed: bool
    references: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record stored in an engine's manifest entry (``parity_vs_torch``)."""
        return {
            **self.summary,
            "floor": self.floor.to_dict(),
            "passed": self.passed,
            "against": self.references,
        }

    def describe(self) -> str:
        """The numbers in one phrase: boxes matched, IoU, score difference."""
        s = self.summary
        n = max(s["ref_count"], s["other_count"])
        if not s["matched"]:
            return f"0 of {n} boxes matched"
        return (
            f"{s['matched']} of {n} boxes matched, min IoU {s['min_iou']:.4f}, mean IoU "
            f"{s['mean_iou']:.4f}, max |score diff| {s['max_score_diff']:.3g}"
        )


def references_parity(
    refs: References, got: Sequence[Detections], *, precision: str, tf32: bool = False
) -> ParityResult:
    """Compare ``got`` (one :class:`Detections` per reference frame) with ``refs``."""
    if len(got) != len(refs):
        raise ExportError(
            f"{len(got)} detection lists for the {len(refs)} reference images of {refs.path}"
        )
    summary = parity_summary(list(refs.detections), list(got)).to_dict()
    floor = floor_for(precision, tf32)
    passed = meets(summary, floor)
    return ParityResult(precision, tf32, floor, summary, passed, refs.path.name)


def check_parity(result: ParityResult, artifact: Path, log: Callable[[str], object]) -> None:
    """Fail an artifact below its floor (:class:`EngineBuildError`); say so when the reference
    frames gave no box to compare."""
    if result.summary["matched_fraction"] is None:
        log(
            f"note: neither PyTorch nor {artifact.name} found a box on the "
            f"{result.summary['images']} reference images, so its parity is unchecked; export "
            "with --calib holding real frames"
        )
    if result.passed:
        return
    numbers = f"{result.describe()} on {result.summary['images']} reference images"
    if result.floor.rule == FP32_FLOOR.rule:
        raise EngineBuildError(
            f"{artifact} does not reproduce the PyTorch model's stored detections ({numbers}; "
            f"the rule: {result.floor.rule}); TF32 was off, so this is a TensorRT or export "
            "problem: please report it with the export folder and the --verbose build log"
        )
    advice = "try the other --typing, or build the fp32 graph to see what the precision costs"
    if result.floor.rule == FLOORS["tf32"].rule:
        advice = "build without --tf32"
    raise EngineBuildError(
        f"{artifact} is below its parity floor ({result.floor.rule}): {numbers}; {advice}"
    )


def detect_in_batches(
    run: Callable[[np.ndarray], list[Detections]],
    images: np.ndarray,
    max_batch: int,
    min_batch: int = 1,
) -> list[Detections]:
    """Detections of ``images`` (``float32[N, 3, S, S]``) through ``run``, ``max_batch`` at a
    time; a last batch short of ``min_batch`` (a DLA engine's fixed batch) is padded with copies
    of its last image, whose detections are dropped.

    Raises:
        ExportError: a batch range that cannot hold, or ``run`` returned another count.
    """
    if not 1 <= min_batch <= max_batch:
        raise ExportError(
            f"batch range {min_batch}..{max_batch} is empty; it needs 1 <= min <= max"
        )
    found: list[Detections] = []
    for start in range(0, len(images), max_batch):
        chunk = images[start : start + max_batch]
        pad = max(0, min_batch - len(chunk))
        batch = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
        got = run(batch)
        if len(got) != len(batch):
            raise ExportError(
                f"the model returned detections for {len(got)} images from a batch of "
                f"{len(batch)}; its outputs do not follow the export's graph"
            )
        found += got[: len(chunk)]
    return found


def run_engine(engine: Path, images: np.ndarray) -> list[Detections]:
    """Detections of ``images`` by an engine just built (not in the manifest yet, so without the
    compatibility check: it was built here)."""
    with EngineRunner(engine, check_compat=False) as runner:

        def run(batch: np.ndarray) -> list[Detections]:
            return from_outputs(runner.run(batch))

        return detect_in_batches(run, images, runner.max_batch, runner.min_batch)


def check_against_references(
    artifact_path: str | Path, refs: References, precision: str, tf32: bool = False
) -> ParityResult:
    """Run an engine or ONNX graph of an export folder on the reference frames and compare.

    The artifact opens through :func:`~edgeyolo.runtime.backends.open_backend` at its own NMS
    settings (an engine must fit this GPU and TensorRT, as its manifest entry says; an ONNX
    graph runs on the CPU).

    Raises:
        ModelFileError, ConfigError, EngineMismatchError: from opening the artifact.
        ExportError: the artifact returns detections for another number of images.
    """
    path = Path(artifact_path)
    with open_backend(path) as backend:
        min_batch = backend.trt.min_batch if isinstance(backend, TensorRTBackend) else 1
        got = detect_in_batches(backend.infer, refs.inputs(), backend.max_batch, min_batch)
    return references_parity(refs, got, precision=precision, tf32=tf32)
