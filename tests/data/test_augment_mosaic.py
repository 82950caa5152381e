"""Mosaic augmentation: the 4-image tiling, its boxes, and its place in DetectionDataset."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeyolo.config import AugmentConfig
from edgeyolo.data.dataset import DetectionDataset
from edgeyolo.data.letterbox import PAD_VALUE
from edgeyolo.data.mosaic import MIN_VISIBLE, mosaic4, mosaic_centre_range
from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import ConfigError

#: one colour per class, none of them white (the background) or the pad grey
COLOURS = np.array(
    [[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0], [0, 200, 200], [200, 0, 200]],
    dtype=np.uint8,
)
#: augmentation that moves no pixel, so that only the mosaic changes a sample
STILL = dict(scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


def _painted(width: int, height: int, boxes: list[list[int]], classes: list[int]) -> np.ndarray:
    """A white ``width`` x ``height`` image whose boxes are filled with their class's colour."""
    image = np.full((height, width, 3), 255, np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, classes, strict=True):
        image[y1:y2, x1:x2] = COLOURS[c]
    return image


#: four images of different sizes (scales 0.5, 1, 4/3 and 0.64 to a 64-px canvas), with boxes
#: everywhere, including on their borders
SOURCES = [
    (128, 96, [[0, 0, 40, 30], [60, 40, 128, 96], [90, 4, 120, 30]], [0, 1, 2]),
    (64, 64, [[2, 2, 30, 30], [34, 30, 64, 64]], [3, 4]),
    (32, 48, [[4, 4, 28, 20], [0, 24, 32, 48]], [5, 0]),
    (100, 40, [[10, 5, 50, 35], [60, 0, 100, 40]], [1, 2]),
]


def _sources() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    images = [_painted(w, h, b, c) for w, h, b, c in SOURCES]
    boxes = [np.asarray(b, np.float32) for _, _, b, _ in SOURCES]
    classes = [np.asarray(c, np.int64) for _, _, _, c in SOURCES]
    return images, boxes, classes


def _assert_boxes_on_their_colour(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray):
    """Every box's interior (2 px in from its edges: resizing blends the edges) holds only its
    class's colour: the box sits on the pixels that were pasted for it."""
    assert len(boxes), "the check needs boxes"
    for box, c in zip(boxes, classes, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        inner = image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].reshape(-1, 3)
        if len(inner):
            assert (inner == COLOURS[c]).all(), (box, c, np.unique(inner, axis=0))


@pytest.mark.parametrize("centre", [(32, 32), (16, 48), (48, 16), (20, 20), (0, 64)])
def test_mosaic_boxes_map_to_the_pasted_pixels(centre):
    images, boxes, classes = _sources()
    out, out_boxes, out_classes = mosaic4(images, boxes, classes, size=64, centre=centre)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out_boxes.dtype == np.float32 and out_classes.dtype == np.int64
    _assert_boxes_on_their_colour(out, out_boxes, out_classes)
    assert (out_boxes >= 0).all() and (out_boxes <= 64).all()


def test_mosaic_places_each_image_at_its_corner_of_the_split():
    """Four plain images (no resizing) around (20, 40) on a 64 canvas: each quadrant shows the
    corner of its image that touches the split point; grey where an image does not reach."""
    values = [10, 20, 30, 40]
    images = [np.full((64, 64, 3), v, np.uint8) for v in values]
    images[3] = np.full((16, 16, 3), 40, np.uint8)  # resized to 64 x 64 as well
    images[1] = np.full((32, 16, 3), 20, np.uint8)  # 16 x 32 -> 32 x 64: too narrow for 44
    empty = [np.zeros((0, 4), np.float32)] * 4
    out, _, _ = mosaic4(images, empty, [np.zeros(0, np.int64)] * 4, size=64, centre=(20, 40))
    assert (out[:40, :20] == 10).all()
    assert (out[:40, 20:52] == 20).all() and (out[:40, 52:] == PAD_VALUE).all()
    assert (out[40:, :20] == 30).all()
    assert (out[40:, 20:] == 40).all()


def test_mosaic_clips_boxes_to_their_quadrant_and_drops_slivers():
    """Image 0 (64 x 64, not resized) ends at the split (32, 32): its pixel x shows at
    x - 32 on the canvas. A box half inside is clipped; one with 1/8 of its area inside, or
    1 px wide inside, is dropped."""
    blank = [np.full((64, 64, 3), 255, np.uint8)] * 4
    boxes = [
        np.array(
            [[48, 40, 80, 56], [0, 40, 36, 56], [32, 0, 64, 64], [20, 40, 33, 56]], np.float32
        ),
        *[np.zeros((0, 4), np.float32)] * 3,
    ]
    classes = [np.array([1, 2, 3, 4]), *[np.zeros(0, np.int64)] * 3]
    _, out_boxes, out_classes = mosaic4(blank, boxes, classes, size=64, centre=(32, 32))
    # [48, 40, 80, 56] -> [16, 8, 48, 24] clipped to x <= 32: half its area, kept
    # [0, 40, 36, 56] -> [-32, 8, 4, 24]: 4 / 36 of it inside (< MIN_VISIBLE), dropped
    # [32, 0, 64, 64] -> [0, -32, 32, 32]: half inside, kept as [0, 0, 32, 32]
    # [20, 40, 33, 56] -> [-12, 8, 1, 24]: 1 px wide inside, dropped
    assert MIN_VISIBLE > 4 / 36
    np.testing.assert_array_equal(out_boxes, [[16, 8, 32, 24], [0, 0, 32, 32]])
    np.testing.assert_array_equal(out_classes, [1, 3])


