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
import onnxruntime
import onnxsim
import torch

from edgeyolo import cpuinfo
from edgeyolo.build.engine import BUILD_LOG, TIMING_CACHE, build_from_manifest, preflight
from edgeyolo.build.options import BuildOptions
from edgeyolo.build.references import FP32_FLOOR
from edgeyolo.build.tensorrt import tensorrt_refusal
from edgeyolo.config import ExportConfig
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.detections import Detections, from_outputs
from edgeyolo.errors import CalibrationError, ConfigError, ExportError
from edgeyolo.export import int8
from edgeyolo.export.calib import find_images, load_calibration, where_calib
from edgeyolo.export.graph import INPUT_NAME, OUTPUT_NAMES
from edgeyolo.export.onnx_export import build_fp32, check_opset, to_fp16
from edgeyolo.export.references import store_references
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.models.checkpoint import load_model
from edgeyolo.models.darknet_cfg import eps_note
from edgeyolo.models.darknet_weights import write_darknet_pair
from edgeyolo.runtime.conformance import (
    HINT,
    ORT_ONLY_REASON,
    check_graph,
    format_violations,
    manifest_targets,
)
from edgeyolo.runtime.environment import environment
from edgeyolo.runtime.manifest import MANIFEST_NAME, read_manifest, sha256_file, write_manifest
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch

if TYPE_CHECKING:
    from edgeyolo.data.records import ImageRecord
    from edgeyolo.export.onnx_export import SimplifyReport

__all__ = ["STAGING_MARK", "export_model", "parity_against_torch", "torch_reference"]

#: fp32 must reproduce PyTorch: every box matched, IoU and score within float rounding.
FP32_MIN_IOU = FP32_FLOOR.min_iou
FP32_MAX_SCORE_DIFF = FP32_FLOOR.max_score_diff
#: Part of the name of the staging folder (``.<out name>.partial-<random>`` beside ``--out``).
STAGING_MARK = ".partial-"


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
        preflight()
        if cfg.int8 and cfg.int8_placement == "onnxruntime":
            log(f"note: no engine from the int8 graph: it is the {ORT_ONLY_REASON}")
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
        path, info = int8.build_int8(cfg, net, fp32_path, records, img_size, log, progress)
        checks["int8"] = parity_against_torch(net, path, images, cfg=cfg)
        artifacts.append(_onnx_entry(path, "int8", **info))
        log(f"made {path.name} (int8 for {cfg.int8_target}, placement {cfg.int8_placement})")
    return artifacts, checks, sim, len(images)


def _how_checked(targets: list[str]) -> dict[str, str]:
    """What each ``targets`` entry of a graph rests on: a promise says how it was kept."""
    how = {}
    for t in targets:
        if t == "onnxruntime":
            how[t] = (
                f"numerics: parity against PyTorch at export on onnxruntime "
                f"{onnxruntime.__version__} (checks.parity_vs_torch); every onnxruntime the "
                "install allows computes fp16 Q/DQ alike (edgeyolo.runtime.onnxruntime)"
            )
        else:
            how[t] = (
                "static only: the graph conforms to this TensorRT's ONNX parser (operator table "
                "and rules of edgeyolo.runtime.trt_support); no engine was built or run at export "
                "-- `edgeyolo bench` on the built engine is its numeric check"
            )
    return how


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
            a["targets_checked"] = _how_checked(a["targets"])
            continue
        trt = tuple(a.pop("trt_targets", cfg.trt))  # the int8 fp16 graph may claim fewer
        violations = check_graph(onnx.load(str(stage / a["file"])), trt)
        if violations:
            problems.append(format_violations(violations, name=a["file"]))
        a["targets"] = manifest_targets(trt)
        a["targets_checked"] = _how_checked(a["targets"])
        checked += 1
    if problems:
        raise ExportError("\n".join([*problems, HINT]))
    log(
        f"checked {checked} graph(s) against TensorRT {', '.join(cfg.trt)}'s ONNX parser "
        "(the table in edgeyolo.runtime.trt_support): they conform"
    )


