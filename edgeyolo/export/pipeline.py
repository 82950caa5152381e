"""``edgeyolo export``: checkpoint → fp32 / fp16 / int8 ONNX (+ TensorRT engines) + manifest.json.

Every variant is checked against the PyTorch model it came from on real letterboxed images
(box parity, recorded in the manifest); the fp32 graph must reproduce it exactly, the others
are reported, and INT8 is additionally held to an mAP budget when a validation set is given.

An export is all or nothing. Everything that can be checked without the model (calibration
folder, ``--data``, TensorRT) is checked first; every file is then built in a hidden staging
folder beside ``--out`` (same file system) and moved into place only when all of them are done,
``manifest.json`` last. A failure at any step leaves ``--out`` exactly as it was (absent, or
holding the previous export untouched) and removes the staging folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxsim
import torch

from edgeyolo import cpuinfo
from edgeyolo.config import EVAL_CONF_THRES, EVAL_IOU_THRES, EVAL_MAX_DET, ExportConfig
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.errors import CalibrationError, ConfigError, ExportError
from edgeyolo.evaluate.evaluator import evaluate_onnx
from edgeyolo.export import quantize
from edgeyolo.export.calib import find_images, load_calibration, where_calib
from edgeyolo.export.engine_parity import check_engine_parity, engine_parity, run_engine
from edgeyolo.export.graph import INPUT_NAME, OUTPUT_NAMES
from edgeyolo.export.onnx_export import build_fp32, check_opset, to_fp16
from edgeyolo.export.tensorrt import build_engine, import_tensorrt, tensorrt_refusal
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.models.checkpoint import load_model
from edgeyolo.models.darknet_weights import write_darknet
from edgeyolo.postprocess import Detections, from_outputs
from edgeyolo.runtime.conformance import (
    HINT,
    ORT_ONLY_REASON,
    check_graph,
    format_violations,
    manifest_targets,
)
from edgeyolo.runtime.environment import environment
from edgeyolo.runtime.gpu import gpu_identity, import_pycuda
from edgeyolo.runtime.manifest import MANIFEST_NAME, read_manifest, sha256_file, write_manifest
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch
from edgeyolo.runtime.thresholds import retarget_nms

if TYPE_CHECKING:
    from onnxruntime.quantization import TensorsData

    from edgeyolo.data.records import ImageRecord
    from edgeyolo.export.calib import CalibSet
    from edgeyolo.export.onnx_export import SimplifyReport
    from edgeyolo.export.quantize import GateReport

__all__ = ["STAGING_MARK", "export_model", "parity_against_torch", "torch_reference"]

#: fp32 must reproduce PyTorch: every box matched, IoU and score within float rounding.
FP32_MIN_IOU = 0.999
FP32_MAX_SCORE_DIFF = 1e-4
#: Part of the name of the staging folder (``.<out name>.partial-<random>`` beside ``--out``).
STAGING_MARK = ".partial-"
_TIMING_CACHE = "timing.cache"
#: TensorRT's build log with ``--verbose`` (in the export folder).
BUILD_LOG = "tensorrt_build.log"


def _environment() -> dict[str, Any]:
    """Package versions (with onnxsim) and the exporting machine's CPU."""

    env = environment()
    return {
        "versions": {**env["versions"], "onnxsim": str(onnxsim.__version__)},
        "exported_on": {
            "cpu": env["machine"]["cpu"],
            "cpu_flags": cpuinfo.cpu_summary(),
            "vnni": cpuinfo.has_vnni(),
        },
    }


def torch_reference(
    net: torch.nn.Module, images: np.ndarray, *, cfg: ExportConfig
) -> list[Detections]:
    """``net``'s detections of ``images`` at the export's NMS settings: what every exported
    variant (ONNX graph or TensorRT engine) is compared with."""

    with torch.no_grad():
        return detect_batch(
            net.eval(),
            torch.from_numpy(images),
            conf_thres=cfg.conf_thres,
            iou_thres=cfg.iou_thres,
            max_det=cfg.max_det,
            multi_label=cfg.multi_label,
            max_candidates=cfg.max_candidates,
        )


def parity_against_torch(
    net: torch.nn.Module, onnx_path: Path, images: np.ndarray, *, cfg: ExportConfig
) -> dict[str, Any]:
    """Box parity of an exported graph against ``net`` (same thresholds) on ``images``."""

    ref = torch_reference(net, images, cfg=cfg)
    with OnnxRuntimeSession(onnx_path) as s:
        out = s.run(images)
    got = from_outputs(out)
    return parity_summary(ref, got).to_dict()


