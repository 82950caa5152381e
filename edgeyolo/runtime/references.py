"""The PyTorch model's detections stored with an export, so the folder alone can check an engine.

``edgeyolo export`` writes ``references.npz`` into the export folder (:func:`write_references`,
called by :mod:`edgeyolo.export.references`) and records it in ``manifest.json``; ``edgeyolo
build`` and ``edgeyolo bench`` read it back on the device (:func:`load_references`), without the
checkpoint and without torch, and compare an engine's or graph's detections with it.

Format (``numpy.savez_compressed``; read with ``allow_pickle=False``), ``N`` images of ``S`` px
and ``M`` detections in all:

- ``format`` ``int64[]``: :data:`FORMAT` (1).
- ``images`` ``uint8[N, 3, S, S]``: the network's input frames, RGB, letterboxed to ``S`` (pad
  114, centred) exactly as at inference, before the scaling to 0..1: the model saw
  :func:`network_inputs` of them (:meth:`References.inputs`), bit for bit what the calibration
  and the backends feed.
- ``image_sha256`` ``str[N]``: hex sha256 of each image's bytes (``images[i].tobytes()``, C
  order), so a damaged or swapped frame is named by its index.
- ``counts`` ``int64[N]``: detections per image; image ``i``'s are rows
  ``counts[:i].sum() ... counts[:i+1].sum() - 1`` of
- ``boxes`` ``float32[M, 4]`` (xyxy, input pixels), ``scores`` ``float32[M]`` (sorted
  descending per image) and ``labels`` ``int64[M]`` (class indices).

The manifest's ``references`` entry: ``file``, ``sha256`` (of the file), ``count`` (``N``),
``detections`` (``M``), ``img_size``, ``source_sha256`` (the checkpoint's sha256), ``images_from``
(where the frames came from) and ``nms``: the settings the detections were made at, the graph's
own (``conf_thres``, ``iou_thres``, ``max_det``, ``max_candidates``, ``multi_label``), which must
equal the manifest's ``nms``.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.data.letterbox import to_input
from edgeyolo.detections import Detections
from edgeyolo.errors import ExportError, ModelFileError
from edgeyolo.fileio import atomic_write
from edgeyolo.runtime.manifest import read_manifest, sha256_file

__all__ = [
    "FORMAT",
    "NMS_KEYS",
    "REFERENCES_NAME",
    "References",
    "image_digests",
    "load_references",
    "network_inputs",
    "write_references",
]

#: The file's name in an export folder.
REFERENCES_NAME = "references.npz"
#: The layout version written in the file's ``format`` array.
FORMAT = 1
#: The NMS settings recorded with the references (those of the manifest's ``nms``).
NMS_KEYS = ("conf_thres", "iou_thres", "max_det", "max_candidates", "multi_label")
_ARRAYS = ("format", "images", "image_sha256", "counts", "boxes", "scores", "labels")
_REEXPORT = "export the model again (`edgeyolo export`) to rewrite it, or copy the whole folder"


@dataclass(frozen=True)
class References:
    """The stored reference detections of an export folder.

    Attributes:
        path: the ``references.npz`` they were read from.
        images: ``uint8[N, 3, S, S]`` letterboxed RGB frames.
        image_sha256: hex sha256 of each frame's bytes.
        detections: the PyTorch model's :class:`~edgeyolo.detections.Detections` of each frame
            (numpy; boxes in input pixels).
        nms: the settings they were made at (:data:`NMS_KEYS`).
        source_sha256: the checkpoint's sha256 (``None`` when not recorded).
    """

    path: Path
    images: np.ndarray
    image_sha256: tuple[str, ...]
    detections: list[Detections]
    nms: dict[str, Any]
    source_sha256: str | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def img_size(self) -> int:
        """``S``, the input size of the frames."""
        return int(self.images.shape[-1])

    def inputs(self) -> np.ndarray:
        """``float32[N, 3, S, S]`` in 0..1: the network input they were made from
        (:func:`network_inputs`)."""
        return network_inputs(self.images)


def network_inputs(images: np.ndarray) -> np.ndarray:
    """``uint8[N, 3, S, S]`` letterboxed frames → the network's ``float32[N, 3, S, S]`` input,
    by the one conversion every backend's input goes through
    (:func:`edgeyolo.data.letterbox.to_input`), so the floats are the same bit for bit."""
    return to_input(np.moveaxis(np.asarray(images), 1, -1))


def image_digests(images: np.ndarray) -> list[str]:
    """Hex sha256 of each ``images[i]``'s bytes (C order)."""
    return [hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


def write_references(
    path: str | Path, images: np.ndarray, detections: Sequence[Detections]
) -> dict[str, Any]:
    """Write ``images`` (``uint8[N, 3, S, S]``) and their detections to ``path`` atomically in
    the module's format; returns the manifest fields it knows (``file``, ``sha256``, ``count``,
    ``detections``, ``img_size``).

    Raises:
        ExportError: ``images`` is not ``uint8[N, 3, S, S]`` with ``S`` square, or the number of
            detections lists is not ``N``.
    """
    path = Path(path)
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ExportError(
            f"reference images must be uint8[N, 3, S, S], got {images.dtype}{list(images.shape)}"
        )
    if images.shape[2] != images.shape[3] or len(detections) != len(images):
        raise ExportError(
            f"{len(detections)} detection lists for {len(images)} reference images of shape "
            f"{list(images.shape)}: one list per square image is needed"
        )
    parts = [d.numpy() for d in detections]
    arrays = {
        "format": np.asarray(FORMAT, np.int64),
        "images": images,
        "image_sha256": np.asarray(image_digests(images), dtype="<U64"),
        "counts": np.asarray([len(p[1]) for p in parts], np.int64),
        "boxes": np.concatenate([p[0] for p in parts] or [np.zeros((0, 4), np.float32)]),
        "scores": np.concatenate([p[1] for p in parts] or [np.zeros(0, np.float32)]),
        "labels": np.concatenate([p[2] for p in parts] or [np.zeros(0, np.int64)]),
    }
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "count": int(len(images)),
        "detections": int(arrays["counts"].sum()),
        "img_size": int(images.shape[-1]),
    }


