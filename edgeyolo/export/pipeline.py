"""``edgeyolo export``: checkpoint → fp32 / fp16 / int8 ONNX (+ TensorRT engines) + manifest.json.

Every variant is checked against the PyTorch model it came from on real letterboxed images
(box parity, recorded in the manifest); the fp32 graph must reproduce it exactly, the others
are reported, and INT8 is additionally held to an mAP budget when a validation set is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeyolo.config import ExportConfig
from edgeyolo.errors import ExportError
from edgeyolo.export.graph import INPUT_NAME, OUTPUT_NAMES
from edgeyolo.export.manifest import sha256_file, write_manifest

__all__ = ["export_model", "parity_against_torch"]

#: fp32 must reproduce PyTorch: every box matched, IoU and score within float rounding.
FP32_MIN_IOU = 0.999
FP32_MAX_SCORE_DIFF = 1e-4
_EVAL_CONF, _EVAL_MAX_DET = 0.001, 300


def _versions() -> dict[str, str | None]:
    import onnxsim

    from edgeyolo.runtime.bench_report import environment

    return {**environment()["versions"], "onnxsim": str(onnxsim.__version__)}


def parity_against_torch(
    net: torch.nn.Module, onnx_path: Path, images: np.ndarray, *, cfg: ExportConfig
) -> dict[str, Any]:
    """Box parity of an exported graph against ``net`` (same thresholds) on ``images``."""
    from edgeyolo.evaluate.parity import parity
    from edgeyolo.postprocess import from_outputs
    from edgeyolo.predict import detect_batch
    from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession

    with torch.no_grad():
        ref = detect_batch(
            net.eval(),
            torch.from_numpy(images),
            conf_thres=cfg.conf_thres,
            iou_thres=cfg.iou_thres,
            max_det=cfg.max_det,
        )
    with OnnxRuntimeSession(onnx_path) as s:
        out = s.run(images)
    got = from_outputs(out)
    return parity(ref, got).to_dict()


def _check_images(cfg: ExportConfig, img_size: int, log: Callable[[str], None]) -> np.ndarray:
    """Up to 8 real letterboxed images for onnxsim's check and the parity checks."""
    from edgeyolo.export.calib import find_images, load_calibration

    folder = Path(cfg.calib)
    if folder.is_dir() and find_images(folder):
        return load_calibration(folder, img_size=img_size, max_images=8, progress=False).images
    log(f"note: no images in {folder}; checking the export on random noise only")
    return np.random.default_rng(0).random((2, 3, img_size, img_size), dtype=np.float32)