def _preflight(cfg: ExportConfig, log: Callable[[str], None]) -> None:
    """The checks that need no model, before any long step: nothing is written here.

    Raises:
        ExportError: ``--out`` is a file; ``--opset`` is newer than a ``--trt`` target parses;
            TensorRT is missing (``--engine``); the calibration
            folder is missing or holds no image (``--int8``; the message names the absolute path).
        DataError: ``--data`` cannot be read.
    """

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder (it is made if missing)")
    check_opset(cfg.opset, cfg.trt)
    if cfg.engine:
        _engine_preflight(cfg, log)
    if cfg.int8:
        find_images(Path(cfg.calib))
        if cfg.int8_target == "vnni" and not cpuinfo.has_vnni():
            log(
                f"note: --int8-cpu-target vnni, but this CPU ({cpuinfo.cpu_summary()}) has no "
                "AVX512-VNNI or AVX-VNNI: ONNX Runtime here cannot run the int8 graph as its "
                "target will (full-range weights may saturate here), so the int8 gate's score "
                "and parity below may be wrong; check the graph on a VNNI CPU"
            )
    if cfg.data is not None:
        load_data_yaml(cfg.data)
        if not cfg.int8:
            log("note: --data is only used by the int8 accuracy gate; ignored without --int8")


def _check_images(cfg: ExportConfig, img_size: int, log: Callable[[str], None]) -> np.ndarray:
    """Up to 8 real letterboxed images for onnxsim's check and the parity checks."""

    folder = Path(cfg.calib)
    with contextlib.suppress(CalibrationError):
        if find_images(folder):
            return load_calibration(folder, img_size=img_size, max_images=8, progress=False).images
    # Only reached without --int8: _preflight has checked the calibration folder for int8.
    log(
        f"note: no images in {where_calib(folder)}, so the export is checked on random noise "
        "only; pass --calib PATH (a folder of real frames) to check it on real images"
    )
    return np.random.default_rng(0).random((2, 3, img_size, img_size), dtype=np.float32)


def _val_records(cfg: ExportConfig, names: tuple[str, ...]) -> list[ImageRecord]:
    """The ``--val-split`` records of ``--data``, checked against the checkpoint's classes."""

    spec = load_data_yaml(cfg.data)
    if tuple(spec.names) != tuple(names):
        raise ConfigError(
            f"{cfg.data} has classes {list(spec.names)} but the checkpoint was trained on "
            f"{list(names)}; give the data set the model was trained on"
        )
    records = read_split(spec, cfg.val_split).records
    if not records:
        raise ConfigError(f"the {cfg.val_split} split of {cfg.data} holds no image to score")
    return records


def _onnx_entry(path: Path, precision: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "onnx",
        "precision": precision,
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        **extra,
    }