def load_references(folder: str | Path) -> References:
    """The reference detections of the export folder ``folder`` (its manifest's ``references``).

    Raises:
        ModelFileError: no manifest, a manifest without ``references`` (an export older than
            them), the file missing, not the file the manifest describes (sha256), unreadable
            or inconsistent (a missing array, wrong dtypes or shapes, counts that do not add
            up, NMS settings other than the graph's), or an image whose sha256 differs (its
            index is named). Every message names the file.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ModelFileError:
        raise
    except ExportError as exc:
        raise ModelFileError(str(exc)) from exc
    entry = manifest.get("references")
    if not isinstance(entry, Mapping) or not entry.get("file"):
        raise ModelFileError(
            f"{folder / 'manifest.json'} records no reference detections (an export older than "
            "them); export the model again (`edgeyolo export`) to store them"
        )
    path = folder / str(entry["file"])
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; the manifest lists it: {_REEXPORT}")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise ModelFileError(
            f"{path}: not the file the manifest describes (sha256 differs): damaged or replaced; "
            + _REEXPORT
        )
    arrays = _read_arrays(path)
    try:
        refs = _assemble(path, arrays, entry)
    except (TypeError, ValueError) as exc:  # arrays of the wrong kind (strings as boxes, ...)
        raise ModelFileError(f"{path}: corrupt ({exc}); {_REEXPORT}") from exc
    _check_against_manifest(refs, entry, manifest)
    return refs


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, checked present; :class:`ModelFileError` when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _ARRAYS if k not in data.files]
            if missing:
                raise ModelFileError(
                    f"{path}: corrupt: no {', '.join(missing)} array(s); {_REEXPORT}"
                )
            return {k: data[k] for k in _ARRAYS}
    except ModelFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelFileError(f"{path}: corrupt, cannot be read ({reason}); {_REEXPORT}") from exc


def _assemble(path: Path, a: dict[str, np.ndarray], entry: Mapping[str, Any]) -> References:
    """:class:`References` from the arrays, every shape, dtype and digest checked."""

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: corrupt: {what}; {_REEXPORT}")

    if int(a["format"]) != FORMAT:
        raise bad(f"format {int(a['format'])}, this edgeyolo reads {FORMAT}")
    images, counts = a["images"], a["counts"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise bad(f"images are {images.dtype}{list(images.shape)}, not uint8[N, 3, S, S]")
    n, total = len(images), int(counts.sum()) if counts.size else 0
    if counts.shape != (n,) or a["image_sha256"].shape != (n,) or (counts < 0).any():
        raise bad(f"{n} images but {counts.size} counts and {a['image_sha256'].size} digests")
    shapes = (a["boxes"].shape, a["scores"].shape, a["labels"].shape)
    if shapes != ((total, 4), (total,), (total,)):
        raise bad(f"counts add up to {total} detections, arrays hold {shapes}")
    digests = tuple(str(d) for d in a["image_sha256"])
    for i, (got, want) in enumerate(zip(image_digests(images), digests, strict=True)):
        if got != want:
            raise ModelFileError(
                f"{path}: image {i} is not the image stored (sha256 {got[:12]}..., recorded "
                f"{want[:12]}...): damaged; {_REEXPORT}"
            )
    ends = np.cumsum(counts)
    starts = ends - counts
    dets = [
        Detections(
            boxes=a["boxes"][s:e].astype(np.float32),
            scores=a["scores"][s:e].astype(np.float32),
            labels=a["labels"][s:e].astype(np.int64),
        )
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    nms = {k: entry.get("nms", {}).get(k) for k in NMS_KEYS}
    source = entry.get("source_sha256")
    return References(path, images, digests, dets, nms, None if source is None else str(source))


def _check_against_manifest(
    refs: References, entry: Mapping[str, Any], manifest: Mapping[str, Any]
) -> None:
    """The file agrees with its manifest entry (count, size) and was made at the graph's NMS."""
    count = entry.get("count")
    if count is not None and int(count) != len(refs):
        raise ModelFileError(
            f"{refs.path}: holds {len(refs)} images, the manifest says {count}; {_REEXPORT}"
        )
    shape = manifest.get("input", {}).get("shape", [None])
    if isinstance(shape[-1], int) and shape[-1] != refs.img_size:
        raise ModelFileError(
            f"{refs.path}: images of {refs.img_size} px, the graph takes {shape[-1]} px; "
            + _REEXPORT
        )
    graph = {k: manifest.get("nms", {}).get(k) for k in NMS_KEYS}
    if graph != refs.nms:
        raise ModelFileError(
            f"{refs.path}: made at NMS settings {refs.nms}, the graph's are {graph}, so they "
            f"cannot be compared; {_REEXPORT}"
        )
