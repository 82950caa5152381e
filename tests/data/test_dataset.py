"""Letterbox math, transforms that keep boxes on their objects, the Dataset and collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from edgeyolo.config import AugmentConfig
from edgeyolo.data.dataset import DetectionDataset, collate
from edgeyolo.data.records import ImageRecord
from edgeyolo.data.transforms import (
    boxes_from_letterbox,
    boxes_to_letterbox,
    eval_transforms,
    letterbox,
    letterbox_params,
    train_transforms,
)
from edgeyolo.errors import DataError

from .conftest import write_image


# ----------------------------------------------------------------------------- letterbox math
@pytest.mark.parametrize(
    ("w", "h", "size", "want"),
    [
        (640, 480, 416, (0.65, 0.0, 52.0)),
        (480, 640, 416, (0.65, 52.0, 0.0)),
        (100, 100, 416, (4.16, 0.0, 0.0)),
        (100, 51, 64, (0.64, 0.0, 15.0)),  # resized 64x33: 15 rows on top, 16 below
        (640, 480, (320, 640), (2 / 3, 106.0, 0.0)),  # (height, width): resized 427x320
    ],
)
def test_letterbox_params(w, h, size, want):
    assert letterbox_params(w, h, size) == pytest.approx(want, abs=1e-12)


def test_letterbox_places_the_resized_image():
    image = np.full((51, 100, 3), 7, np.uint8)
    out, params = letterbox(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and params[2] == 15.0
    assert (out[15:48] == 7).all()
    assert (out[:15] == 114).all() and (out[48:] == 114).all()
    gray, _ = letterbox(np.full((20, 10), 9, np.uint8), (8, 16), pad_value=0)
    assert gray.shape == (8, 16) and (gray[:, 6:10] == 9).all() and (gray[:, :6] == 0).all()


@pytest.mark.parametrize(("w", "h"), [(120, 80), (61, 97), (300, 301)])
def test_letterboxed_pixels_and_boxes_stay_aligned(w, h):
    image = np.full((h, w, 3), 230, np.uint8)
    x1, y1, x2, y2 = w // 4, h // 3, w // 4 + w // 3, h // 3 + h // 2
    image[y1:y2, x1:x2] = 0
    out, params = letterbox(image, 96)
    bx1, by1, bx2, by2 = boxes_to_letterbox(np.float32([[x1, y1, x2, y2]]), params)[0]
    dark = np.argwhere(out[:, :, 0] < 100)  # rows, cols darker than the padding (114)
    found = (dark[:, 1].min(), dark[:, 0].min(), dark[:, 1].max() + 1, dark[:, 0].max() + 1)
    np.testing.assert_allclose(found, (bx1, by1, bx2, by2), atol=1.0)


@settings(max_examples=50, deadline=None)
@given(
    w=st.integers(1, 2000),
    h=st.integers(1, 2000),
    size=st.sampled_from([32, 320, 416, 640, (256, 416)]),
    frac=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    use_torch=st.booleans(),
)
def test_letterbox_boxes_round_trip(w, h, size, frac, use_torch):
    xs, ys = sorted(frac[:2]), sorted(frac[2:])
    boxes = np.float32([[xs[0] * w, ys[0] * h, xs[1] * w, ys[1] * h]])
    params = letterbox_params(w, h, size)
    there = boxes_to_letterbox(torch.from_numpy(boxes) if use_torch else boxes, params)
    back = boxes_from_letterbox(there, params, width=w, height=h)
    assert type(back) is type(there)
    np.testing.assert_allclose(np.asarray(back), boxes, atol=1e-3, rtol=0)


def test_boxes_from_letterbox_clips_to_the_image():
    params = letterbox_params(100, 50, 100)  # pad_y = 25
    out = boxes_from_letterbox(np.float32([[-5, 0, 120, 30]]), params, width=100, height=50)
    np.testing.assert_allclose(out, [[0, 0, 100, 5]])


# ----------------------------------------------------------------------------- v2 transforms
def _sample(image: np.ndarray, boxes, labels):
    h, w = image.shape[:2]
    return (
        tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
        {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.tensor(labels),
        },
    )


def test_eval_transform_is_exactly_letterbox():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    boxes = [[1.5, 2.0, 30.25, 36.0], [0, 0, 53, 37]]
    want_image, params = letterbox(image, 64)
    want_boxes = boxes_to_letterbox(np.float32(boxes), params)
    for tf in (eval_transforms(64), train_transforms(64, AugmentConfig(enabled=False))):
        out, target = tf(*_sample(image, boxes, [4, 1]))
        assert out.dtype == torch.float32 and out.shape == (3, 64, 64)
        np.testing.assert_array_equal((out * 255).round().byte().permute(1, 2, 0), want_image)
        np.testing.assert_array_equal(target["boxes"], want_boxes)
        assert target["boxes"].canvas_size == (64, 64) and target["labels"].tolist() == [4, 1]


def _dark_rectangle_image() -> tuple[np.ndarray, list[float]]:
    image = np.full((80, 120, 3), 230, np.uint8)  # non-square: letterbox pads top and bottom
    image[20:50, 30:70] = 20
    return image, [30.0, 20.0, 70.0, 50.0]


@pytest.mark.parametrize("degrees", [0.0, 30.0])
def test_train_transform_moves_boxes_with_the_pixels(degrees):
    aug = AugmentConfig(scale=(0.6, 1.4), translate=0.2, degrees=degrees, hflip=0.5, vflip=0.5)
    tf = train_transforms(96, aug)
    image, box = _dark_rectangle_image()
    moved = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out, target = tf(*_sample(image, [box], [3]))
        assert out.shape == (3, 96, 96) and target["labels"].tolist() == [3]
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        moved.add(round(x1))
        dark = np.argwhere((out.mean(0) < 0.3).numpy())  # rows, cols of the rectangle
        assert len(dark) > 100
        assert dark[:, 1].min() >= x1 - 1.5 and dark[:, 1].max() + 1 <= x2 + 1.5
        assert dark[:, 0].min() >= y1 - 1.5 and dark[:, 0].max() + 1 <= y2 + 1.5
        area = (x2 - x1) * (y2 - y1)
        assert len(dark) >= area * (0.85 if degrees == 0 else 0.45)  # the box is not loose
    assert len(moved) > 4  # the augmentation did move things


def test_train_transform_drops_tiny_boxes_with_their_labels():
    aug = AugmentConfig(scale=(1.0, 1.0), translate=0.0, brightness=0, contrast=0, saturation=0)
    image = np.full((100, 100, 3), 200, np.uint8)
    _, target = train_transforms(96, aug)(
        *_sample(image, [[10, 10, 11, 50], [20, 20, 80, 80]], [3, 7])
    )
    assert target["labels"].tolist() == [7]
    np.testing.assert_allclose(target["boxes"], [[19.2, 19.2, 76.8, 76.8]], atol=1e-4)


# ----------------------------------------------------------------------------- Dataset
@pytest.fixture
def records(tmp_path):
    a = tmp_path / "a.png"
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:] = (10, 120, 250)
    Image.fromarray(rgb).save(a)
    b = tmp_path / "b.png"
    Image.fromarray(np.full((70, 50), 90, np.uint8)).save(b)  # grayscale file
    c = write_image(tmp_path / "c.png", 30, 30)
    return [
        ImageRecord(a, [[1, 2, 30, 40], [10, 11, 63.5, 47]], [0, 2], 64, 48),
        ImageRecord(b, [[0, 0, 50, 70]], [1], 50, 70),
        ImageRecord(c, np.zeros((0, 4)), [], 30, 30),
    ]


def test_dataset_items(records):
    ds = DetectionDataset(records, img_size=64)
    assert len(ds) == 3
    for i, r in enumerate(records):
        image, targets, index = ds[i]
        assert index == i and image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert targets.shape == (len(r.boxes), 5) and targets.dtype == torch.float32
        np.testing.assert_array_equal(targets[:, 0], r.classes)
        meta = ds.letterbox_meta(i)
        np.testing.assert_allclose(targets[:, 1:], boxes_to_letterbox(r.boxes, meta), atol=1e-4)
        back = boxes_from_letterbox(targets[:, 1:], meta, width=r.width, height=r.height)
        np.testing.assert_allclose(back, r.boxes, atol=1e-3)
    image, _, _ = ds[0]
    np.testing.assert_allclose(image[:, 32, 32], np.array([10, 120, 250]) / 255, atol=1e-6)
    assert image[:, 0, 0].tolist() == pytest.approx([114 / 255] * 3)  # padding row
    assert ds[1][0][:, 32, 32].tolist() == pytest.approx([90 / 255] * 3)
    assert ds[-1][2] == 2
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_with_augmentation_keeps_boxes_in_the_image(records):
    ds = DetectionDataset(records, img_size=64, augment=AugmentConfig(degrees=10.0))
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, targets, _ = ds[i]
        assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
        assert (
            targets.shape[1] == 5 and (targets[:, 1:] >= 0).all() and (targets[:, 1:] <= 64).all()
        )
        assert ((targets[:, 3] - targets[:, 1]) >= 2).all()


def test_collate(records):
    loader = DataLoader(DetectionDataset(records, img_size=64), batch_size=3, collate_fn=collate)
    images, targets, indices = next(iter(loader))
    assert images.shape == (3, 3, 64, 64) and indices == [0, 1, 2]
    assert targets.shape == (3, 6)
    assert targets[:, 0].tolist() == [0, 0, 1] and targets[:, 1].tolist() == [0, 2, 1]
    _, only_empty, _ = collate([DetectionDataset(records, img_size=64)[2]])
    assert only_empty.shape == (0, 6)


def test_unreadable_image_at_getitem_names_the_file(records):
    records[1].path.write_bytes(b"\x89PNG broken")
    ds = DetectionDataset(records, img_size=64)
    with pytest.raises(DataError, match="cannot read image") as info:
        ds[1]
    assert info.value.file == str(records[1].path)
    records[0].width = 65
    with pytest.raises(DataError, match="image is 64x48 but its annotation says 65x48"):
        ds[0]


def test_cache_keeps_decoded_images(records):
    cached = DetectionDataset(records, img_size=64, cache=True)
    plain = DetectionDataset(records, img_size=64)
    first = cached[0][0]
    records[0].path.unlink()
    torch.testing.assert_close(cached[0][0], first)
    with pytest.raises(DataError, match="cannot read image"):
        plain[0]


def test_preload_decodes_all_once_and_forked_workers_share_it(records):
    ds = DetectionDataset(records, img_size=64)
    want = [ds[i][0] for i in range(len(ds))]
    held = ds.preload()
    assert ds.cache and held == sum(r.width * r.height * 3 for r in records)
    for r in records:  # every image now comes from memory, in this process and in the workers
        r.path.unlink()
    loader = DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)
    images, _, _ = next(iter(loader))
    torch.testing.assert_close(images, torch.stack(want))
