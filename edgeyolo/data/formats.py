"""Annotation formats: ``data.yaml``, the seed txt format, YOLO label folders and COCO JSON.

Every reader returns a :class:`~edgeyolo.data.records.Split` of ImageRecords with absolute image
paths, ``float32[N, 4]`` xyxy boxes in pixels of the original image and ``int64[N]`` class ids.
The three readers give identical records for the same data.

Validation is the same for every format. A bad input -- a malformed line, a number that is not a
number, an unknown class id, a box outside the image (more than 1 px: boxes within 1 px are
clipped), a box with zero or negative area, a missing or unreadable image -- raises
:class:`~edgeyolo.errors.DataError` naming the file and 1-based line. With ``skip_bad=True`` the
*whole image* the bad input belongs to is left out instead, and recorded as a
:class:`~edgeyolo.data.records.Problem` in ``Split.problems``; nothing is dropped silently.
Empty annotation files and images without boxes are valid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import yaml

from edgeyolo.data._checks import (
    BOX_SLACK,
    Where,
    check_box,
    float32_text,
    image_size,
    make_record,
    parse_class,
    read_text,
    relative_path,
    skip_or_raise,
)
from edgeyolo.data.coco import read_coco, write_coco
from edgeyolo.data.records import IMAGE_SUFFIXES, DatasetSpec, ImageRecord, Split
from edgeyolo.errors import DataError

__all__ = [
    "BOX_SLACK",
    "IMAGE_SUFFIXES",
    "image_size",
    "load_data_yaml",
    "read_coco",
    "read_seed",
    "read_split",
    "read_yolo",
    "write_coco",
    "write_seed",
    "write_yolo",
    "yolo_label_path",
]


# ----------------------------------------------------------------------------- data.yaml
def _yaml_key_line(text: str, key: str) -> int | None:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if getattr(k, "value", None) == key:
                return k.start_mark.line + 1
    return None


def load_data_yaml(path: str | Path) -> DatasetSpec:
    """Parse a ``data.yaml``: ``path`` (root, optional), ``train``, ``val``, ``test``, ``names``.

    ``path`` is relative to the yaml's folder (default: that folder); split entries are relative
    to the root. ``names`` is a list or an ``{id: name}`` dict with ids 0..C-1.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.yaml")) + sorted(
            p.name for p in path.glob("*.yml")
        )
        hint = f"; it holds {', '.join(inside)}" if inside else ""
        raise DataError(f"is a folder: give the data.yaml file of the data set{hint}", file=path)
    if not path.is_file():
        raise DataError("data.yaml not found", file=path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        raise DataError(f"invalid YAML: {reason}", file=path, line=line) from e
    if not isinstance(data, dict):
        raise DataError("expected a mapping with keys train, val and names", file=path)
    missing = [k for k in ("train", "val", "names") if data.get(k) in (None, "")]
    if missing:
        raise DataError(f"missing key(s) {', '.join(missing)}", file=path)

    def fail(key: str, message: str) -> DataError:
        return DataError(message, file=path, line=_yaml_key_line(text, key))

    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise fail("names", f"names ids must be 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise fail("names", "names must be a non-empty list or an {id: name} mapping")
    if "nc" in data and data["nc"] != len(names):
        raise fail("nc", f"nc is {data['nc']} but {len(names)} names are given")
    for key in ("train", "val", "test"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise fail(key, f"{key} must be one folder or file (a string), got {data[key]!r}")
    root = Path(str(data.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    return DatasetSpec(
        root=Path(os.path.abspath(root)),
        train=data["train"],
        val=data["val"],
        names=tuple(str(n) for n in names),
        test=data.get("test") or None,
    )


def read_split(spec: DatasetSpec, split: str = "train", *, skip_bad: bool = False) -> Split:
    """Read one split of a dataset: a YOLO image folder, a seed ``.txt`` or a COCO ``.json``."""
    entries = {"train": spec.train, "val": spec.val, "test": spec.test}
    if split not in entries:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if entries[split] is None:
        raise DataError(f"the dataset has no {split!r} split", file=spec.root)
    p = Path(entries[split])
    p = p if p.is_absolute() else spec.root / p
    nc = spec.num_classes
    if p.is_dir():
        return read_yolo(p, num_classes=nc, skip_bad=skip_bad)
    if not p.exists():
        raise DataError(f"{split} split not found", file=p)
    if p.suffix.lower() == ".txt":
        return read_seed(p, num_classes=nc, skip_bad=skip_bad)
    if p.suffix.lower() == ".json":
        result, names = read_coco(p, num_classes=nc, skip_bad=skip_bad)
        if len(names) != nc:
            raise DataError(f"{len(names)} COCO categories but data.yaml names {nc}", file=p)
        return result
    raise DataError("expected an image folder, a seed .txt or a COCO .json", file=p)


# ----------------------------------------------------------------------------- seed txt
def _parse_seed_line(
    fields: list[str], folder: Path, num_classes: int | None, where: Where
) -> ImageRecord:
    file, line = where
    image = folder / fields[0]  # an absolute fields[0] replaces folder
    boxes, classes = [], []
    for k, token in enumerate(fields[1:], 1):
        parts = token.split(",")
        if len(parts) != 5:
            hint = " (image paths may not contain spaces)" if len(parts) == 1 else ""
            raise DataError(
                f"box {k} {token!r}: expected x1,y1,x2,y2,cls{hint}", file=file, line=line
            )
        try:
            box, cls = [float(v) for v in parts[:4]], parse_class(parts[4])
        except ValueError as e:
            raise DataError(f"box {k} {token!r}: not a number", file=file, line=line) from e
        boxes.append(box)
        classes.append(cls)
    width, height = image_size(image, where=where)
    checked = [
        check_box(b, c, width, height, num_classes, where=where, what=f"box {k}")
        for k, (b, c) in enumerate(zip(boxes, classes, strict=True), 1)
    ]
    return make_record(image, checked, classes, width, height)


def read_seed(path: str | Path, *, num_classes: int | None = None, skip_bad: bool = False) -> Split:
    """Read the seed format: ``image x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...`` per line.

    Pixels, origin top-left; image paths are relative to the annotation file's folder or
    absolute and may not contain spaces. Blank lines are ignored.
    """
    path = Path(path)
    split = Split([])
    for lineno, raw in enumerate(read_text(path).splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        try:
            split.records.append(_parse_seed_line(fields, path.parent, num_classes, (path, lineno)))
        except DataError as e:
            skip_or_raise(split, e, skip_bad)
    return split


def write_seed(records: Iterable[ImageRecord], path: str | Path) -> None:
    """Write records in the seed format; image paths relative to ``path``'s folder if inside it."""
    path = Path(path)
    lines = []
    for r in records:
        image = relative_path(r.path, path.parent).as_posix()
        if any(c.isspace() for c in image):
            raise DataError("the seed format cannot hold image paths with spaces", file=r.path)
        boxes = [
            ",".join([*(float32_text(v) for v in box), str(int(c))])
            for box, c in zip(r.boxes, r.classes, strict=True)
        ]
        lines.append(" ".join([image, *boxes]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ----------------------------------------------------------------------------- YOLO folders
def yolo_label_path(image: str | Path) -> Path:
    """The label file of an image: the last ``images`` folder in its path becomes ``labels``,
    the suffix ``.txt`` (``ds/images/train/a.jpg`` -> ``ds/labels/train/a.txt``); without an
    ``images`` folder the label file lies beside the image."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_yolo_image(image: Path, num_classes: int | None) -> ImageRecord:
    width, height = image_size(image)
    label = yolo_label_path(image)
    if not label.exists():
        return make_record(image, [], [], width, height)
    boxes, classes = [], []
    for lineno, raw in enumerate(read_text(label).splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        where = (label, lineno)
        if len(fields) != 5:
            raise DataError(
                f"expected 5 fields 'cls cx cy w h', got {len(fields)}", file=label, line=lineno
            )
        try:
            cls, (cx, cy, w, h) = parse_class(fields[0]), [float(v) for v in fields[1:]]
        except ValueError as e:
            raise DataError(f"not a number in {raw.strip()!r}", file=label, line=lineno) from e
        box = (
            (cx - w / 2) * width,
            (cy - h / 2) * height,
            (cx + w / 2) * width,
            (cy + h / 2) * height,
        )
        boxes.append(check_box(box, cls, width, height, num_classes, where=where))
        classes.append(cls)
    return make_record(image, boxes, classes, width, height)


def read_yolo(
    images_dir: str | Path, *, num_classes: int | None = None, skip_bad: bool = False
) -> Split:
    """Read a YOLO folder: every image under ``images_dir`` (recursively, sorted) with its label
    file (see :func:`yolo_label_path`) of ``cls cx cy w h`` lines normalised to 0..1. An absent
    or empty label file means an image without objects."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError("image folder not found", file=images_dir)
    images = sorted(
        p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    split = Split([])
    for image in images:
        try:
            split.records.append(_read_yolo_image(image, num_classes))
        except DataError as e:
            skip_or_raise(split, e, skip_bad)
    return split


def write_yolo(records: Iterable[ImageRecord], labels_dir: str | Path) -> None:
    """Write ``<labels_dir>/<image stem>.txt`` for each record (an empty file if no boxes)."""
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Path] = {}
    for r in records:
        if r.path.stem in seen:
            raise DataError(
                f"two images named {r.path.stem!r} ({seen[r.path.stem]}) would "
                "share one label file",
                file=r.path,
            )
        seen[r.path.stem] = r.path
        lines = []
        for (x1, y1, x2, y2), c in zip(r.boxes.astype(np.float64), r.classes, strict=True):
            cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
            w, h = (x2 - x1) / r.width, (y2 - y1) / r.height
            lines.append(f"{int(c)} {cx:.8g} {cy:.8g} {w:.8g} {h:.8g}\n")
        (labels_dir / f"{r.path.stem}.txt").write_text("".join(lines), encoding="utf-8")
