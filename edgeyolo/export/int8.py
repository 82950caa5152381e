"""The int8 step of an export: calibrate, quantize, the accuracy gate, the TensorRT targets.

:func:`build_int8` turns the fp32 graph into ``model_int8.onnx`` (:mod:`edgeyolo.export.quantize`
places the Q/DQ pairs), holds it to ``--int8-max-drop`` on ``--data`` when given, and says which
``--trt`` versions the graph can serve: no one int8 graph serves all (fp16 outside the Q/DQ pairs
needs opset 19 and fp16 scales, which 8.6 cannot parse; fp32 there runs in fp32 under TensorRT
11's strong typing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch

from edgeyolo import cpuinfo
from edgeyolo.config import EVAL_CONF_THRES, EVAL_IOU_THRES, EVAL_MAX_DET, ExportConfig
from edgeyolo.detections import from_outputs
from edgeyolo.errors import ExportError
from edgeyolo.evaluate.predict import predict_with
from edgeyolo.export import int8_gate, quantize
from edgeyolo.export.calib import load_calibration
from edgeyolo.metrics.bootstrap import Matches, map50, match_detections
from edgeyolo.runtime.conformance import check_graph
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.thresholds import retarget_nms

if TYPE_CHECKING:
    from onnxruntime.quantization import TensorsData

    from edgeyolo.data.records import ImageRecord
    from edgeyolo.export.calib import CalibSet
    from edgeyolo.export.int8_gate import GateReport

__all__ = ["build_int8"]


def build_int8(
    cfg: ExportConfig,
    net: torch.nn.Module,
    fp32_path: Path,
    records: list[ImageRecord] | None,
    img_size: int,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    """Calibrate ``fp32_path``, quantize it into ``model_int8.onnx`` beside it, and (with
    ``records`` from ``--data``) hold it to the mAP budget; returns the path and its manifest
    fields."""

    calib = load_calibration(
        Path(cfg.calib), img_size=img_size, max_images=cfg.calib_images, progress=progress
    )
    log(f"calibrating on {len(calib.files)} images from {calib.folder} ({cfg.calib_method})")
    int8_path = fp32_path.with_name("model_int8.onnx")
    info: dict[str, Any] = {
        "calibration": {
            "method": cfg.calib_method,
            "images": len(calib.files),
            "folder": calib.folder,
            "sha256": calib.sha256,
        },
        "quantize_heads": cfg.quantize_heads,
        "placement": cfg.int8_placement,
        "cpu_target": cfg.int8_target,
        "checked_as_target_runs": cfg.int8_target != "vnni" or cpuinfo.has_vnni(),
        "reduce_range": quantize.resolve_reduce_range(
            cfg.int8_placement, cfg.int8_reduce_range, cfg.int8_cpu_target
        ),
        "high_precision": quantize.resolve_high_precision(
            cfg.int8_placement, cfg.int8_high_precision, cfg.trt
        ),
    }
    ranges = quantize.calibrate(fp32_path, calib, method=cfg.calib_method)
    if records is None:
        log("note: no --data given, so INT8 is not checked against an mAP budget")
        result = quantize.quantize_int8(
            fp32_path,
            int8_path,
            ranges=ranges,
            quantize_heads=cfg.quantize_heads,
            placement=cfg.int8_placement,
            reduce_range=info["reduce_range"],
            high_precision=info["high_precision"],
        )
        info["gate"] = None
    else:
        report = _gate(cfg, net, fp32_path, int8_path, calib, ranges, records, img_size, info, log)
        info["gate"] = {"data": str(cfg.data), "split": cfg.val_split, **report.to_dict()}
        result = report.result
    info["kept_fp32"] = list(result.excluded)  # out of int8: in the high precision
    info["residual_adds"] = list(result.residual_adds)
    info["opset"] = result.opset
    if cfg.int8_placement == "tensorrt":  # the onnxruntime one is held to ONNX Runtime only
        info.update(_int8_targets(cfg, int8_path, info["high_precision"], log))
    return int8_path, info


#: Conformance rules (:data:`edgeyolo.runtime.trt_support.RULES`) that an int8 graph breaks only
#: because of the dtype outside its Q/DQ pairs, and what to export for the targets it leaves out.
_PRECISION_RULES = {
    "fp16": (
        {"opset", "scatternd-opset18", "qdq-scale-dtype"},
        f"int8 with fp16 outside its Q/DQ pairs needs opset {quantize.FP16_QDQ_OPSET} and fp16 "
        "scales, which TensorRT {dropped} cannot parse; for them export with "
        "--int8-high-precision fp32 (built weakly typed there, the FP16 flag picks fp16 kernels)",
    ),
    "fp32": (
        {"qdq-high-precision"},
        "int8 with fp32 outside its Q/DQ pairs would run those layers in fp32 on TensorRT "
        "{dropped} (strongly typed: precision comes from the graph); for it export with "
        "--int8-high-precision fp16",
    ),
}


def _int8_targets(
    cfg: ExportConfig, path: Path, high_precision: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """The ``--trt`` targets the int8 graph is held to (``trt_targets``) when fewer than all.

    No one int8 graph serves every target: fp16 outside the Q/DQ pairs needs opset 19 and fp16
    scales, which 8.6 cannot parse; fp32 there runs those layers in fp32 under strong typing
    (TensorRT 11). A target whose only conformance problems come from that choice
    (:data:`_PRECISION_RULES`) is left out, with the reason in the log and the manifest.

    Raises:
        ExportError: no ``--trt`` target is left.
    """
    rules, why = _PRECISION_RULES[high_precision]
    model = onnx.load(str(path))
    dropped = [
        t
        for t in cfg.trt
        if (found := check_graph(model, (t,))) and {v.rule for v in found} <= rules
    ]
    if not dropped:
        return {}
    reason = why.format(dropped=", ".join(dropped))
    kept = [t for t in cfg.trt if t not in dropped]
    if not kept:
        raise ExportError(
            f"--int8-high-precision {high_precision} with --trt {','.join(cfg.trt)}: {reason}"
        )
    log(f"note: the int8 graph is checked for TensorRT {', '.join(kept)} only: {reason}")
    return {"trt_targets": kept, "targets_reason": reason}


def _gate_matches(
    path: Path, records: list[ImageRecord], num_classes: int, img_size: int
) -> Matches:
    """The ONNX graph's detections on ``records``, matched once to their ground truth
    (:func:`edgeyolo.metrics.bootstrap.match_detections`), for the gate's paired bootstrap.

    COCO's evaluation setting, not the deployment thresholds: only the NMS tail's initializers
    change, the (quantized) network is scored exactly as it will run.
    """
    coco = retarget_nms(
        onnx.load(str(path)),
        conf_thres=EVAL_CONF_THRES,
        iou_thres=EVAL_IOU_THRES,
        max_det=EVAL_MAX_DET,
    )
    with OnnxRuntimeSession(coco.SerializeToString()) as session:
        predictions = predict_with(
            lambda images: from_outputs(session.run(images)), records, img_size=img_size, batch=8
        )
    return match_detections(predictions, records, num_classes)


def _gate(
    cfg: ExportConfig,
    net: torch.nn.Module,
    fp32_path: Path,
    int8_path: Path,
    calib: CalibSet,
    ranges: TensorsData,
    records: list[ImageRecord],
    img_size: int,
    info: dict[str, Any],
    log: Callable[[str], None],
) -> GateReport:
    """The int8 accuracy gate (:func:`edgeyolo.export.int8_gate.int8_with_budget`) on
    ``records``: the paired bootstrap interval of int8's mAP@0.5 drop against fp32's."""

    def matches(path: Path) -> Matches:
        return _gate_matches(path, records, len(net.config.class_names), img_size)

    reference = matches(fp32_path)
    fp32_score = 100.0 * map50(reference)
    log(f"fp32 mAP@0.5 on {cfg.data} ({cfg.val_split}, {len(records)} images): {fp32_score:.2f}")
    if fp32_score < 1.0:  # points
        log(
            f"note: the fp32 graph scores {fp32_score:.2f} mAP@0.5 there, so the int8 gate cannot "
            "tell a good int8 graph from a broken one; train longer (or check --data) before "
            "trusting int8"
        )
    return int8_gate.int8_with_budget(
        fp32_path,
        int8_path,
        calib=calib,
        method=cfg.calib_method,
        ranges=ranges,
        evaluate=matches,
        reference=reference,
        max_drop=cfg.int8_max_drop,
        strict=cfg.int8_strict,
        quantize_heads=cfg.quantize_heads,
        placement=cfg.int8_placement,
        reduce_range=info["reduce_range"],
        high_precision=info["high_precision"],
        log=log,
    )
