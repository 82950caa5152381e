"""Annotation formats: round trips, cross-format equality, data.yaml, and bad-input reporting."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeyolo.data.formats import (
    load_data_yaml,
    read_coco,
    read_seed,
    read_split,
    read_yolo,
    write_coco,
    write_seed,
    write_yolo,
    yolo_label_path,
)
from edgeyolo.data.records import ImageRecord, Problem
from edgeyolo.errors import DataError

from .conftest import NAMES, assert_same_records, write_image


# ----------------------------------------------------------------------------- round trips
def test_seed_round_trip_is_exact_and_relative(sample_records, tmp_path):
    ann = tmp_path / "ds" / "train.txt"
    write_seed(sample_records, ann)
    lines = ann.read_text().splitlines()
    assert lines[0] == "images/train/a.png 1.25,2.5,30.75,40.125,0 10,11,63.5,47,2"
    assert lines[2] == "images/train/c.png"
    split = read_seed(ann, num_classes=3)
    assert split.problems == []
    assert_same_records(split.records, sample_records, atol=0.0)


def test_seed_keeps_absolute_paths_outside_its_folder(sample_records, tmp_path):
    ann = tmp_path / "elsewhere" / "list.txt"
    write_seed(sample_records, ann)
    assert ann.read_text().split()[0] == str(sample_records[0].path)
    assert_same_records(read_seed(ann).records, sample_records, atol=0.0)


def test_yolo_round_trip(sample_records, tmp_path):
    write_yolo(sample_records, tmp_path / "ds" / "labels" / "train")
    assert (tmp_path / "ds" / "labels" / "train" / "c.txt").read_text() == ""
    split = read_yolo(tmp_path / "ds" / "images" / "train", num_classes=3)
    assert split.problems == []
    assert_same_records(split.records, sample_records)


def test_coco_round_trip(sample_records, tmp_path):
    path = tmp_path / "ds" / "train.json"
    write_coco(sample_records, NAMES, path)
    doc = json.loads(path.read_text())
    assert doc["images"][0]["file_name"] == "images/train/a.png"
    ann = doc["annotations"][0]
    assert ann["bbox"] == [1.25, 2.5, 29.5, 37.625] and ann["iscrowd"] == 0
    assert ann["area"] == pytest.approx(29.5 * 37.625) and ann["category_id"] == 0
    split, names = read_coco(path)
    assert names == NAMES and split.problems == []
    assert_same_records(split.records, sample_records)


def test_all_three_readers_agree(sample_records, tmp_path):
    ds = tmp_path / "ds"
    write_seed(sample_records, ds / "train.txt")
    write_yolo(sample_records, ds / "labels" / "train")
    write_coco(sample_records, NAMES, ds / "train.json")
    seed = read_seed(ds / "train.txt").records
    yolo = read_yolo(ds / "images" / "train").records
    coco = read_coco(ds / "train.json")[0].records
    assert_same_records(yolo, seed)
    assert_same_records(coco, seed)


def test_coco_category_ids_become_contiguous_in_sorted_order(sample_records, tmp_path):
    path = tmp_path / "ds" / "c.json"
    write_coco(sample_records, NAMES, path)
    doc = json.loads(path.read_text())
    remap = {0: 7, 1: 3, 2: 42}  # sorted ids 3, 7, 42 -> classes 0, 1, 2
    doc["categories"] = [{"id": remap[c["id"]], "name": c["name"]} for c in doc["categories"]]
    doc["categories"].reverse()
    for ann in doc["annotations"]:
        ann["category_id"] = remap[ann["category_id"]]
    doc["annotations"].append(dict(doc["annotations"][0], id=99, iscrowd=1))  # ignored
    path.write_text(json.dumps(doc))
    split, names = read_coco(path)
    assert names == ("dog", "cat", "bird")
    assert [r.classes.tolist() for r in split.records] == [[1, 2], [0], []]


@settings(max_examples=25, deadline=None)
@given(
    size=st.tuples(st.integers(8, 4000), st.integers(8, 4000)),
    frac=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
)
def test_yolo_and_coco_keep_boxes_on_large_images(size, frac):
    width, height = size
    x1, x2 = sorted([frac[0] * (width - 2), frac[1] * (width - 2)])
    y1, y2 = sorted([frac[2] * (height - 2), frac[3] * (height - 2)])
    box = np.float32([[x1, y1, x2 + 2, y2 + 2]])
    with tempfile.TemporaryDirectory() as tmp:
        image = write_image(Path(tmp) / "images" / "im.png", width, height)
        records = [ImageRecord(image, box, [0], width, height)]
        write_yolo(records, Path(tmp) / "labels")
        write_coco(records, ["x"], Path(tmp) / "a.json")
        assert_same_records(read_yolo(Path(tmp) / "images").records, records)
        assert_same_records(read_coco(Path(tmp) / "a.json")[0].records, records)


def test_empty_seed_file_and_missing_label_files_are_valid(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    assert read_seed(tmp_path / "empty.txt").records == []
    write_image(tmp_path / "images" / "x.png", 10, 12)
    (record,) = read_yolo(tmp_path / "images").records
    assert record.boxes.shape == (0, 4) and (record.width, record.height) == (10, 12)


def test_boxes_within_one_pixel_are_clipped(tmp_path):
    write_image(tmp_path / "a.png", 64, 48)
    (tmp_path / "a.txt").write_text("a.png -0.5,0,64.8,48.9,1\n")
    (record,) = read_seed(tmp_path / "a.txt").records
    np.testing.assert_array_equal(record.boxes, [[0, 0, 64, 48]])


def test_yolo_label_path():
    assert yolo_label_path("/d/images/train/a.jpg") == Path("/d/labels/train/a.txt")
    assert yolo_label_path("/images/d/images/x/b.png") == Path("/images/d/labels/x/b.txt")
    assert yolo_label_path("/d/pics/images.png") == Path("/d/pics/images.txt")


def test_writers_refuse_what_they_cannot_represent(tmp_path):
    spaced = ImageRecord(write_image(tmp_path / "my image.png", 4, 4), [], [], 4, 4)
    with pytest.raises(DataError, match="spaces"):
        write_seed([spaced], tmp_path / "s.txt")
    twins = [ImageRecord(tmp_path / d / "x.png", [], [], 4, 4) for d in ("a", "b")]
    with pytest.raises(DataError, match="share one label file"):
        write_yolo(twins, tmp_path / "labels")


# ----------------------------------------------------------------------------- data.yaml
def test_data_yaml_and_read_split_for_each_format(sample_records, tmp_path):
    ds = tmp_path / "ds"
    write_seed(sample_records, ds / "train.txt")
    write_yolo(sample_records, ds / "labels" / "train")
    write_coco(sample_records, NAMES, ds / "train.json")
    yaml_path = tmp_path / "cfg" / "data.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text(
        "path: ../ds\ntrain: images/train\nval: train.txt\ntest: train.json\n"
        "names: {0: cat, 1: dog, 2: bird}\n"
    )
    spec = load_data_yaml(yaml_path)
    assert spec.root == ds and spec.names == NAMES and spec.num_classes == 3
    for split in ("train", "val", "test"):
        assert_same_records(read_split(spec, split).records, sample_records)


def test_data_yaml_defaults_root_to_its_folder(tmp_path):
    (tmp_path / "data.yaml").write_text("train: a\nval: b\nnames: [x, y]\n")
    spec = load_data_yaml(tmp_path / "data.yaml")
    assert spec.root == tmp_path and spec.test is None and spec.names == ("x", "y")
    with pytest.raises(DataError, match="no 'test' split"):
        read_split(spec, "test")
    with pytest.raises(DataError, match="not found") as info:
        read_split(spec, "train")
    assert info.value.file == str(tmp_path / "a")


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("train: a\nnames: [x]\n", None, "missing key.*val"),
        ("train: a\nval: b\nnames: [x\n", 4, "invalid YAML"),
        ("train: a\nval: b\nnames: {0: x, 2: y}\n", 3, "names ids must be 0..1"),
        ("train: a\nval: b\nnc: 3\nnames: [x]\n", 3, "nc is 3"),
        ("train: [a, b]\nval: b\nnames: [x]\n", 1, "train must be one folder"),
        ("- just\n- a list\n", None, "expected a mapping"),
    ],
    ids=["missing-key", "syntax", "names-ids", "nc", "train-list", "not-mapping"],
)
def test_bad_data_yaml_names_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_data_yaml(path)
    assert (info.value.file, info.value.line) == (str(path), line)


def test_missing_data_yaml(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        load_data_yaml(tmp_path / "nope.yaml")
    assert info.value.file == str(tmp_path / "nope.yaml")


def test_a_folder_given_as_data_yaml_is_named_with_what_it_holds(tmp_path):
    (tmp_path / "data.yaml").write_text("train: a\nval: a\nnames: [x]\n")
    with pytest.raises(DataError, match=r"is a folder: give the data.yaml .* holds data.yaml"):
        load_data_yaml(tmp_path)


def test_read_split_checks_class_ids_against_names(sample_records, tmp_path):
    write_seed(sample_records, tmp_path / "ds" / "train.txt")
    (tmp_path / "data.yaml").write_text("path: ds\ntrain: train.txt\nval: x\nnames: [a, b]\n")
    spec = load_data_yaml(tmp_path / "data.yaml")
    with pytest.raises(DataError, match=r"unknown class id 2, expected \[0, 2\)") as info:
        read_split(spec)
    assert (info.value.file, info.value.line) == (str(tmp_path / "ds" / "train.txt"), 1)
    split = read_split(spec, skip_bad=True)
    assert [r.path.name for r in split.records] == ["b.png", "c.png"]
    assert len(split.problems) == 1


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def images(tmp_path: Path) -> Path:
    """a.png (64x48), b.png (50x70), c.png (40x40) and bad.png (not an image)."""
    for name, w, h in (("a", 64, 48), ("b", 50, 70), ("c", 40, 40)):
        write_image(tmp_path / "images" / f"{name}.png", w, h)
    (tmp_path / "images" / "bad.png").write_bytes(b"this is not a PNG file")
    return tmp_path / "images"


def _expect(split_or_raise, file: Path, line: int | None, match: str, kept: list[str]) -> None:
    """Raise mode names file and line; skip mode keeps the others and records one Problem."""
    with pytest.raises(DataError, match=match) as info:
        split_or_raise(False)
    assert (info.value.file, info.value.line) == (str(file), line)
    split = split_or_raise(True)
    assert sorted(r.path.name for r in split.records) == kept
    assert split.problems == [Problem(str(file), line, info.value.reason)]


SEED_CASES = {
    "malformed": ("b.png 1,2,3,4", "expected x1,y1,x2,y2,cls"),
    "non-number": ("b.png 1,2,x,4,0", "not a number"),
    "class-too-big": ("b.png 1,2,3,4,3", "unknown class id 3"),
    "class-negative": ("b.png 1,2,3,4,-1", "unknown class id -1"),
    "class-fraction": ("b.png 1,2,3,4,1.5", "not a number"),
    "outside": ("b.png 1,2,3,4,0 1,2,52,4,0", r"box 2 \(1, 2, 52, 4\) lies outside the 50x70"),
    "zero-area": ("b.png 5,5,5,9,0", "zero or negative area"),
    "infinite": ("b.png 1,2,inf,4,0", "not finite"),
    "missing-image": ("nope.png 1,2,3,4,0", "image not found"),
    "corrupt-image": ("bad.png 1,1,2,2,0", "cannot read image"),
    "space-in-path": ("my b.png 1,1,2,2,0", "may not contain spaces"),
}


@pytest.mark.parametrize("case", SEED_CASES)
def test_seed_bad_input(images, case):
    bad, match = SEED_CASES[case]
    ann = images / "ann.txt"
    ann.write_text(f"a.png 1,2,30,40,0\n{bad}\n\nc.png\n")
    _expect(
        lambda skip: read_seed(ann, num_classes=3, skip_bad=skip),
        ann,
        2,
        match,
        ["a.png", "c.png"],
    )


YOLO_CASES = {
    "malformed": ("0 0.5 0.5 0.1", "expected 5 fields"),
    "non-number": ("0 0.5 abc 0.1 0.1", "not a number"),
    "unknown-class": ("5 0.5 0.5 0.1 0.1", "unknown class id 5"),
    "outside": ("0 1.2 0.5 0.2 0.2", "outside the 50x70 image"),
    "zero-area": ("0 0.5 0.5 0 0.1", "zero or negative area"),
}


@pytest.mark.parametrize("case", YOLO_CASES)
def test_yolo_bad_label_line(images, case):
    bad, match = YOLO_CASES[case]
    (images / "bad.png").unlink()
    labels = images.parent / "labels"
    labels.mkdir()
    label = labels / "b.txt"
    label.write_text(f"1 0.5 0.5 0.2 0.2\n{bad}\n")
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    _expect(
        lambda skip: read_yolo(images, num_classes=3, skip_bad=skip),
        label,
        2,
        match,
        ["a.png", "c.png"],
    )


def test_yolo_corrupt_image_names_the_image(images):
    bad = images / "bad.png"
    _expect(
        lambda skip: read_yolo(images, skip_bad=skip),
        bad,
        None,
        "cannot read image",
        ["a.png", "b.png", "c.png"],
    )


def _coco_doc(images: Path) -> dict:
    records = [
        ImageRecord(images / "a.png", [[1, 2, 30, 40]], [0], 64, 48),
        ImageRecord(images / "b.png", [[1, 2, 30, 40]], [1], 50, 70),
        ImageRecord(images / "c.png", [], [], 40, 40),
    ]
    write_coco(records, NAMES, images / "ann.json")
    return json.loads((images / "ann.json").read_text())


def _break_ann(key, value):
    def edit(doc):
        doc["annotations"][1][key] = value

    return edit


COCO_CASES = {
    "unknown-category": (_break_ann("category_id", 9), "unknown category_id 9"),
    "outside": (_break_ann("bbox", [40, 2, 20, 5]), "outside the 50x70 image"),
    "zero-area": (_break_ann("bbox", [4, 2, 0, 5]), "zero or negative area"),
    "non-number": (_break_ann("bbox", [4, "x", 1, 5]), "is not 4 numbers"),
    "missing-image": (lambda d: d["images"][1].update(file_name="nope.png"), "image not found"),
    "corrupt-image": (lambda d: d["images"][1].update(file_name="bad.png"), "cannot read image"),
    "wrong-size": (lambda d: d["images"][1].update(width=51), "JSON says 51x70"),
}


@pytest.mark.parametrize("case", COCO_CASES)
def test_coco_bad_input_skips_the_image(images, case):
    edit, match = COCO_CASES[case]
    doc = _coco_doc(images)
    edit(doc)
    path = images / "ann.json"
    path.write_text(json.dumps(doc))
    _expect(
        lambda skip: read_coco(path, num_classes=3, skip_bad=skip)[0],
        path,
        None,
        match,
        ["a.png", "c.png"],
    )


def test_coco_annotation_of_unknown_image(images):
    doc = _coco_doc(images)
    doc["annotations"][0]["image_id"] = 77
    path = images / "ann.json"
    path.write_text(json.dumps(doc))
    _expect(
        lambda skip: read_coco(path, skip_bad=skip)[0],
        path,
        None,
        "unknown image id 77",
        ["a.png", "b.png", "c.png"],
    )


def test_coco_duplicate_image_id(images):
    doc = _coco_doc(images)
    doc["images"][2]["id"] = doc["images"][0]["id"]
    path = images / "ann.json"
    path.write_text(json.dumps(doc))
    _expect(
        lambda skip: read_coco(path, skip_bad=skip)[0],
        path,
        None,
        "duplicate image id 1",
        ["a.png", "b.png"],
    )


def test_coco_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(DataError, match="invalid JSON") as info:
        read_coco(path, skip_bad=True)  # a broken file cannot be skipped around
    assert (info.value.file, info.value.line) == (str(path), 3)
    path.write_text('{"images": []}')
    with pytest.raises(DataError, match="not a COCO detection file"):
        read_coco(path)
