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
from onnxruntime.transformers.float16 import convert_float_to_float16
from torch import nn

from edgeyolo.config import DEFAULT_CONF_THRES, DEFAULT_IOU_THRES, DEFAULT_MAX_DET
from edgeyolo.errors import ExportError
from edgeyolo.export.graph import (
    NET_PREFIX,
    dedupe_opsets,
    export_torch_part,
    nms_tail,
    num_predictions,
)
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession

__all__ = ["SimplifyReport", "build_fp32", "compare_outputs", "simplify_checked", "to_fp16"]


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


def build_fp32(
    net: nn.Module,
    path: str | Path,
    *,
    img_size: int,
    conf_thres: float = DEFAULT_CONF_THRES,
    iou_thres: float = DEFAULT_IOU_THRES,
    max_det: int = DEFAULT_MAX_DET,
    multi_label: bool = False,
    opset: int = 17,
    raw: bool = False,
    simplify: bool = True,
    check_images: np.ndarray | None = None,
) -> tuple[Path, SimplifyReport | None]:
    """Write the fp32 deploy graph of ``net`` (see :mod:`edgeyolo.export.graph`) to ``path``.

    Args:
        net: a trained YOLOv3 (``edgeyolo.models.YOLOv3``), in eval mode or not.
        img_size: square input size (a multiple of 32); batch stays dynamic.
        raw: end at the raw head maps (``head0``, ``head1``[, ``head2``]); no decode or NMS.
        simplify: run onnxsim, checked on ``check_images`` (``float32[B, 3, S, S]``; random
            noise when not given, which checks less).
    Returns:
        ``(path, SimplifyReport or None)``.
    """

    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer")
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

    Every node outside the ``/net/`` prefix is kept in fp32 through
    ``onnxruntime.transformers.float16.convert_float_to_float16``'s block list; it inserts the
    casts at the boundary, so the graph carries its precision (what TensorRT 11 requires).
    """

    model = onnx.load(str(fp32_path))
    block = [n.name for n in model.graph.node if not n.name.startswith(NET_PREFIX)]
    half = convert_float_to_float16(
        model, keep_io_types=True, node_block_list=block, disable_shape_infer=False
    )
    dedupe_opsets(half)
    _toposort(half.graph)
    onnx.checker.check_model(half)
    _save(half, Path(path))
    return Path(path)


def _toposort(graph) -> None:
    """Order ``graph.node`` so every node follows its producers (the fp16 converter appends
    its boundary casts at the end, which ONNX Runtime accepts but the checker and TensorRT do not).
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"graph has a cycle or a missing input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _save(model: onnx.ModelProto, path: Path) -> None:
    write_bytes_atomic(path, model.SerializeToString())
