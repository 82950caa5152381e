"""COCO detection JSON: read and write (see :mod:`edgeyolo.data.formats` for the rules)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeyolo.data._checks import (
    check_box,
    image_size,
    make_record,
    read_text,
    relative_path,
    skip_or_raise,
)
from edgeyolo.data.records import ImageRecord, Split
from edgeyolo.errors import DataError


def _coco_image(entry: Any, root: Path, file: Path) -> tuple[int, Path, Any, Any]:
    if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
        raise DataError(f"image entry {str(entry)[:60]} lacks 'id' or 'file_name'", file=file)
    if not isinstance(entry["id"], Hashable):
        raise DataError(f"image entry {str(entry)[:60]}: 'id' is not a number or string", file=file)
    return entry["id"], root / str(entry["file_name"]), entry.get("width"), entry.get("height")


def _coco_record(
    image: tuple[int, Path, Any, Any],
    anns: list[dict],
    cat_map: dict[Any, int],
    num_classes: int | None,
    file: Path,
) -> ImageRecord:
    image_id, image_path, json_w, json_h = image
    what = f"image id {image_id} ({image_path.name})"
    width, height = image_size(image_path, where=(file, None))
    if (json_w, json_h) != (None, None) and (json_w, json_h) != (width, height):
        raise DataError(
            f"{what}: JSON says {json_w}x{json_h} but the image is {width}x{height}", file=file
        )
    boxes, classes = [], []
    for ann in anns:
        if ann.get("iscrowd", 0):
            continue  # crowd regions are not objects to detect (COCO convention)
        ann_what = f"{what}, annotation id {ann.get('id')}"
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError) as e:
            raise DataError(f"{ann_what}: bbox {bbox!r} is not 4 numbers", file=file) from e
        if not isinstance(ann.get("category_id"), Hashable) or ann["category_id"] not in cat_map:
            raise DataError(
                f"{ann_what}: unknown category_id {ann.get('category_id')!r}", file=file
            )
        cls = cat_map[ann["category_id"]]
        box = check_box(
            (x, y, x + w, y + h), cls, width, height, num_classes, where=(file, None), what=ann_what
        )
        boxes.append(box)
        classes.append(cls)
    return make_record(image_path, boxes, classes, width, height)


def read_coco(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    num_classes: int | None = None,
    skip_bad: bool = False,
) -> tuple[Split, tuple[str, ...]]:
    """Read a COCO detection JSON. Returns the split and the class names.

    Category ids map to contiguous class ids 0..C-1 in sorted id order. Image ``file_name`` is
    relative to ``images_root`` (default: the JSON's folder). ``iscrowd`` annotations are ignored.
    JSON has no useful line numbers: errors other than syntax errors give ``line=None`` and name
    the image and annotation ids instead.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else path.parent
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", file=path, line=e.lineno) from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(
            "not a COCO detection file: needs lists 'images', 'annotations' and 'categories'",
            file=path,
        )
    try:
        cats = sorted(data["categories"], key=lambda c: c["id"])
        cat_map = {c["id"]: i for i, c in enumerate(cats)}
        names = tuple(str(c["name"]) for c in cats)
    except (KeyError, TypeError) as e:
        raise DataError("each category needs an 'id' and a 'name'", file=path) from e

    split = Split([])
    images: dict[Any, tuple[int, Path, Any, Any]] = {}
    for entry in data["images"]:
        try:
            image = _coco_image(entry, root, path)
            if image[0] in images:
                raise DataError(f"duplicate image id {image[0]!r}", file=path)
            images[image[0]] = image
        except DataError as e:
            skip_or_raise(split, e, skip_bad)
    per_image: dict[Any, list[dict]] = {k: [] for k in images}
    for ann in data["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(ann, dict) and isinstance(image_id, Hashable) and image_id in per_image:
            per_image[image_id].append(ann)
        else:
            error = DataError(
                f"annotation {str(ann)[:60]} refers to unknown image id {image_id!r}", file=path
            )
            skip_or_raise(split, error, skip_bad)
    for image_id, image in images.items():
        try:
            split.records.append(
                _coco_record(image, per_image[image_id], cat_map, num_classes, path)
            )
        except DataError as e:
            skip_or_raise(split, e, skip_bad)
    return split, names


def write_coco(records: Iterable[ImageRecord], names: Sequence[str], path: str | Path) -> None:
    """Write a COCO detection JSON: image ids from 1, category id = class id, bbox xywh pixels,
    ``area`` = w*h, ``iscrowd`` 0; ``file_name`` relative to the JSON's folder if inside it."""
    path = Path(path)
    images, annotations = [], []
    for image_id, r in enumerate(records, 1):
        name = relative_path(r.path, path.parent).as_posix()
        images.append({"id": image_id, "file_name": name, "width": r.width, "height": r.height})
        for (x1, y1, x2, y2), c in zip(r.boxes.astype(np.float64), r.classes, strict=True):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [round(x1, 4), round(y1, 4), round(w, 4), round(h, 4)],
                    "area": round(w * h, 4),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(names)]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(doc), encoding="utf-8")