def _int8(
    cfg: ExportConfig,
    net: torch.nn.Module,
    fp32_path: Path,
    records: list[ImageRecord] | None,
    img_size: int,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    """Calibrate, quantize, and (with ``records`` from ``--data``) hold it to the mAP budget."""

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
    """The int8 accuracy gate (:func:`edgeyolo.export.quantize.int8_with_budget`) on ``records``."""

    def score(path: Path) -> float:
        # COCO's evaluation setting, not the deployment thresholds: only the NMS tail's
        # initializers change, the (quantized) network is scored exactly as it will run.
        coco = retarget_nms(
            onnx.load(str(path)),
            conf_thres=EVAL_CONF_THRES,
            iou_thres=EVAL_IOU_THRES,
            max_det=EVAL_MAX_DET,
        )
        m = evaluate_onnx(
            coco.SerializeToString(), records, net.config.class_names, img_size=img_size
        )
        return 100.0 * m.map50

    fp32_score = score(fp32_path)
    log(f"fp32 mAP@0.5 on {cfg.data} ({cfg.val_split}, {len(records)} images): {fp32_score:.2f}")
    if fp32_score < 1.0:  # points
        log(
            f"note: the fp32 graph scores {fp32_score:.2f} mAP@0.5 there, so the int8 gate cannot "
            "tell a good int8 graph from a broken one; train longer (or check --data) before "
            "trusting int8"
        )
    return quantize.int8_with_budget(
        fp32_path,
        int8_path,
        calib=calib,
        method=cfg.calib_method,
        ranges=ranges,
        evaluate=score,
        fp32_score=fp32_score,
        max_drop=cfg.int8_max_drop,
        quantize_heads=cfg.quantize_heads,
        placement=cfg.int8_placement,
        reduce_range=info["reduce_range"],
        high_precision=info["high_precision"],
        log=log,
    )


def _check_fp32(p: dict[str, Any], n_images: int) -> None:
    """Raise unless the fp32 graph reproduced PyTorch (see :data:`FP32_MIN_IOU`)."""
    exact = p["matched_fraction"] in (None, 1.0) and (  # None: no box on either side
        p["matched"] == 0
        or (p["min_iou"] >= FP32_MIN_IOU and p["max_score_diff"] <= FP32_MAX_SCORE_DIFF)
    )
    if not exact:
        raise ExportError(
            f"the fp32 graph does not reproduce the PyTorch model on {n_images} images "
            f"({p}); please report this with the checkpoint"
        )


def _build_onnx(
    cfg: ExportConfig,
    net: torch.nn.Module,
    stage: Path,
    img_size: int,
    records: list[ImageRecord] | None,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any], SimplifyReport | None, int]:
    """Write the ONNX variants into ``stage``; returns (artifacts, parity checks, onnxsim
    report, number of check images)."""

    images = _check_images(cfg, img_size, log)
    name = "model_raw.onnx" if cfg.raw else "model_fp32.onnx"
    fp32_path, sim = build_fp32(
        net,
        stage / name,
        img_size=img_size,
        conf_thres=cfg.conf_thres,
        iou_thres=cfg.iou_thres,
        max_det=cfg.max_det,
        max_candidates=cfg.max_candidates,
        multi_label=cfg.multi_label,
        opset=cfg.opset,
        trt=cfg.trt,
        raw=cfg.raw,
        simplify=cfg.simplify,
        check_images=images,
    )
    log(
        f"made {name}"
        + (f" (onnxsim: {sim.nodes_before} → {sim.nodes_after} nodes)" if sim else "")
    )
    checks: dict[str, Any] = {}
    if not cfg.raw:
        checks["fp32"] = parity_against_torch(net, fp32_path, images, cfg=cfg)
        _check_fp32(checks["fp32"], len(images))
    artifacts = [_onnx_entry(fp32_path, "fp32")]
    if cfg.fp16:
        path = to_fp16(fp32_path, stage / name.replace("fp32", "fp16").replace("raw", "raw_fp16"))
        if not cfg.raw:
            checks["fp16"] = parity_against_torch(net, path, images, cfg=cfg)
        artifacts.append(_onnx_entry(path, "fp16"))
        log(f"made {path.name}")
    if cfg.int8:
        path, info = _int8(cfg, net, fp32_path, records, img_size, log, progress)
        checks["int8"] = parity_against_torch(net, path, images, cfg=cfg)
        artifacts.append(_onnx_entry(path, "int8", **info))
        log(f"made {path.name} (int8 for {cfg.int8_target}, placement {cfg.int8_placement})")
    return artifacts, checks, sim, len(images)


def _check_conformance(
    cfg: ExportConfig, artifacts: list[dict[str, Any]], stage: Path, log: Callable[[str], None]
) -> None:
    """Hold every ONNX graph in ``stage`` to TensorRT's ONNX parser for the ``--trt`` versions
    (:mod:`edgeyolo.runtime.conformance`) and record in its entry what it was checked for
    (``targets``). The int8 graph of the onnxruntime placement is held to ONNX Runtime only.

    Raises:
        ExportError: every violation of every graph, in one message.
    """
    problems, checked = [], 0
    for a in artifacts:
        if a["kind"] != "onnx":
            continue
        if a.get("placement") == "onnxruntime":
            a["targets"], a["targets_reason"] = manifest_targets(None), ORT_ONLY_REASON
            continue
        trt = tuple(a.pop("trt_targets", cfg.trt))  # the int8 fp16 graph may claim fewer
        violations = check_graph(onnx.load(str(stage / a["file"])), trt)
        if violations:
            problems.append(format_violations(violations, name=a["file"]))
        a["targets"] = manifest_targets(trt)
        checked += 1
    if problems:
        raise ExportError("\n".join([*problems, HINT]))
    log(
        f"checked {checked} graph(s) against TensorRT {', '.join(cfg.trt)}'s ONNX parser "
        "(the table in edgeyolo.runtime.trt_support): they conform"
    )


