"""Scoring one benched model: mAP at COCO settings and box parity against the checkpoint.

:class:`BenchRun` is what the steps of one ``edgeyolo bench`` run share (the scored images, the
reference checkpoint, the lines reported so far, and the reference's predictions per input size and
NMS, so that exports at the same settings share one pass of the checkpoint); :func:`score` is the
mAP and parity of one artifact, :func:`letterboxed` the images every backend is timed on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.results import ArtifactSpec, Score
from edgeyolo.build.references import detect_in_batches, floor_for, meets
from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_DET,
    EVAL_CONF_THRES,
    EVAL_IOU_THRES,
    EVAL_MAX_DET,
)
from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Detections, Prediction, from_outputs
from edgeyolo.evaluate.predict import letterboxed_batch, predict_with
from edgeyolo.metrics.coco_map import compute_map
from edgeyolo.metrics.parity import parity_report
from edgeyolo.runtime.backends import TensorRTBackend, open_backend
from edgeyolo.runtime.manifest import find_entry, read_manifest
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.references import References, load_references
from edgeyolo.runtime.thresholds import NmsSettings, retarget_nms

__all__ = [
    "COCO_NMS",
    "DEPLOY_NMS",
    "EVAL_BATCH",
    "BenchRun",
    "Log",
    "letterboxed",
    "nms_text",
    "note",
    "score",
    "score_stored",
    "stored_references",
]

Log = Callable[[str], object]

#: The NMS every artifact's mAP is scored at (an engine's baked NMS excepted).
COCO_NMS = NmsSettings(EVAL_CONF_THRES, EVAL_IOU_THRES, EVAL_MAX_DET)
#: The deployment NMS of a model whose manifest gives none (``edgeyolo export``'s defaults).
DEPLOY_NMS = NmsSettings(DEFAULT_CONF_THRES, DEFAULT_IOU_THRES, DEFAULT_MAX_DET)
EVAL_BATCH = 8
#: Bins of the matched pairs' ``1 - IoU`` (log-spaced; IoU 1 - 1e-7 lands in the first bin).
GAP_EDGES = np.geomspace(1e-6, 0.5, 41)


def nms_text(nms: NmsSettings) -> str:
    return f"conf {nms.conf_thres}, IoU {nms.iou_thres}, {nms.max_det} dets"


def note(bucket: list[str], line: str, log: Log | None) -> None:
    """Append ``line`` to ``bucket`` (``not_available`` or ``failed``) and pass it to ``log``."""
    bucket.append(line)
    if log:
        log(line)


@dataclass
class BenchRun:
    """What the steps of one run share (the scored images, the reference model, the progress
    display, the lines reported so far) and the reference's predictions per ``(input size,
    NMS)``, so that exports at the same settings share one pass of the checkpoint."""

    config: BenchConfig
    records: list[ImageRecord]
    names: tuple[str, ...]
    img_size: int
    net: Any
    log: Log | None = None
    prog: Any = None
    not_available: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ref_preds: dict[tuple[Any, ...], list[Prediction]] = field(default_factory=dict)
    stored: dict[Path, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return [str(r.path) for r in self.records]


def letterboxed(records: Sequence[ImageRecord], img_size: int, n: int) -> np.ndarray:
    """``float32[n, 3, S, S]``: the first ``n`` records (cycled) as every backend receives them."""

    chosen = [records[i % len(records)] for i in range(n)]
    return np.ascontiguousarray(letterboxed_batch(chosen, img_size), dtype=np.float32)


def _predict(
    backend_fn: Callable[[np.ndarray], list[Any]],
    records: Sequence[ImageRecord],
    img_size: int,
    batch: int,
    progress: Any,
    label: str,
) -> list[Prediction]:
    """Predictions ``(boxes, scores, labels)`` per record in image pixels, with a progress task."""

    task = progress.add_task(label, total=math.ceil(len(records) / batch)) if progress else None

    def detect(images: np.ndarray) -> list[Any]:
        dets = backend_fn(images)
        if progress:
            progress.advance(task)
        return dets

    try:
        return predict_with(detect, records, img_size=img_size, batch=batch)
    finally:
        if progress:
            progress.remove_task(task)


def _predict_file(
    run: BenchRun, path: Path, size: int, label: str, nms: NmsSettings | None = None, **kw: Any
) -> list[Prediction]:
    """Predictions of the model file ``path`` at input size ``size``; ``nms`` and ``kw``
    (``half``, ``img_size``) go to a checkpoint's backend (an export has its own NMS)."""
    cfg = run.config
    kw.update(asdict(nms) if nms else {})
    with open_backend(path, device=cfg.device, threads=cfg.threads, **kw) as b:
        bs = min(EVAL_BATCH, b.max_batch) if b.name == "tensorrt" else EVAL_BATCH
        return _predict(b.infer, run.records, size, bs, run.prog, label)


def _predict_retargeted(run: BenchRun, spec: ArtifactSpec, size: int) -> list[Prediction]:
    """Predictions of an ``.onnx`` through a copy of its graph with the NMS set to COCO's."""
    coco = retarget_nms(onnx.load(str(spec.path)), **asdict(COCO_NMS)).SerializeToString()
    with OnnxRuntimeSession(coco, threads=run.config.threads) as s:

        def infer(x: np.ndarray) -> list[Any]:
            return from_outputs(s.run(x))

        return _predict(infer, run.records, size, EVAL_BATCH, run.prog, f"{spec.key}: mAP")


