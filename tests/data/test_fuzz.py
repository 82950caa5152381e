"""Fuzzing the annotation readers and the loader with hypothesis.

Every input is either read correctly (boxes inside the image with positive area, class ids in
range) or rejected with a DataError naming the file (and line, for line-based formats); with
``skip_bad`` the records and problems account for every input. Never another exception type.
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.formats import read_coco, read_seed, read_yolo
from edgeyolo.data.records import Split
from edgeyolo.errors import DataError

from .conftest import write_image

NC = 3
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that has no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images plus bad ones: truncated, not an image, empty, zero-size."""
    root = tmp_path_factory.mktemp("fuzz_images")
    write_image(root / "good.png", 40, 30)
    write_image(root / "tall.png", 20, 50)
    good = (root / "good.png").read_bytes()
    (root / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "header.png").write_bytes(good[:20])
    (root / "text.png").write_bytes(b"this is not an image\n")
    (root / "empty.png").write_bytes(b"")
    (root / "zero.png").write_bytes(_png_header_only(0, 0))
    (root / "zerow.png").write_bytes(_png_header_only(0, 10))
    return root


IMAGE_NAMES = ["good.png", "tall.png", "trunc.png", "header.png", "text.png", "empty.png"]
IMAGE_NAMES += ["zero.png", "zerow.png", "missing.png"]

number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 60),
    st.floats(-5, 60),
    st.sampled_from(["nan", "inf", "-0", "1e400", "x", "", "3.5", "0x10"]),
)
cls_text = st.one_of(
    st.integers(-2, NC + 1).map(str),
    st.sampled_from(["1.0", "1.5", "a", "", "nan", "1e30"]),
)
text_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
)  # anything encodable


def _num(v) -> str:
    return v if isinstance(v, str) else repr(v)


seed_box = st.builds(
    lambda xs, c: ",".join([*(_num(x) for x in xs), c]),
    st.lists(number, min_size=3, max_size=5),
    cls_text,
)
seed_line = st.one_of(
    text_line,
    st.builds(
        lambda name, boxes, sep: sep.join([name, *boxes]),
        st.sampled_from(IMAGE_NAMES),
        st.lists(seed_box, max_size=3),
        st.sampled_from([" ", "  ", "\t"]),
    ),
)


def _nonempty_lines(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8")
    return [i for i, raw in enumerate(text.splitlines(), 1) if raw.split()]


def _assert_records_valid(split: Split) -> None:
    for r in split.records:
        assert r.width > 0 and r.height > 0, r
        b = r.boxes
        assert b.dtype == np.float32 and r.classes.dtype == np.int64
        assert np.isfinite(b).all()
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all(), b
        assert (b[:, 2] <= r.width).all() and (b[:, 3] <= r.height).all(), b
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), b
        assert ((r.classes >= 0) & (r.classes < NC)).all(), r.classes


def _assert_names(error: DataError, file: Path, lines: list[int] | None) -> None:
    assert error.file == str(file), (error.file, file)
    assert str(file) in str(error)
    if lines is not None:
        assert error.line in lines, (error.line, lines)
        assert f"{file}:{error.line}:" in str(error)


def _counter(path: Path) -> Path:
    """A fresh file name per example (hypothesis reuses the module-scoped folder)."""
    n = len(list(path.parent.glob(f"{path.stem}_*{path.suffix}")))
    return path.with_name(f"{path.stem}_{n}{path.suffix}")


# ----------------------------------------------------------------------------- seed txt
@FUZZ
@given(lines=st.lists(seed_line, max_size=6), skip_bad=st.booleans())
def test_fuzz_seed(image_dir: Path, lines: list[str], skip_bad: bool) -> None:
    ann = _counter(image_dir / "seed.txt")
    ann.write_text("\n".join(lines), encoding="utf-8")
    numbered = _nonempty_lines(ann)
    try:
        split = read_seed(ann, num_classes=NC, skip_bad=skip_bad)
    except DataError as e:
        assert not skip_bad, e
        _assert_names(e, ann, numbered)
        return
    _assert_records_valid(split)
    assert len(split.records) + len(split.problems) == len(numbered)
    assert len({p.line for p in split.problems}) == len(split.problems)
    for p in split.problems:
        assert p.file == str(ann) and p.line in numbered


# ----------------------------------------------------------------------------- YOLO folders
yolo_line = st.one_of(
    text_line,
    st.builds(
        lambda c, xs: " ".join([c, *(_num(x) for x in xs)]),
        cls_text,
        st.lists(st.one_of(number, st.floats(-0.5, 1.5), st.floats(0, 1)), min_size=3, max_size=6),
    ),
)