def _build_darknet(
    net: torch.nn.Module, ckpt: dict[str, Any], stage: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``stage/<arch>.weights`` in darknet format; returns its manifest entry."""

    dn = stage / f"{net.config.arch}.weights"
    state = ckpt.get("state") or {}  # best.pt (inference only) records global_step at the top
    step = ckpt.get("global_step", state.get("global_step", 0))
    seen = int(step) * int((ckpt.get("train") or {}).get("batch", 1))
    floats = write_darknet(dn, net, seen=seen)
    log(f"made {dn.name} ({floats:,} floats, darknet format)")
    return {
        "kind": "darknet",
        "precision": "fp32",
        "file": dn.name,
        "sha256": sha256_file(dn),
        "bytes": dn.stat().st_size,
        "floats": floats,
    }


def _engine_preflight(cfg: ExportConfig, log: Callable[[str], None]) -> None:
    """``--engine`` needs TensorRT (>= 8.6), pycuda (the engines are run once, for parity) and
    a CUDA device, checked before anything is built; and says which graph gets no engine."""

    import_tensorrt()
    import_pycuda()
    gpu_identity()
    if cfg.int8 and cfg.int8_placement == "onnxruntime":
        log(f"note: no engine from the int8 graph: it is the {ORT_ONLY_REASON}")


def _build_engines(
    cfg: ExportConfig,
    net: torch.nn.Module,
    onnx_artifacts: list[dict[str, Any]],
    stage: Path,
    out: Path,
    img_size: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One TensorRT engine per ONNX graph in ``stage`` that is meant for TensorRT, each run on
    the check images and compared with PyTorch (:mod:`edgeyolo.export.engine_parity`).

    The default timing cache starts from ``out``'s (if any) and is staged with the rest; with
    ``--verbose`` TensorRT's log goes to ``stage/tensorrt_build.log``, kept beside ``out`` as
    ``<out>.tensorrt_build.log`` when the build fails (the staging folder is removed then).
    """

    if cfg.timing_cache:
        cache = Path(cfg.timing_cache)
    else:
        cache = stage / _TIMING_CACHE
        if (out / _TIMING_CACHE).is_file():
            shutil.copy2(out / _TIMING_CACHE, cache)
    log_file = stage / BUILD_LOG if cfg.trt_verbose else None
    images = _check_images(cfg, img_size, lambda line: None)  # _build_onnx said where they are
    reference = torch_reference(net, images, cfg=cfg)
    entries = []
    try:
        for a in onnx_artifacts:
            reason = tensorrt_refusal(a)
            if reason is not None:
                log(f"note: no engine from {a['file']}: {reason}")
                continue
            entry = _build_one(cfg, a, stage, img_size, cache, log_file, log)
            engine = stage / entry["file"]
            got = run_engine(engine, images)
            record = engine_parity(reference, got, precision=a["precision"], tf32=cfg.tf32)
            check_engine_parity(record, engine, log)
            entries.append({**entry, "parity_vs_torch": record})
    except ExportError as exc:
        if log_file is None or not log_file.is_file():
            raise
        kept = out.parent / f"{out.name}.{BUILD_LOG}"
        shutil.copy2(log_file, kept)
        raise type(exc)(f"{exc} (TensorRT's build log: {kept})") from exc
    return entries


def _build_one(
    cfg: ExportConfig,
    a: dict[str, Any],
    stage: Path,
    img_size: int,
    cache: Path,
    log_file: Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build the engine of the ONNX graph whose manifest entry is ``a``; its manifest entry."""

    onnx_path = stage / a["file"]
    engine = build_engine(
        onnx_path,
        onnx_path.with_suffix(".engine"),
        precision=a["precision"],
        input_name=INPUT_NAME,
        img_size=img_size,
        min_batch=1,
        opt_batch=max(1, cfg.batch // 2) if cfg.batch > 2 else cfg.batch,
        max_batch=cfg.batch,
        workspace_gib=cfg.workspace_gib,
        timing_cache=cache,
        typing=cfg.engine_typing,
        tf32=cfg.tf32,
        verbose=cfg.trt_verbose,
        log_file=log_file,
        outputs=OUTPUT_NAMES,
        artifact=a,
        log=log,
    )
    return {
        "kind": "engine",
        "precision": a["precision"],
        "file": engine.path.name,
        "sha256": sha256_file(engine.path),
        "bytes": engine.path.stat().st_size,
        "onnx_file": a["file"],
        "onnx_sha256": a["sha256"],
        **engine.to_dict(),
    }


def _manifest(
    cfg: ExportConfig,
    net: torch.nn.Module,
    img_size: int,
    sim: SimplifyReport | None,
    n_images: int,
    checks: dict[str, Any],
    artifacts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The manifest (without its schema, which :func:`write_manifest` adds)."""
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"weights": str(cfg.weights), "sha256": sha256_file(cfg.weights)},
        **_environment(),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, img_size, img_size],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "normalization": "0..1 (pixel / 255), no mean/std",
            "letterbox": {"pad_value": 114, "centered": True},
            "max_batch": cfg.batch,
        },
        "outputs": (
            [f"head{i}" for i in range(len(net.strides))] if cfg.raw else list(OUTPUT_NAMES)
        ),
        "raw": cfg.raw,
        "classes": list(net.config.class_names),
        "arch": net.config.arch,
        "anchors": [[list(map(float, a)) for a in group] for group in net.anchors.tolist()],
        "strides": [int(s) for s in net.strides],
        "nms": {
            "conf_thres": cfg.conf_thres,
            "iou_thres": cfg.iou_thres,
            "max_det": cfg.max_det,
            "max_candidates": cfg.max_candidates,
            "multi_label": cfg.multi_label,
            "op": "onnx::NonMaxSuppression",
        },
        "opset": cfg.opset,
        "simplify": sim.to_dict() if sim else None,
        "checks": {"images": n_images, "parity_vs_torch": checks},
        "artifacts": artifacts,
    }


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` (``out`` itself when its parent is read-only), on
    the same file system so the final moves are renames. On an exception the folder, and any
    parent of ``out`` made for it, are removed; on success only what is left in it."""
    out = Path(os.path.abspath(out))
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # deepest first
    stage = out.parent / f".{out.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            stage.mkdir()
        except PermissionError:
            if not out.is_dir():
                raise
            stage = out / f".{out.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
            stage.mkdir()
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _listed_files(out: Path) -> set[str]:
    """Files the manifest already in ``out`` lists (none when there is no readable one)."""
    try:
        old = read_manifest(out)
    except ExportError:
        return set()
    names = {str(a.get("file", "")) for a in old["artifacts"] if isinstance(a, dict)}
    return {n for n in names if n and Path(n).name == n}


def _commit(stage: Path, out: Path, files: list[str]) -> None:
    """Move ``files`` and the manifest (last) from ``stage`` into ``out``; then delete the files
    the previous manifest listed and this one does not (e.g. an int8 graph of an older export)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(out)  # one rename: out appears complete or not at all
        return
    old = _listed_files(out)
    for name in files:
        os.replace(stage / name, out / name)
    os.replace(stage / MANIFEST_NAME, out / MANIFEST_NAME)
    for name in sorted(old - set(files)):
        (out / name).unlink(missing_ok=True)


def export_model(
    cfg: ExportConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the whole export; returns the manifest (also written to ``cfg.out/manifest.json``).

    All or nothing (module docstring): on any error ``cfg.out`` is left as it was.
    """

    _preflight(cfg, log)
    net, ckpt = load_model(cfg.weights, device=torch.device("cpu"))
    net.eval()
    records = _val_records(cfg, tuple(net.config.class_names)) if cfg.int8 and cfg.data else None
    img_size = cfg.img_size or net.config.img_size
    out = Path(cfg.out)
    with _staging(out) as stage:
        artifacts, checks, sim, n_images = _build_onnx(
            cfg, net, stage, img_size, records, log, progress
        )
        _check_conformance(cfg, artifacts, stage, log)
        if cfg.darknet:
            artifacts.append(_build_darknet(net, ckpt, stage, log))
        if cfg.engine:
            onnx_artifacts = [a for a in artifacts if a["kind"] == "onnx"]
            artifacts += _build_engines(cfg, net, onnx_artifacts, stage, out, img_size, log)
        manifest = _manifest(cfg, net, img_size, sim, n_images, checks, artifacts)
        write_manifest(stage, manifest)
        files = [a["file"] for a in artifacts]
        if not cfg.timing_cache and (stage / _TIMING_CACHE).is_file():
            files.append(_TIMING_CACHE)
        if cfg.trt_verbose and (stage / BUILD_LOG).is_file():
            files.append(BUILD_LOG)
        _commit(stage, out, files)
    log(f"wrote {', '.join([*files, MANIFEST_NAME])} to {out}")
    return manifest
