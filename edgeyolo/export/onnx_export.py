"""fp32 and fp16 ONNX files: trace, join with the NMS tail, simplify with onnxsim, check.

Each function takes a path or model and returns a path, in the manner of Polygraphy's build steps.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxsim
from torch import nn

from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
    TRT_TARGETS,
)
from edgeyolo.errors import ExportError
from edgeyolo.export.fp16 import convert_region_to_fp16
from edgeyolo.export.graph import (
    NET_PREFIX,
    dedupe_opsets,
    export_torch_part,
    nms_tail,
    num_predictions,
)
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.trt_support import TARGETS

__all__ = [
    "MIN_OPSET",
    "SimplifyReport",
    "build_fp32",
    "check_opset",
    "compare_outputs",
    "simplify_checked",
    "to_fp16",
]

#: The oldest opset written (the graph's ops and attributes are those of opset 17).
MIN_OPSET = 17


@dataclass(frozen=True)
class SimplifyReport:
    """What onnxsim did: node counts before/after and the largest output difference it caused."""

    nodes_before: int
    nodes_after: int
    max_abs_diff: float
    check_images: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "max_abs_diff": self.max_abs_diff,
            "check_images": self.check_images,
        }


def _run(model_bytes: bytes, images: np.ndarray) -> dict[str, np.ndarray]:

    with OnnxRuntimeSession(model_bytes) as s:
        return s.run(images)


def compare_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over all outputs; ``inf`` if names, shapes or counts differ."""
    if a.keys() != b.keys():
        return float("inf")
    worst = 0.0
    for k in a:
        if a[k].shape != b[k].shape:
            return float("inf")
        if a[k].size:
            worst = max(worst, float(np.abs(a[k].astype(np.float64) - b[k]).max()))
    return worst