def test_mosaic_rejects_the_wrong_number_of_images_and_a_centre_off_the_canvas():
    images, boxes, classes = _sources()
    with pytest.raises(ConfigError, match="needs 4 images"):
        mosaic4(images[:3], boxes[:3], classes[:3], size=64, centre=(32, 32))
    with pytest.raises(ConfigError, match=r"centre \(70, 10\) is outside the 64 x 64"):
        mosaic4(images, boxes, classes, size=64, centre=(70, 10))


def test_centre_range_is_the_middle_half():
    assert mosaic_centre_range(320) == (80, 240)


def _records(tmp_path: Path) -> list[ImageRecord]:
    """The four painted sources as PNG files."""
    records = []
    for k, (w, h, b, c) in enumerate(SOURCES):
        path = tmp_path / f"{k}.png"
        Image.fromarray(_painted(w, h, b, c)).save(path)
        records.append(ImageRecord(path, b, c, w, h))
    return records


def _array(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_dataset_mosaic_samples_keep_boxes_on_their_digits(tmp_path):
    ds = DetectionDataset(
        _records(tmp_path), img_size=64, augment=AugmentConfig(mosaic=1.0, **STILL)
    )
    torch.manual_seed(0)
    seen_others = 0
    for _ in range(3):
        for i in range(len(ds)):
            image, targets, index = ds[i]
            assert index == i and image.shape == (3, 64, 64)
            _assert_boxes_on_their_colour(
                _array(image), targets[:, 1:].numpy(), targets[:, 0].long().numpy()
            )
            # a mosaic holds more than image i: classes of other images appear
            seen_others += not set(targets[:, 0].long().tolist()) <= set(SOURCES[i][3])
    assert seen_others > 0


def test_dataset_mosaic_probability_zero_is_the_plain_sample(tmp_path):
    records = _records(tmp_path)
    plain = DetectionDataset(records, img_size=64)  # evaluation transform: letterbox only
    off = DetectionDataset(records, img_size=64, augment=AugmentConfig(mosaic=0.0, **STILL))
    on = DetectionDataset(records, img_size=64, augment=AugmentConfig(mosaic=1.0, **STILL))
    torch.manual_seed(0)
    for i in range(len(records)):
        want_image, want_targets, _ = plain[i]
        got_image, got_targets, _ = off[i]
        torch.testing.assert_close(got_image, want_image, rtol=0, atol=0)
        torch.testing.assert_close(got_targets, want_targets)
    mosaic_image, _, _ = on[0]
    assert not torch.equal(mosaic_image, plain[0][0])


def test_dataset_mosaic_is_drawn_with_its_probability_and_switched_off(tmp_path):
    """``mosaic`` 0.5 gives both kinds of sample; setting the attribute to 0 (as the trainer
    does for close_mosaic) gives only plain ones; augmentation off means no mosaic at all."""
    records = _records(tmp_path)
    ds = DetectionDataset(records, img_size=64, augment=AugmentConfig(mosaic=0.5, **STILL))
    plain = [DetectionDataset(records, img_size=64)[i][0] for i in range(len(records))]
    torch.manual_seed(1)
    kinds = [torch.equal(ds[k % 4][0], plain[k % 4]) for k in range(40)]
    assert 5 < sum(kinds) < 35
    ds.mosaic = 0.0
    assert all(torch.equal(ds[k][0], plain[k]) for k in range(4))
    disabled = AugmentConfig(enabled=False, mosaic=1.0)
    assert DetectionDataset(records, img_size=64, augment=disabled).mosaic == 0.0


def test_dataset_not_augmenting_gives_the_evaluation_samples(tmp_path):
    """``augmenting = False`` (the trainer's close_aug): no mosaic and no affine or colour
    change, every sample equal to the evaluation dataset's; True again: augmented again."""
    records = _records(tmp_path)
    plain = DetectionDataset(records, img_size=64)
    ds = DetectionDataset(records, img_size=64, augment=AugmentConfig(mosaic=1.0))
    ds.augmenting = False
    for i in range(len(records)):
        torch.testing.assert_close(ds[i][0], plain[i][0], rtol=0, atol=0)
        torch.testing.assert_close(ds[i][1], plain[i][1], rtol=0, atol=0)
    ds.augmenting = True
    torch.manual_seed(0)
    assert not torch.equal(ds[0][0], plain[0][0])
