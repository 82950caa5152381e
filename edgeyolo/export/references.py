"""The export's stored reference detections: the PyTorch model's boxes on 16 real frames.

Every export writes ``references.npz`` (format: :mod:`edgeyolo.runtime.references`) so that the
export folder alone is enough to check an engine on the device, where neither the checkpoint nor
torch is: ``edgeyolo build`` holds each new engine to them, ``edgeyolo bench --models DIR``
reports every artifact's parity against them.

The frames are the first :data:`COUNT` calibration images (``--calib``, sorted paths), read and
letterboxed as at inference and kept as ``uint8``; the detections are the model's at the graph's
own NMS settings (score and IoU thresholds, detections kept, candidate cap, multi-label), made by
the same function that every exported variant is compared with
(:func:`edgeyolo.export.pipeline.torch_reference`, passed in as ``detect``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.config import ExportConfig
from edgeyolo.data.images import read_rgb
from edgeyolo.data.letterbox import letterbox
from edgeyolo.detections import Detections
from edgeyolo.errors import CalibrationError, DataError
from edgeyolo.export.calib import find_images, where_calib
from edgeyolo.runtime.references import REFERENCES_NAME, network_inputs, write_references

__all__ = ["COUNT", "reference_frames", "store_references"]

#: Reference frames per export: enough boxes to compare, small enough to ship (16 x 416 px: a few
#: MB compressed).
COUNT = 16


def reference_frames(
    calib: str | Path, img_size: int, *, count: int = COUNT
) -> tuple[np.ndarray, str]:
    """The first ``count`` images of ``calib`` letterboxed to ``img_size``, and where from.

    Returns:
        ``(uint8[N, 3, S, S] RGB, description)``; without an image in ``calib``, ``count``
        frames of seeded random noise (the description says so).

    Raises:
        CalibrationError: an image that cannot be decoded (named).
    """
    folder = Path(calib)
    try:
        files = find_images(folder)[:count]
    except CalibrationError:
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 256, (count, 3, img_size, img_size), dtype=np.uint8)
        return noise, f"random noise (seed 0): no images in {where_calib(folder)}"
    frames = np.empty((len(files), 3, img_size, img_size), np.uint8)
    for i, path in enumerate(files):
        try:
            rgb = read_rgb(str(path))
        except DataError as exc:
            raise CalibrationError(
                f"calibration image {path} cannot be read ({exc.reason}); remove or replace it"
            ) from exc
        boxed, _ = letterbox(rgb, img_size)
        frames[i] = boxed.transpose(2, 0, 1)
    names = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
    return frames, f"the first {len(files)} images of {where_calib(folder)} ({names})"


def store_references(
    detect: Callable[[np.ndarray], list[Detections]],
    cfg: ExportConfig,
    stage: Path,
    img_size: int,
    source_sha256: str,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Write ``stage/references.npz``: :func:`reference_frames` of ``cfg.calib`` and their
    detections by ``detect`` (``float32[N, 3, S, S]`` 0..1 in, one :class:`Detections` per
    image out, at ``cfg``'s NMS settings); returns the manifest's ``references`` entry."""
    frames, where = reference_frames(cfg.calib, img_size)
    detections = detect(network_inputs(frames))
    entry = write_references(stage / REFERENCES_NAME, frames, detections)
    nms = {
        "conf_thres": cfg.conf_thres,
        "iou_thres": cfg.iou_thres,
        "max_det": cfg.max_det,
        "max_candidates": cfg.max_candidates,
        "multi_label": cfg.multi_label,
    }
    entry |= {"source_sha256": source_sha256, "images_from": where, "nms": nms}
    log(
        f"stored the PyTorch model's {entry['detections']} detections of {entry['count']} frames "
        f"in {REFERENCES_NAME} (parity on the device without the checkpoint)"
    )
    return entry
