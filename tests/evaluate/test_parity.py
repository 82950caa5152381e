import math

import pytest
import torch

from edgeyolo.evaluate.parity import match_detections, parity
from edgeyolo.postprocess import Detections


def dets(boxes, scores, labels):
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


A = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2])


def test_identical_detections_agree_fully():
    p = parity([A], [A])
    assert (p.matched, p.matched_fraction, p.mean_iou, p.max_score_diff) == (2, 1.0, 1.0, 0.0)
    assert p.same_count_images == 1


def test_shifted_box_iou_and_score_difference():
    moved = dets([[1, 0, 11, 10], [20, 20, 40, 40]], [0.85, 0.8], [1, 2])
    p = parity([A], [moved])
    assert p.matched == 2
    assert p.min_iou == pytest.approx(90 / 110)  # 9x10 overlap, 110 union
    assert p.max_score_diff == pytest.approx(0.05, abs=1e-6)
    assert p.mean_iou == pytest.approx((1 + 90 / 110) / 2)


def test_other_class_or_far_box_is_not_a_match():
    other = dets([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 40, 40]], [0.9, 0.5, 0.8], [3, 2, 2])
    pairs, ious = match_detections(A, other)
    assert pairs.tolist() == [[1, 2]] and ious.tolist() == [1.0]
    p = parity([A], [other])
    assert p.matched == 1 and p.matched_fraction == pytest.approx(1 / 3)


def test_one_to_one_and_empty_images():
    twice = dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.9], [1, 1])
    one = dets([[0, 0, 10, 10]], [0.9], [1])
    assert parity([one], [twice]).matched == 1
    empty = Detections.empty()
    p = parity([empty], [empty])
    assert p.matched_fraction == 1.0 and math.isnan(p.mean_iou)
    assert parity([one], [empty]).matched_fraction == 0.0
    with pytest.raises(ValueError, match="2 reference images but 1"):
        parity([one, one], [one])
