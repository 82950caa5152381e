"""The INT8 calibration set: real images, preprocessed exactly as at inference.

Calibration measures the range of every activation the quantized graph will see, so its images
must go through the same pipeline as deployment frames: decode as RGB, :func:`letterbox` to the
export size (pad value 114), ``/ 255`` to ``float32`` 0..1, NCHW. Anything else (BGR, another
resize, no padding) calibrates ranges for inputs the engine never gets.

A corrupt or unreadable image is an error naming the file, never silently skipped: a calibration
set that shrank without anyone noticing is how INT8 accuracy collapses quietly.

:func:`calibrate` runs the fp32 graph over the set once and returns the activation ranges that
:func:`edgeyolo.export.quantize.quantize_int8` applies (as often as the accuracy gate needs).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    TensorData,
    TensorsData,
    create_calibrator,
)
from rich.progress import Progress, track

from edgeyolo.data.dataset import read_rgb
from edgeyolo.data.letterbox import letterbox, to_input
from edgeyolo.data.records import IMAGE_SUFFIXES
from edgeyolo.errors import CalibrationError, DataError, ExportError

__all__ = [
    "CALIB_OP_TYPES",
    "METHODS",
    "CalibReader",
    "CalibSet",
    "calibrate",
    "find_images",
    "load_calibration",
    "preprocess",
    "where_calib",
]

#: File suffixes (lower case) taken as calibration images.
_README = "calib_data/README.md"

METHODS = ("entropy", "percentile", "minmax")
METHOD_ENUMS = {
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "minmax": CalibrationMethod.MinMax,
}
#: Op types whose input and output tensors get ranges: Conv for both placements, the rest for the
#: ``onnxruntime`` placement, which quantizes activations between ops (edgeyolo.export.quantize).
CALIB_OP_TYPES = ("Conv", "LeakyRelu", "MaxPool", "Concat", "Resize")
# Entropy: TensorRT's legacy entropy calibrator uses a histogram of |x| (2048 bins) and 128 levels
# per side. ORT's histogram is signed, so the same resolution needs 256 quantized bins over the
# window; ORT's default (128 bins / 128 quantized) leaves a single candidate, i.e. plain min/max.
# 1024 bins keeps ORT's Python KL loop at ~15 s per model on 2 cores. Entropy clips rare large
# activations; on images dominated by one background value (MNIST-detection: white canvas) it
# clips the digit strokes and loses accuracy (measured: calib_data/README.md).
CALIB_OPTIONS = {
    "entropy": {"num_bins": 1024, "num_quantized_bins": 256},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
    "minmax": {},
}


@dataclass(frozen=True)
class CalibSet:
    """Preprocessed calibration images and where they came from.

    Attributes:
        images: ``float32[N, 3, S, S]`` RGB 0..1, letterboxed as at inference.
        files: the ``N`` source files, in the order of ``images`` (sorted paths).
        sha256: hex digest of the files' bytes, concatenated in that order (provenance: the same
            digest means the same calibration data, whatever the folder is called).
        folder: the folder the images were read from.
    """

    images: np.ndarray
    files: tuple[str, ...]
    sha256: str
    folder: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def img_size(self) -> int:
        """``S``, the square input size the images were letterboxed to."""
        return int(self.images.shape[-1])


def find_images(folder: Path) -> list[Path]:
    """Image files (``.jpg .jpeg .png .bmp``, any case) under ``folder``, recursive, sorted.

    Raises:
        CalibrationError: ``folder`` does not exist, is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise CalibrationError(f"calibration folder {where_calib(folder)} {what}: {_hint()}")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise CalibrationError(
            f"calibration folder {where_calib(folder)} holds no image: {_hint()}"
        )
    return files


def where_calib(folder: Path) -> str:
    """``folder`` as an absolute path, and for a relative one what it was resolved against, e.g.
    ``/home/me/calib_data (--calib calib_data, relative to the current folder /home/me)``."""
    folder = Path(folder)
    resolved = folder.resolve()
    if folder.is_absolute():
        return str(resolved)
    return f"{resolved} (--calib {folder}, relative to the current folder {Path.cwd()})"


def _hint() -> str:
    return (
        "put a few hundred representative frames (jpg/png/bmp, no labels needed) there, "
        f"or pass --calib PATH with a folder of such images; see {_README}"
    )


def preprocess(image_rgb: np.ndarray, img_size: int) -> np.ndarray:
    """``uint8[H, W, 3]`` RGB → ``float32[3, S, S]`` 0..1: the inference preprocessing.

    Letterbox (:func:`edgeyolo.data.transforms.letterbox`), HWC→CHW, ``/ 255`` in float32, i.e.
    what :class:`edgeyolo.runtime.Detector` and the evaluation dataset feed the network.
    """
    boxed, _ = letterbox(image_rgb, img_size)
    return to_input(boxed)


def _read(path: Path) -> tuple[bytes, np.ndarray]:
    """The file's bytes and its ``uint8[H, W, 3]`` RGB pixels (the training/eval decoder)."""
    try:
        data = path.read_bytes()
        return data, read_rgb(str(path))
    except DataError as e:
        raise CalibrationError(
            f"calibration image {path} cannot be read ({e.reason}); remove or replace it"
        ) from e
    except OSError as e:
        raise CalibrationError(f"calibration image {path} cannot be read ({e})") from e


