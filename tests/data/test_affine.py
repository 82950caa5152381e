"""The one-warp letterbox + affine: the letterbox itself at zero draws, boxes that follow the
pixels under any draw, and the training transform built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from edgeyolo.config import AugmentConfig
from edgeyolo.data.affine import affine_boxes, letterbox_affine_matrix, warp_letterbox_affine
from edgeyolo.data.letterbox import PAD_VALUE, boxes_to_letterbox, letterbox, letterbox_params
from edgeyolo.data.transforms import LetterboxAffine, train_transforms


@pytest.mark.parametrize(("width", "height"), [(416, 416), (640, 360), (300, 500)])
def test_no_draw_is_the_letterbox(width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    m = letterbox_affine_matrix(width, height, 320)
    warped = warp_letterbox_affine(image, m, 320)
    expected, params = letterbox(image, 320)
    assert warped.shape == expected.shape == (320, 320, 3)
    # one bilinear warp against cv2.resize + padding: equal up to rounding of one grey level
    assert np.abs(warped.astype(int) - expected.astype(int)).max() <= 1
    boxes = np.array([[10.0, 20.0, 110.0, 90.0], [0.0, 0.0, width, height]])
    np.testing.assert_allclose(affine_boxes(boxes, m), boxes_to_letterbox(boxes, params), atol=1e-4)


def test_zoom_shift_and_turn_move_pixels_and_boxes_together() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        canvas = np.zeros((416, 416, 3), np.uint8)
        x, y = (int(v) for v in rng.integers(60, 280, 2))
        side = int(rng.integers(20, 80))
        canvas[y : y + side, x : x + side] = 255
        m = letterbox_affine_matrix(
            416,
            416,
            320,
            angle=float(rng.uniform(-15, 15)),
            shift=(float(rng.integers(-30, 31)), float(rng.integers(-30, 31))),
            zoom=float(rng.uniform(0.7, 1.3)),
        )
        warped = warp_letterbox_affine(canvas, m, 320)[..., 0]
        ys, xs = np.nonzero(warped > 127)
        box = affine_boxes(np.array([[x, y, x + side, y + side]]), m)[0]
        if box.min() < 0 or box.max() > 320:
            continue  # partly outside: the caller clamps
        pixels = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(pixels - box).max() <= 1.0, (pixels, box)


def test_the_uncovered_canvas_is_padding() -> None:
    image = np.zeros((416, 416, 3), np.uint8)
    m = letterbox_affine_matrix(416, 416, 320, zoom=0.5)  # the image covers the middle half
    warped = warp_letterbox_affine(image, m, 320)
    assert (warped[:60] == PAD_VALUE).all() and (warped[100:220, 100:220] == 0).all()
    wide = letterbox_affine_matrix(640, 320, 320)  # letterboxed to 320 x 160, padded top/bottom
    out = warp_letterbox_affine(np.zeros((320, 640, 3), np.uint8), wide, 320)
    _, _, pad_y = letterbox_params(640, 320, 320)
    assert (out[: int(pad_y) - 1] == PAD_VALUE).all() and (out[int(pad_y) + 1 : 200] == 0).all()


def test_training_transform_draws_from_torch_and_keeps_boxes_on_their_digits() -> None:
    aug = AugmentConfig(scale=(0.75, 1.25), translate=0.1)
    transform = train_transforms(320, aug)
    assert isinstance(transform.transforms[0], LetterboxAffine)
    canvas = np.full((416, 416, 3), 255, np.uint8)
    canvas[100:160, 200:260] = 0  # a dark "digit"
    image = tv_tensors.Image(torch.from_numpy(canvas).permute(2, 0, 1))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[200.0, 100.0, 260.0, 160.0]]), format="XYXY", canvas_size=(416, 416)
        ),
        "labels": torch.tensor([3]),
    }
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        out, t = transform(image, target)
        outs.append(out)
        assert out.shape == (3, 320, 320) and out.dtype == torch.float32
        x1, y1, x2, y2 = t["boxes"][0].round().int().tolist()
        inside = out[0, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
        assert inside.numel() > 0 and float(inside.max()) < 0.1  # the box holds the dark square
        assert t["labels"].tolist() == [3]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_boxes_must_be_xyxy() -> None:
    t = LetterboxAffine(320)
    boxes = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="CXCYWH", canvas_size=(416, 416))
    with pytest.raises(ValueError, match="XYXY"):
        t(boxes)