def _build_darknet(
    net: torch.nn.Module,
    ckpt: dict[str, Any],
    stage: Path,
    img_size: int,
    eps: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """``stage/<arch>.weights`` in darknet format for readers of BatchNorm epsilon ``eps``, and
    the matching ``stage/<arch>.cfg``; returns their manifest entries."""

    if ckpt.get("format") == "darknet":  # read from a .weights: keep its count
        seen = int(ckpt["seen"])
    else:
        state = ckpt.get("state") or {}  # best.pt (inference only) records global_step on top
        step = ckpt.get("global_step", state.get("global_step", 0))
        seen = int(step) * int((ckpt.get("train") or {}).get("batch", 1))
    dn, dc, floats = write_darknet_pair(stage, net, img_size=img_size, seen=seen, eps=eps)
    log(f"made {dn.name} ({floats:,} floats, darknet format, for {eps_note(eps)}) and {dc.name}")
    common = {"precision": "fp32", "eps": eps, "readers": eps_note(eps)}
    return [
        {"kind": "darknet", **common, "file": dn.name, "sha256": sha256_file(dn),
         "bytes": dn.stat().st_size, "floats": floats},
        {"kind": "darknet_cfg", **common, "file": dc.name, "sha256": sha256_file(dc),
         "bytes": dc.stat().st_size},
    ]  # fmt: skip


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


def _build_engines(
    cfg: ExportConfig, stage: Path, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``--engine``: :func:`~edgeyolo.build.engine.build_from_manifest`, the code of ``edgeyolo
    build``, on each staged graph meant for TensorRT (each engine is checked against the stored
    references and recorded in the staged manifest); returns that manifest.

    The default timing cache starts from ``out``'s (if any); with ``--verbose`` TensorRT's log
    goes to ``stage/tensorrt_build.log``, kept beside ``out`` as ``<out>.tensorrt_build.log``
    when a build fails (the staging folder is removed then).
    """
    options = BuildOptions.from_export(cfg)
    if not cfg.timing_cache and (out / TIMING_CACHE).is_file():
        shutil.copy2(out / TIMING_CACHE, stage / TIMING_CACHE)
    graphs = [a for a in read_manifest(stage)["artifacts"] if a["kind"] == "onnx"]
    try:
        for a in graphs:
            reason = tensorrt_refusal(a)
            if reason is not None:
                log(f"note: no engine from {a['file']}: {reason}")
                continue
            build_from_manifest(stage / a["file"], options, log=log)
    except ExportError as exc:
        if not cfg.trt_verbose or not (stage / BUILD_LOG).is_file():
            raise
        kept = out.parent / f"{out.name}.{BUILD_LOG}"
        shutil.copy2(stage / BUILD_LOG, kept)
        raise type(exc)(f"{exc} (TensorRT's build log: {kept})") from exc
    return read_manifest(stage)


def export_model(
    cfg: ExportConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the whole export; returns the manifest (also written to ``cfg.out/manifest.json``).

    All or nothing (module docstring): on any error ``cfg.out`` is left as it was.
    """

    _preflight(cfg, log)
    net, ckpt = load_model(cfg.weights, cfg.darknet_cfg, device=torch.device("cpu"))
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
            artifacts += _build_darknet(net, ckpt, stage, img_size, cfg.darknet_eps, log)
        manifest = _manifest(cfg, net, img_size, sim, n_images, checks, artifacts)
        manifest["references"] = store_references(
            lambda x: torch_reference(net, x, cfg=cfg),
            cfg, stage, img_size, manifest["source"]["sha256"], log,
        )  # fmt: skip
        write_manifest(stage, manifest)
        if cfg.engine:
            manifest = _build_engines(cfg, stage, out, log)
        files = [a["file"] for a in manifest["artifacts"]] + [manifest["references"]["file"]]
        if not cfg.timing_cache and (stage / TIMING_CACHE).is_file():
            files.append(TIMING_CACHE)
        if cfg.trt_verbose and (stage / BUILD_LOG).is_file():
            files.append(BUILD_LOG)
        _commit(stage, out, files)
    log(f"wrote {', '.join([*files, MANIFEST_NAME])} to {out}")
    return manifest