@FUZZ
@given(
    files=st.lists(
        st.tuples(st.sampled_from(IMAGE_NAMES[:-1]), st.none() | st.lists(yolo_line, max_size=5)),
        min_size=1,
        max_size=4,
    ),
    skip_bad=st.booleans(),
)
def test_fuzz_yolo(image_dir: Path, files, skip_bad: bool) -> None:
    folder = _counter(image_dir / "yolo" / "set")
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    lines_of: dict[Path, list[int]] = {}
    for k, (name, lines) in enumerate(files):
        image = images / f"{k}_{name}"
        image.write_bytes((image_dir / name).read_bytes())
        if lines is not None:
            label = labels / f"{image.stem}.txt"
            label.write_text("\n".join(lines), encoding="utf-8")
            lines_of[label] = _nonempty_lines(label)
    try:
        split = read_yolo(images, num_classes=NC, skip_bad=skip_bad)
    except DataError as e:
        assert not skip_bad, e
        file = Path(e.file)
        if file.parent == labels:
            _assert_names(e, file, lines_of[file])
        else:
            assert file.parent == images and e.line is None, e
            _assert_names(e, file, None)
        return
    _assert_records_valid(split)
    # a bad line leaves out its whole image, with one problem naming file and line
    assert len(split.records) + len(split.problems) == len(files)
    for p in split.problems:
        file = Path(p.file)
        assert p.line in lines_of[file] if file.parent == labels else file.parent == images, p


# ----------------------------------------------------------------------------- COCO
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 60) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
coco_image = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {"id": st.integers(0, 3) | json_value, "file_name": st.sampled_from(IMAGE_NAMES)},
        optional={"width": st.sampled_from([40, 41, None]), "height": st.sampled_from([30, 0])},
    ),
)
coco_ann = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {
            "image_id": st.integers(0, 4) | json_value,
            "category_id": st.integers(0, 4) | json_value,
            "bbox": st.lists(number.filter(lambda v: not isinstance(v, str)), max_size=5)
            | json_value,
        },
        optional={"iscrowd": st.sampled_from([0, 1]), "id": st.integers(0, 9)},
    ),
)
coco_cat = st.one_of(
    json_value, st.fixed_dictionaries({"id": st.integers(0, 4), "name": st.text(max_size=4)})
)


@FUZZ
@given(
    doc=st.one_of(
        json_value,
        st.fixed_dictionaries(
            {
                "images": st.lists(coco_image, max_size=4),
                "annotations": st.lists(coco_ann, max_size=5),
                "categories": st.lists(coco_cat, min_size=1, max_size=3),
            }
        ),
    ),
    raw=st.none() | text_line,
    skip_bad=st.booleans(),
)
def test_fuzz_coco(image_dir: Path, doc, raw: str | None, skip_bad: bool) -> None:
    ann = _counter(image_dir / "coco.json")
    ann.write_text(json.dumps(doc) if raw is None else raw, encoding="utf-8")
    try:
        split, names = read_coco(ann, num_classes=None, skip_bad=skip_bad)
    except DataError as e:
        _assert_names(e, ann, None)
        return
    n = len(names)
    for r in split.records:
        assert ((r.classes >= 0) & (r.classes < n)).all()
    _assert_records_valid(Split([r for r in split.records if not len(r.classes)]))
    for r in split.records:
        b = r.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= r.width).all() and (b[:, 2] > b[:, 0]).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= r.height).all() and (b[:, 3] > b[:, 1]).all()
    for p in split.problems:
        assert p.file == str(ann)
    # each image entry gives one record or one problem; unknown-image annotations one problem each
    per_image = [p for p in split.problems if "refers to unknown image id" not in p.reason]
    assert len(split.records) + len(per_image) == len(doc["images"])


# ----------------------------------------------------------------------------- the loader
def _iterate_with_timeout(loader: DataLoader, timeout: float = 60.0) -> tuple[int, BaseException]:
    result: dict = {}

    def work() -> None:
        n = 0
        try:
            for images, _targets, _idx in loader:
                n += len(images)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e
        result["n"] = n

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the DataLoader hung for {timeout} s"
    return result["n"], result.get("error")


@pytest.mark.parametrize("skip_bad", [False, True])
def test_loader_with_a_worker_never_hangs_on_corrupt_images(
    tmp_path: Path, image_dir: Path, skip_bad: bool
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("good.png", "tall.png", "trunc.png", "text.png", "empty.png", "zero.png"):
        (images / name).write_bytes((image_dir / name).read_bytes())
    try:
        split = read_yolo(images, num_classes=NC, skip_bad=skip_bad)
    except DataError as e:
        assert not skip_bad
        assert Path(e.file).name in {"text.png", "empty.png", "zero.png", "trunc.png"}, e
        return
    bad = {Path(p.file).name for p in split.problems}
    assert {"text.png", "empty.png"} <= bad, split.problems
    kept = {r.path.name for r in split.records}
    assert kept | bad == {p.name for p in images.iterdir()}
    loader = DataLoader(
        DetectionDataset(split.records, img_size=64),
        batch_size=2,
        num_workers=1,
        collate_fn=collate,
    )
    n, error = _iterate_with_timeout(loader)
    if "trunc.png" in kept:  # the header reads fine: the pixels fail in the worker
        assert isinstance(error, DataError) and "trunc.png" in str(error), error
    else:
        assert error is None and n == len(split.records)
