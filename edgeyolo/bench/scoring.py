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
import torch

from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.results import ArtifactSpec, Score
from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_DET,
    EVAL_CONF_THRES,
    EVAL_IOU_THRES,
    EVAL_MAX_DET,
)
from edgeyolo.data.records import ImageRecord
from edgeyolo.evaluate.evaluator import predict_with
from edgeyolo.metrics.coco_map import compute_map
from edgeyolo.metrics.parity import parity_report
from edgeyolo.postprocess import Detections, Prediction, from_outputs
from edgeyolo.runtime.backends import open_backend
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
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
    net: torch.nn.Module
    log: Log | None = None
    prog: Any = None
    not_available: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ref_preds: dict[tuple[Any, ...], list[Prediction]] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return [str(r.path) for r in self.records]


def letterboxed(records: Sequence[ImageRecord], img_size: int, n: int) -> np.ndarray:
    """``float32[n, 3, S, S]``: the first ``n`` records (cycled) as every backend receives them."""

    chosen = [records[i % len(records)] for i in range(n)]
    got: list[np.ndarray] = []

    def grab(images: torch.Tensor) -> list[Detections]:
        got.append(images.numpy())
        return [Detections.empty() for _ in range(len(images))]

    predict_with(grab, chosen, img_size=img_size, batch=n)
    return np.ascontiguousarray(np.concatenate(got), dtype=np.float32)


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

    def detect(images: torch.Tensor) -> list[Any]:
        dets = backend_fn(images.numpy())
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
    return [
        Detections(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(c))
        for b, s, c in preds
    ]


def _parity(
    run: BenchRun, ref: Sequence[Prediction], preds: Sequence[Prediction]
) -> dict[str, Any]:
    """:func:`parity_report`'s dict plus the histogram of the matched pairs' ``1 - IoU``."""
    rep = parity_report(_as_dets(ref), _as_dets(preds), files=run.files)
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
        parity = _parity(run, ref, preds)
    m = compute_map(map_preds, run.records, run.names)
    return Score(map50=m.map50, map50_95=m.map50_95, parity=parity, map_setting=setting)