def _val_records(cfg: ExportConfig, names: tuple[str, ...]):
    from edgeyolo.data.formats import load_data_yaml, read_split
    from edgeyolo.errors import ConfigError

    spec = load_data_yaml(cfg.data)
    if tuple(spec.names) != tuple(names):
        raise ConfigError(
            f"{cfg.data} has classes {list(spec.names)} but the checkpoint was trained on "
            f"{list(names)}; give the data set the model was trained on"
        )
    return read_split(spec, cfg.val_split).records


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
    out: Path,
    img_size: int,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    """Calibrate, quantize, and (with ``--data``) hold the result to the mAP budget."""
    import onnx

    from edgeyolo.evaluate.evaluator import evaluate_onnx
    from edgeyolo.export.calib import load_calibration
    from edgeyolo.export.graph import retarget_nms
    from edgeyolo.export.quantize import (
        calibrate,
        int8_with_budget,
        quantize_int8,
        resolve_reduce_range,
    )

    calib = load_calibration(
        Path(cfg.calib), img_size=img_size, max_images=cfg.calib_images, progress=progress
    )
    log(f"calibrating on {len(calib.files)} images from {calib.folder} ({cfg.calib_method})")
    int8_path = out / "model_int8.onnx"
    info: dict[str, Any] = {
        "calibration": {
            "method": cfg.calib_method,
            "images": len(calib.files),
            "folder": calib.folder,
            "sha256": calib.sha256,
        },
        "quantize_heads": cfg.quantize_heads,
        "placement": cfg.int8_placement,
        "reduce_range": resolve_reduce_range(cfg.int8_placement, cfg.int8_reduce_range),
    }
    ranges = calibrate(fp32_path, calib, method=cfg.calib_method)
    if cfg.data is None:
        log("note: no --data given, so INT8 is not checked against an mAP budget")
        result = quantize_int8(
            fp32_path,
            int8_path,
            ranges=ranges,
            quantize_heads=cfg.quantize_heads,
            placement=cfg.int8_placement,
            reduce_range=info["reduce_range"],
        )
        info["kept_fp32"] = list(result.excluded)
        info["gate"] = None
        return int8_path, info

    records = _val_records(cfg, tuple(net.config.class_names))

    def score(path: Path) -> float:
        # COCO's evaluation setting, not the deployment thresholds: only the NMS tail's
        # initializers change, the (quantized) network is scored exactly as it will run.
        coco = retarget_nms(
            onnx.load(str(path)), conf_thres=_EVAL_CONF, iou_thres=0.5, max_det=_EVAL_MAX_DET
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
    report = int8_with_budget(
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
        log=log,
    )
    info["kept_fp32"] = list(report.excluded)
    info["gate"] = {"data": str(cfg.data), "split": cfg.val_split, **report.to_dict()}
    return int8_path, info


def export_model(
    cfg: ExportConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the whole export; returns the manifest (also written to ``cfg.out/manifest.json``)."""
    from edgeyolo.export.onnx_export import build_fp32, to_fp16
    from edgeyolo.train.checkpoint import load_model

    if cfg.engine:  # fail before any long step when TensorRT is missing
        from edgeyolo.export.tensorrt import import_tensorrt

        import_tensorrt()
    net, _ckpt = load_model(cfg.weights, device=torch.device("cpu"))
    net.eval()
    img_size = cfg.img_size or net.config.img_size
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    images = _check_images(cfg, img_size, log)

    name = "model_raw.onnx" if cfg.raw else "model_fp32.onnx"
    fp32_path, sim = build_fp32(
        net,
        out / name,
        img_size=img_size,
        conf_thres=cfg.conf_thres,
        iou_thres=cfg.iou_thres,
        max_det=cfg.max_det,
        multi_label=cfg.multi_label,
        opset=cfg.opset,
        raw=cfg.raw,
        simplify=cfg.simplify,
        check_images=images,
    )
    log(
        f"wrote {fp32_path}"
        + (f" (onnxsim: {sim.nodes_before} → {sim.nodes_after} nodes)" if sim else "")
    )
    checks: dict[str, Any] = {}
    artifacts = []
    if not cfg.raw:
        p = parity_against_torch(net, fp32_path, images, cfg=cfg)
        checks["fp32"] = p
        exact = p["matched_fraction"] == 1.0 and (
            p["matched"] == 0
            or (p["min_iou"] >= FP32_MIN_IOU and p["max_score_diff"] <= FP32_MAX_SCORE_DIFF)
        )
        if not exact:
            raise ExportError(
                f"the fp32 graph does not reproduce the PyTorch model on {len(images)} images "
                f"({p}); please report this with the checkpoint"
            )
    artifacts.append(_onnx_entry(fp32_path, "fp32"))

    if cfg.fp16:
        path = to_fp16(fp32_path, out / name.replace("fp32", "fp16").replace("raw", "raw_fp16"))
        if not cfg.raw:
            checks["fp16"] = parity_against_torch(net, path, images, cfg=cfg)
        artifacts.append(_onnx_entry(path, "fp16"))
        log(f"wrote {path}")
    if cfg.int8:
        path, info = _int8(cfg, net, fp32_path, out, img_size, log, progress)
        checks["int8"] = parity_against_torch(net, path, images, cfg=cfg)
        artifacts.append(_onnx_entry(path, "int8", **info))
        log(f"wrote {path}")

    if cfg.darknet:
        from edgeyolo.models.darknet_weights import write_darknet

        dn = out / f"{net.config.arch}.weights"
        state = _ckpt.get("state") or {}
        seen = int(state.get("global_step", 0)) * int((_ckpt.get("train") or {}).get("batch", 1))
        floats = write_darknet(dn, net, seen=seen)
        artifacts.append(
            {
                "kind": "darknet",
                "precision": "fp32",
                "file": dn.name,
                "sha256": sha256_file(dn),
                "bytes": dn.stat().st_size,
                "floats": floats,
            }
        )
        log(f"wrote {dn} ({floats:,} floats, darknet format)")

    if cfg.engine:
        from edgeyolo.export.tensorrt import build_engine

        cache = Path(cfg.timing_cache) if cfg.timing_cache else out / "timing.cache"
        for a in [x for x in artifacts if x["kind"] == "onnx"]:
            onnx_path = out / a["file"]
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
                log=log,
            )
            artifacts.append(
                {
                    "kind": "engine",
                    "precision": a["precision"],
                    "file": engine.path.name,
                    "sha256": sha256_file(engine.path),
                    "bytes": engine.path.stat().st_size,
                    "onnx_sha256": a["sha256"],
                    **engine.to_dict(),
                }
            )

    manifest = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"weights": str(cfg.weights), "sha256": sha256_file(cfg.weights)},
        "versions": _versions(),
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
            "multi_label": cfg.multi_label,
            "op": "onnx::NonMaxSuppression",
        },
        "opset": cfg.opset,
        "simplify": sim.to_dict() if sim else None,
        "checks": {"images": len(images), "parity_vs_torch": checks},
        "artifacts": artifacts,
    }
    path = write_manifest(out, manifest)
    log(f"wrote {path}")
    return manifest