def load_calibration(
    folder: str | Path,
    *,
    img_size: int,
    max_images: int | None = None,
    progress: bool = True,
) -> CalibSet:
    """Read and preprocess the calibration images of ``folder``.

    Args:
        folder: searched recursively (:func:`find_images`).
        img_size: ``S``, the model's square input size.
        max_images: use only the first ``max_images`` files (sorted order); ``None``: all.
        progress: show a rich progress bar.

    Returns:
        :class:`CalibSet` with ``images`` ``float32[N, 3, S, S]``.

    Raises:
        CalibrationError: the folder is missing or empty, or an image cannot be decoded (the
            message names the file).
    """
    if img_size < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    files = find_images(Path(folder))[:max_images]
    images = np.empty((len(files), 3, img_size, img_size), dtype=np.float32)
    digest = hashlib.sha256()

    steps = track(
        enumerate(files),
        total=len(files),
        description="calibration images",
        disable=not progress,
        transient=True,
    )
    for i, path in steps:
        data, rgb = _read(path)
        digest.update(data)
        images[i] = preprocess(rgb, img_size)
    return CalibSet(
        images=images,
        files=tuple(str(p) for p in files),
        sha256=digest.hexdigest(),
        folder=str(folder),
    )


class CalibReader(CalibrationDataReader):
    """Feeds a :class:`CalibSet` to ONNX Runtime's calibrators, one image per batch.

    ``get_next()`` returns ``{input_name: float32[1, 3, S, S]}`` until the images (or the range set
    by :meth:`set_range`) are used up, then ``None``. :meth:`rewind` starts over.
    """

    def __init__(
        self,
        calib: CalibSet,
        input_name: str = "images",
        *,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        self.calib = calib
        self.input_name = input_name
        self.set_range(start, len(calib) if end is None else end)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed images ``[start_index, end_index)`` from the start."""
        n = len(self.calib)
        self._start, self._end = max(0, start_index), min(n, end_index)
        self._iter = self._batches()

    def rewind(self) -> None:
        """Start over at the beginning of the current range."""
        self._iter = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self._start, self._end):
            yield {self.input_name: self.calib.images[i : i + 1]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or ``None`` when done."""
        return next(self._iter, None)

    def __len__(self) -> int:
        return max(0, self._end - self._start)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's prints and root-logger warnings."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _input_size(model: onnx.ModelProto) -> tuple[str, int | None]:
    """Name and (square) spatial size of the model's image input (``None`` if symbolic)."""
    inp = model.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    return inp.name, dims[-1] if len(dims) == 4 else None


def calibrate(
    fp32_path: str | Path,
    calib: CalibSet,
    *,
    method: str,
    chunk: int = 8,
    progress: bool = False,
) -> TensorsData:
    """Activation ranges of the Conv inputs (and, with minmax, outputs) of ``fp32_path``.

    Args:
        fp32_path: the fp32 deploy graph (input ``float32[B, 3, S, S]``).
        calib: preprocessed images, ``S`` must match the graph's input size.
        method: one of :data:`METHODS`.
        chunk: images per ``collect_data`` call (bounds the memory the calibrator holds).
        progress: show a rich progress bar.

    Returns:
        ORT ``TensorsData``: ``{tensor name: TensorData(lowest, highest)}`` and the method; pass
        it to :func:`edgeyolo.export.quantize.quantize_int8` as often as needed.
    """
    if method not in METHOD_ENUMS:
        raise ExportError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    if len(calib) == 0:
        raise CalibrationError(f"calibration set from {calib.folder} is empty")
    input_name, size = _input_size(onnx.load(str(fp32_path), load_external_data=False))
    if size is not None and size != calib.img_size:
        raise CalibrationError(
            f"calibration images are {calib.img_size} px but {fp32_path} takes {size} px; "
            "load them with img_size matching the export size"
        )

    with tempfile.TemporaryDirectory(prefix="edgeyolo-calib-") as tmp, _quiet():
        calibrator = create_calibrator(
            Path(fp32_path),
            list(CALIB_OP_TYPES),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHOD_ENUMS[method],
            extra_options=CALIB_OPTIONS[method],
        )
        if hasattr(calibrator, "tensors_to_calibrate"):
            # Histogram methods: keep only the Conv *inputs* (the outputs are never quantized),
            # which halves the time of ORT's Python entropy search.
            graph = onnx.load(str(fp32_path), load_external_data=False).graph
            inputs = {n.input[0] for n in graph.node if n.op_type in CALIB_OP_TYPES}
            calibrator.tensors_to_calibrate &= inputs
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"calibrating ({method})", total=len(calib))
            for start in range(0, len(calib), chunk):
                calibrator.collect_data(
                    CalibReader(calib, input_name, start=start, end=start + chunk)
                )
                bar.update(task, completed=min(start + chunk, len(calib)))
        computed = calibrator.compute_data()
    data = {}
    for name, value in computed.items():
        lo, hi = value.range_value
        data[name] = TensorData(
            lowest=np.asarray(lo, dtype=np.float32), highest=np.asarray(hi, dtype=np.float32)
        )
    return TensorsData(METHOD_ENUMS[method], data)