def simplify_checked(model, check_images: np.ndarray, *, atol: float = 1e-4):
    """onnxsim the model and check on ``check_images`` (real, letterboxed) that outputs hold.

    Returns ``(simplified ModelProto, SimplifyReport)``. A failure of onnxsim, or a simplified
    graph whose outputs differ by more than ``atol``, raises :class:`ExportError` (pass
    ``--no-simplify`` to export the unsimplified graph instead).
    """

    try:
        with _captured_stderr() as captured:
            simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as e:  # onnxsim raises bare RuntimeErrors from C++
        detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        tail = " | ".join(captured.getvalue().strip().splitlines()[-3:])
        raise ExportError(
            f"onnxsim failed: {detail}"
            + (f" (onnxsim said: {tail})" if tail else "")
            + "; export with --no-simplify to keep the unsimplified graph"
        ) from e
    if not ok:
        raise ExportError("onnxsim could not validate its result; export with --no-simplify")
    dedupe_opsets(simplified)
    before = _run(model.SerializeToString(), check_images)
    after = _run(simplified.SerializeToString(), check_images)
    diff = compare_outputs(before, after)
    if not diff <= atol:
        raise ExportError(
            f"onnxsim changed the outputs (max |diff| {diff:.3g} > {atol:g}) on "
            f"{len(check_images)} images; export with --no-simplify"
        )
    report = SimplifyReport(
        len(model.graph.node), len(simplified.graph.node), diff, len(check_images)
    )
    return simplified, report


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Capture file descriptor 2 (onnxsim's C++ prints its constant-folding notes there)."""
    buf = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield buf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.write(tmp.read().decode(errors="replace"))


def check_opset(opset: int, trt: tuple[str, ...] = TRT_TARGETS) -> None:
    """Refuse an opset older than :data:`MIN_OPSET` or newer than a TensorRT target in ``trt``
    parses (:data:`edgeyolo.runtime.trt_support.TARGETS`: 8.6 stops at 17, 10.3 at 20).

    Raises:
        ExportError: naming the opset, the TensorRT version and where its limit is documented.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old; use {MIN_OPSET} or newer")
    over = [TARGETS[t] for t in trt if opset > TARGETS[t].max_opset]
    if over:
        low = min(t.max_opset for t in over)
        names = ", ".join(f"{t.label} parses opsets up to {t.max_opset}" for t in over)
        raise ExportError(
            f"--opset {opset} is newer than a target TensorRT parses: {names} "
            f"({over[0].opset_source}); use --opset {low} or lower, or leave "
            f"{', '.join(t.key for t in over)} out of --trt"
        )


def build_fp32(
    net: nn.Module,
    path: str | Path,
    *,
    img_size: int,
    conf_thres: float = DEFAULT_CONF_THRES,
    iou_thres: float = DEFAULT_IOU_THRES,
    max_det: int = DEFAULT_MAX_DET,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    multi_label: bool = False,
    opset: int = MIN_OPSET,
    trt: tuple[str, ...] = TRT_TARGETS,
    raw: bool = False,
    simplify: bool = True,
    check_images: np.ndarray | None = None,
) -> tuple[Path, SimplifyReport | None]:
    """Write the fp32 deploy graph of ``net`` (see :mod:`edgeyolo.export.graph`) to ``path``.

    Args:
        net: a trained YOLOv3 (``edgeyolo.models.YOLOv3``), in eval mode or not.
        img_size: square input size (a multiple of 32); batch stays dynamic.
        max_candidates: candidates per image that enter NMS (see :func:`nms_tail`).
        opset: ONNX opset of the graph, checked against ``trt`` (:func:`check_opset`).
        trt: the TensorRT targets (``--trt``) the graph is meant for.
        raw: end at the raw head maps (``head0``, ``head1``[, ``head2``]); no decode or NMS.
        simplify: run onnxsim, checked on ``check_images`` (``float32[B, 3, S, S]``; random
            noise when not given, which checks less).
    Returns:
        ``(path, SimplifyReport or None)``.
    """

    check_opset(opset, trt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval().float().cpu()
    with tempfile.TemporaryDirectory() as tmp:
        part_path = Path(tmp) / "part.onnx"
        try:
            export_torch_part(
                net, part_path, img_size=img_size, opset=opset, raw=raw, multi_label=multi_label
            )
        except Exception as e:
            raise ExportError(f"tracing the model to ONNX failed: {e}") from e
        model = onnx.load(str(part_path))
    if not raw:
        tail = nms_tail(
            num_classes=net.num_classes,
            num_preds=num_predictions(net, img_size),
            conf_thres=conf_thres,
            iou_thres=iou_thres,
            max_det=max_det,
            max_candidates=max_candidates,
            multi_label=multi_label,
            opset=opset,
        )
        tail.ir_version = model.ir_version
        model = onnx.compose.merge_models(
            model, tail, io_map=[("pred_boxes", "pred_boxes"), ("pred_scores", "pred_scores")]
        )
        dedupe_opsets(model)
    model.graph.name = "edgeyolo"
    report = None
    if simplify:
        if check_images is None:
            rng = np.random.default_rng(0)
            check_images = rng.random((2, 3, img_size, img_size), dtype=np.float32)
        model, report = simplify_checked(model, check_images)
    onnx.checker.check_model(model)
    _save(model, path)
    return path, report


def to_fp16(fp32_path: str | Path, path: str | Path) -> Path:
    """The network half of the graph in fp16; inputs, outputs, decoding and NMS stay fp32.

    The ``/net/`` nodes (and what they depend on) are converted by
    :func:`edgeyolo.export.fp16.convert_region_to_fp16`, which casts at the network's edges only:
    ``images`` once into fp16, each head map once back to fp32 before the decode + NMS tail (3
    ``Cast`` nodes for yolov3-tiny, 4 for yolov3), so that strongly typed TensorRT runs the
    network in fp16 without a cast between layers. The graph carries its precision, which is
    what TensorRT 11 requires. It does not depend on ``onnxruntime.transformers.float16``, whose
    output differs by version (module docstring of :mod:`edgeyolo.export.fp16`).

    Raises:
        ExportError: a weight does not fit in fp16, or the converted graph fails ONNX's checks.
    """

    model = onnx.load(str(fp32_path))
    dedupe_opsets(model)
    half, _ = convert_region_to_fp16(model, NET_PREFIX)
    onnx.checker.check_model(half, full_check=True)
    _save(half, Path(path))
    return Path(path)


def _save(model: onnx.ModelProto, path: Path) -> None:
    write_bytes_atomic(path, model.SerializeToString())