def _as_dets(preds: Sequence[Prediction]) -> list[Detections]:
    return [Detections(b, s, c) for b, s, c in preds]


def _parity(
    refs: Sequence[Detections], dets: Sequence[Detections], files: Sequence[str]
) -> dict[str, Any]:
    """:func:`parity_report`'s dict plus the histogram of the matched pairs' ``1 - IoU``."""
    rep = parity_report(refs, dets, files=files)
    gap = np.clip(1.0 - rep.ious, GAP_EDGES[0], GAP_EDGES[-1])
    edges = [float(f"{e:.4g}") for e in GAP_EDGES]
    hist = {
        "of": "1 - IoU",
        "edges": edges,
        "counts": np.histogram(gap, bins=GAP_EDGES)[0].tolist(),
    }
    return {**rep.to_dict(), "iou_histogram": hist}


def _reference_preds(run: BenchRun, spec: ArtifactSpec, size: int) -> list[Prediction]:
    """The checkpoint's predictions at ``size`` with ``spec``'s NMS and post-processing
    (``multi_label``, candidate cap), computed once per setting."""
    key = (size, spec.nms, spec.post)
    if key not in run.ref_preds:
        run.ref_preds[key] = _predict_file(
            run, run.config.weights, size, "reference at the export's NMS", spec.nms,
            img_size=size, **dict(spec.post),
        )  # fmt: skip
    return run.ref_preds[key]


def score(run: BenchRun, spec: ArtifactSpec) -> Score:
    """mAP (COCO settings where the format allows) and parity against the checkpoint."""
    key, size = spec.key, spec.img_size
    assert size is not None  # set by _prepare
    setting = f"COCO ({nms_text(COCO_NMS)})"
    parity = None
    if spec.kind == "pt" and not spec.half:
        map_preds = _predict_file(run, spec.path, size, f"{key}: mAP", COCO_NMS, img_size=size)
    else:
        ref = _reference_preds(run, spec, size)
        if spec.kind == "pt":  # the checkpoint in fp16: its own NMS, at both settings
            pt = {"img_size": size, "half": True}
            pt |= dict(spec.post)
            preds = _predict_file(run, spec.path, size, f"{key}: parity", spec.nms, **pt)
            map_preds = _predict_file(run, spec.path, size, f"{key}: mAP", COCO_NMS, **pt)
        elif spec.kind == "onnx":
            preds = _predict_file(run, spec.path, size, f"{key}: parity")
            map_preds = _predict_retargeted(run, spec, size)
            setting += ", through a copy of the graph with its NMS retargeted"
        else:
            map_preds = preds = _predict_file(run, spec.path, size, f"{key}: parity")
            setting = f"the engine's baked NMS ({nms_text(spec.nms)}), not COCO's"
        parity = _parity(_as_dets(ref), _as_dets(preds), run.files)
    m = compute_map(map_preds, run.records, run.names)
    return Score(map50=m.map50, map50_95=m.map50_95, parity=parity, map_setting=setting)


def stored_references(run: BenchRun, folder: Path) -> References:
    """The reference detections stored in export folder ``folder`` (read once per run)."""
    if folder not in run.stored:
        run.stored[folder] = load_references(folder)
    return run.stored[folder]


def _stored_parity(run: BenchRun, spec: ArtifactSpec) -> dict[str, Any]:
    """Parity of ``spec`` against the PyTorch detections its export folder stores, run on the
    stored frames at the graph's own thresholds, judged by the floor of its precision
    (:func:`edgeyolo.build.references.floor_for`)."""
    refs = stored_references(run, spec.path.parent)
    cfg = run.config
    with open_backend(spec.path, device=cfg.device, threads=cfg.threads) as b:
        min_batch = b.trt.min_batch if isinstance(b, TensorRTBackend) else 1
        dets = detect_in_batches(b.infer, refs.inputs(), min(EVAL_BATCH, b.max_batch), min_batch)
        precision = b.precision
    entry = find_entry(read_manifest(spec.path.parent), file=spec.path.name) or {}
    files = [f"{refs.path.name}[{i}]" for i in range(len(refs))]
    out = _parity(refs.detections, dets, files)
    floor = floor_for(precision, bool(entry.get("tf32", False)))
    out.update(
        against=f"the {len(refs)} reference frames stored in {refs.path.name}",
        floor=floor.rule,
        passed=meets(out, floor),
    )
    return out


def score_stored(run: BenchRun, spec: ArtifactSpec) -> Score:
    """Without a checkpoint: parity against the stored references; mAP where a data split was
    given (COCO settings for an ``.onnx``, an engine's baked NMS)."""
    parity = _stored_parity(run, spec)
    if not run.records:
        return Score(map50=None, map50_95=None, parity=parity, map_setting="no data given")
    size = spec.img_size
    assert size is not None  # set by _prepare
    setting = f"COCO ({nms_text(COCO_NMS)})"
    if spec.kind == "onnx":
        preds = _predict_retargeted(run, spec, size)
        setting += ", through a copy of the graph with its NMS retargeted"
    else:
        preds = _predict_file(run, spec.path, size, f"{spec.key}: mAP")
        setting = f"the engine's baked NMS ({nms_text(spec.nms)}), not COCO's"
    m = compute_map(preds, run.records, run.names)
    return Score(map50=m.map50, map50_95=m.map50_95, parity=parity, map_setting=setting)
