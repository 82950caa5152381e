"""`edgeyolo export`: ONNX graphs (fp32/fp16/int8), TensorRT engines and the manifest, with
their parity and int8-gate lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeyolo.cli.common import (
    _TRAIN_EXTRA,
    _cli_errors,
    _Tf32Option,
    _TypingOption,
    console,
)
from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
    TRT_TARGETS,
    ExportConfig,
    parse_trt_targets,
)
from edgeyolo.lazy import lazy_import

_EXPORT = lazy_import("edgeyolo.export.pipeline", **_TRAIN_EXTRA, needed_for="edgeyolo export")


def export_cmd(
    weights: Annotated[
        Path,
        typer.Option(
            help="A checkpoint written by `edgeyolo train`, or a darknet .weights (see --cfg)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the ONNX files, engines and manifest.")] = (
        Path("export/model")
    ),
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option(help="Largest batch (dynamic 1..batch).")] = 1,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write an fp16 graph.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write a calibrated INT8 (Q/DQ) graph.")
    ] = False,
    engine: Annotated[
        bool, typer.Option("--engine", help="Build a TensorRT engine per graph (needs TensorRT).")
    ] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="End at the raw head maps (no decode, no NMS).")
    ] = False,
    darknet: Annotated[
        bool,
        typer.Option(
            "--darknet", help="Also write OUT/<arch>.weights and OUT/<arch>.cfg (darknet format)."
        ),
    ] = False,
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg",
            help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it; with "
            "none, the file's size must name the official yolov3 or yolov3-tiny, 80 COCO "
            "classes). Only darknet's yolov3/yolov3-tiny topologies are accepted.",
        ),
    ] = None,
    darknet_eps: Annotated[
        float,
        typer.Option(
            help="BatchNorm epsilon of the reader --darknet's files are for: 1e-5 (darknet GPU, "
            "AlexeyAB darknet, TensorRT yolov3_onnx, tensorrt_demos, DeepStream-Yolo) or 1e-6 "
            "(OpenCV DNN; adds 9e-6 to the stored running variances)."
        ),
    ] = 1e-5,
    calib: Annotated[
        Path,
        typer.Option(
            help="Folder of calibration images (--int8; also the parity check's images). "
            "A relative path is taken from the current folder."
        ),
    ] = Path("calib_data"),
    calib_method: Annotated[
        str, typer.Option(help="percentile, entropy or minmax.")
    ] = "percentile",
    calib_images: Annotated[
        int | None, typer.Option(help="Use at most this many calibration images.")
    ] = 256,
    data: Annotated[
        Path | None,
        typer.Option(help="data.yaml whose val split holds INT8 to the --int8-max-drop budget."),
    ] = None,
    val_split: Annotated[str, typer.Option(help="Split of --data that the gate scores.")] = "val",
    int8_max_drop: Annotated[
        float,
        typer.Option(
            help="Allowed mAP@0.5 loss of INT8 against fp32, in points: the gate passes when the "
            "upper bound of the loss's 95% bootstrap interval over the --data images is within it."
        ),
    ] = 1.0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Fail when the int8 gate's set is too small to decide (the loss is within "
            "--int8-max-drop, its interval's upper bound is not); default: warn and keep int8.",
        ),
    ] = False,
    quantize_heads: Annotated[
        bool, typer.Option(help="Quantize the heads' last convolutions too.")
    ] = False,
    int8_placement: Annotated[
        str,
        typer.Option(
            help="tensorrt: Q/DQ on conv inputs (TensorRT's placement); onnxruntime: activations "
            "quantized between all ops, so ONNX Runtime's CPU kernels run int8."
        ),
    ] = "tensorrt",
    int8_cpu_target: Annotated[
        str,
        typer.Option(
            help="CPUs the onnxruntime placement's int8 graph is for: any (7-bit weights, right "
            "on every x86 CPU) or vnni (full 8-bit weights, only for CPUs with AVX512-VNNI or "
            "AVX-VNNI: without VNNI, ONNX Runtime's int8 kernels saturate with them). The "
            "tensorrt placement always has 8-bit weights (recorded as cpu_target gpu)."
        ),
    ] = "any",
    int8_reduce_range: Annotated[
        bool | None,
        typer.Option(
            help="7-bit int8 weights. Follows --int8-cpu-target (on only for onnxruntime + any); "
            "a value that contradicts it is refused."
        ),
    ] = None,
    int8_high_precision: Annotated[
        str,
        typer.Option(
            help="dtype outside the int8 graph's Q/DQ pairs: fp16 (opset 19; what strongly "
            "typed TensorRT 10.12+/11 needs to run those layers in fp16; not parsed by 8.6 or "
            "10.3), fp32 (for 8.6/10.3, weakly typed: the FP16 flag picks fp16 kernels), or "
            "auto: fp16 if a --trt target is 10 or 11, else fp32."
        ),
    ] = "auto",
    conf: Annotated[
        float, typer.Option(help="Score threshold inside the graph.")
    ] = DEFAULT_CONF_THRES,
    iou: Annotated[
        float, typer.Option(help="NMS IoU threshold inside the graph.")
    ] = DEFAULT_IOU_THRES,
    max_det: Annotated[
        int, typer.Option(help="Detections per image (output size K, at most 3840).")
    ] = DEFAULT_MAX_DET,
    max_candidates: Annotated[
        int,
        typer.Option(
            help="Candidates per image that enter NMS, highest scores first (at most 3840; "
            "TensorRT's NMS layer drops those past 5000 silently)."
        ),
    ] = DEFAULT_MAX_CANDIDATES,
    multi_label: Annotated[bool, typer.Option(help="Score every class of a box.")] = False,
    opset: Annotated[
        int, typer.Option(help="ONNX opset: 17 or newer, and no newer than --trt parses (8.6: 17).")
    ] = 17,
    simplify: Annotated[bool, typer.Option(help="Simplify with onnxsim (checked).")] = True,
    trt: Annotated[
        str,
        typer.Option(
            help="TensorRT versions every graph is checked for (TensorRT's ONNX parser, from a "
            "table): comma-separated from 8.6, 10.3 (JetPack 6), 10 (current 10.x), 11."
        ),
    ] = ",".join(TRT_TARGETS),
    workspace: Annotated[float, typer.Option(help="TensorRT workspace limit, GiB.")] = 2.0,
    typing: _TypingOption = "auto",
    tf32: _Tf32Option = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="TensorRT's VERBOSE build log into OUT/tensorrt_build.log (--engine)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Export ONNX (decode + NMS inside) in fp32/fp16/int8, TensorRT engines, and manifest.json."""
    with _cli_errors():
        cfg = ExportConfig(
            weights=str(weights),
            out=str(out),
            img_size=img_size,
            batch=batch,
            opset=opset,
            trt=parse_trt_targets(trt),
            conf_thres=conf,
            iou_thres=iou,
            max_det=max_det,
            max_candidates=max_candidates,
            multi_label=multi_label,
            raw=raw,
            darknet=darknet,
            darknet_cfg=None if darknet_cfg is None else str(darknet_cfg),
            darknet_eps=darknet_eps,
            simplify=simplify,
            fp16=fp16,
            int8=int8,
            calib=str(calib),
            calib_method=calib_method,
            calib_images=calib_images,
            int8_max_drop=int8_max_drop,
            int8_strict=strict,
            quantize_heads=quantize_heads,
            int8_placement=int8_placement,
            int8_reduce_range=int8_reduce_range,
            int8_cpu_target=int8_cpu_target,
            int8_high_precision=int8_high_precision,
            data=None if data is None else str(data),
            val_split=val_split,
            engine=engine,
            workspace_gib=workspace,
            engine_typing=typing,
            tf32=tf32,
            trt_verbose=verbose,
        )
        manifest = _EXPORT.export_model(cfg, progress=progress, log=console.print)
    table = Table(title=f"exported to {out}")
    for col in ("file", "precision", "MB", "parity vs PyTorch"):
        table.add_column(col)
    checks = manifest["checks"]["parity_vs_torch"]
    conf = manifest["nms"]["conf_thres"]
    for a in manifest["artifacts"]:
        p = checks.get(a["precision"]) if a["kind"] == "onnx" else a.get("parity_vs_torch")
        table.add_row(a["file"], a["precision"], f"{a['bytes'] / 1e6:.1f}", _parity_cell(p, conf))
    console.print(table)
    for a in manifest["artifacts"]:
        if a.get("gate"):
            console.print(_gate_line(a["gate"]))


def _gate_line(g: dict[str, Any]) -> str:
    """The int8 gate's drop, interval and decision, from the manifest's gate record."""
    needed = g.get("images_needed")
    undecided = (
        f", about {needed} images would decide" if g["decision"] == "undecided" and needed else ""
    )
    return (
        f"int8 gate ({g['n_images']} {g['split']} images): mAP@0.5 drop {g['drop']:.2f} points, "
        f"{100 * g['level']:g}% interval {g['low']:.2f} to {g['high']:.2f}, budget "
        f"{g['max_drop']:.2f}: {g['decision']}{undecided}"
    )


def _parity_cell(p: dict[str, Any] | None, conf: float) -> str:
    if not p:
        return "-"
    n = max(p["ref_count"], p["other_count"])
    if n == 0:  # an undertrained model: no NaN IoU in the table
        return f"no boxes from either at conf {conf}: nothing to compare"
    below = " (below its floor)" if p.get("passed") is False else ""  # engines are judged
    return (
        f"{p['matched']}/{n} boxes, mean IoU {p['mean_iou']:.4f}, "
        f"max |Δscore| {p['max_score_diff']:.2g}{below}"
    )
