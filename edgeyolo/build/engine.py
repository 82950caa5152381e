"""The engine step of an export: check TensorRT is here, build an engine per graph meant for it,
run each on the check images and hold it to PyTorch's detections (:mod:`.engine_parity`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.config import ExportConfig
from edgeyolo.errors import ExportError
from edgeyolo.export.engine_parity import check_engine_parity, engine_parity, run_engine
from edgeyolo.export.graph import INPUT_NAME, OUTPUT_NAMES
from edgeyolo.export.tensorrt import build_engine, import_tensorrt, tensorrt_refusal
from edgeyolo.postprocess import Detections
from edgeyolo.runtime.conformance import ORT_ONLY_REASON
from edgeyolo.runtime.gpu import gpu_identity, import_pycuda
from edgeyolo.runtime.manifest import sha256_file

__all__ = ["BUILD_LOG", "TIMING_CACHE", "build_engines", "engine_preflight"]

#: The timing cache kept with the engines (``--timing-cache`` gives another).
TIMING_CACHE = "timing.cache"
#: TensorRT's build log with ``--verbose`` (in the export folder).
BUILD_LOG = "tensorrt_build.log"


def engine_preflight(cfg: ExportConfig, log: Callable[[str], None]) -> None:
    """``--engine`` needs TensorRT (>= 8.6), pycuda (the engines are run once, for parity) and
    a CUDA device, checked before anything is built; and says which graph gets no engine."""

    import_tensorrt()
    import_pycuda()
    gpu_identity()
    if cfg.int8 and cfg.int8_placement == "onnxruntime":
        log(f"note: no engine from the int8 graph: it is the {ORT_ONLY_REASON}")


def build_engines(
    cfg: ExportConfig,
    reference: list[Detections],
    images: np.ndarray,
    onnx_artifacts: list[dict[str, Any]],
    stage: Path,
    out: Path,
    img_size: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One TensorRT engine per ONNX graph in ``stage`` that is meant for TensorRT, each run on
    ``images`` (the export's check images) and compared with ``reference``, PyTorch's
    detections of them (:mod:`edgeyolo.export.engine_parity`).

    The default timing cache starts from ``out``'s (if any) and is staged with the rest; with
    ``--verbose`` TensorRT's log goes to ``stage/tensorrt_build.log``, kept beside ``out`` as
    ``<out>.tensorrt_build.log`` when the build fails (the staging folder is removed then).
    """

    if cfg.timing_cache:
        cache = Path(cfg.timing_cache)
    else:
        cache = stage / TIMING_CACHE
        if (out / TIMING_CACHE).is_file():
            shutil.copy2(out / TIMING_CACHE, cache)
    log_file = stage / BUILD_LOG if cfg.trt_verbose else None
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
