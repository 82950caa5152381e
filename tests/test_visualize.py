from __future__ import annotations

import numpy as np

from edgeyolo.visualize import class_color, draw_detections

NAMES = ("cat", "dog")


def _gray(h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), 128, dtype=np.uint8)


def test_box_border_is_drawn_in_class_colour_and_input_untouched() -> None:
    image = _gray()
    before = image.copy()
    boxes = np.array([[40.0, 50.0, 120.0, 100.0]])
    out = draw_detections(image, boxes, np.array([0.9]), np.array([1]), NAMES, thickness=2)
    np.testing.assert_array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    colour = np.array(class_color(1))
    # Left and bottom edges (the caption sits on the top edge).
    np.testing.assert_array_equal(out[75, 40], colour)
    np.testing.assert_array_equal(out[100, 80], colour)
    # The middle of the box and a far corner are untouched.
    np.testing.assert_array_equal(out[80, 80], before[80, 80])
    np.testing.assert_array_equal(out[5, 150], before[5, 150])


def test_caption_is_drawn_above_the_box() -> None:
    out = draw_detections(_gray(), np.array([[40, 50, 120, 100]]), [0.5], [0], NAMES)
    assert (out[30:49, 40:120] != 128).any()


def test_bgr_flag_swaps_channels() -> None:
    boxes = np.array([[10, 40, 100, 100]])
    rgb = draw_detections(_gray(), boxes, [0.9], [0], NAMES)
    bgr = draw_detections(_gray(), boxes, [0.9], [0], NAMES, bgr=True)
    np.testing.assert_array_equal(rgb[70, 10], bgr[70, 10][::-1])
    assert not np.array_equal(rgb[70, 10], bgr[70, 10])


def test_no_boxes_leaves_image_unchanged_but_copied() -> None:
    image = _gray()
    out = draw_detections(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), NAMES)
    np.testing.assert_array_equal(out, image)
    assert out is not image and not np.shares_memory(out, image)


def test_unknown_label_and_box_outside_the_image_do_not_crash() -> None:
    boxes = np.array([[-20, -20, 500, 500], [5, 5, 30, 30]])
    out = draw_detections(_gray(), boxes, [0.3, 0.7], [1, 42], NAMES)
    assert (out != 128).any()
