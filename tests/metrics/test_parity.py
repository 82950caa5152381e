import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from edgeyolo.detections import Detections
from edgeyolo.metrics.parity import box_iou, match_detections, parity_summary


def dets(boxes, scores, labels):
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


A = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2])


def test_identical_detections_agree_fully():
    p = parity_summary([A], [A])
    assert (p.matched, p.matched_fraction, p.mean_iou, p.max_score_diff) == (2, 1.0, 1.0, 0.0)
    assert p.same_count_images == 1


def test_shifted_box_iou_and_score_difference():
    moved = dets([[1, 0, 11, 10], [20, 20, 40, 40]], [0.85, 0.8], [1, 2])
    p = parity_summary([A], [moved])
    assert p.matched == 2
    assert p.min_iou == pytest.approx(90 / 110)  # 9x10 overlap, 110 union
    assert p.max_score_diff == pytest.approx(0.05, abs=1e-6)
    assert p.mean_iou == pytest.approx((1 + 90 / 110) / 2)


def test_other_class_or_far_box_is_not_a_match():
    other = dets([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 40, 40]], [0.9, 0.5, 0.8], [3, 2, 2])
    pairs, ious = match_detections(A, other)
    assert pairs.tolist() == [[1, 2]] and ious.tolist() == [1.0]
    p = parity_summary([A], [other])
    assert p.matched == 1 and p.matched_fraction == pytest.approx(1 / 3)


def test_one_to_one_and_empty_images():
    twice = dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.9], [1, 1])
    one = dets([[0, 0, 10, 10]], [0.9], [1])
    assert parity_summary([one], [twice]).matched == 1
    empty = Detections.empty()
    assert parity_summary([one], [empty]).matched_fraction == 0.0
    with pytest.raises(ValueError, match="2 reference images but 1"):
        parity_summary([one, one], [one])


def test_no_box_on_either_side_is_nothing_to_compare_not_agreement():
    """Neither side found a box: the fraction is None (JSON null), not a perfect 1.0."""
    import json

    from edgeyolo.metrics.parity import parity_report

    empty = Detections.empty()
    p = parity_summary([empty, empty], [empty, empty])
    assert p.matched_fraction is None and p.matched == 0 and math.isnan(p.mean_iou)
    r = parity_report([empty, A], [empty, A])
    assert r.images[0].matched_fraction is None and r.images[1].matched_fraction == 1.0
    assert r.summary.matched_fraction == 1.0  # boxes on one image: the totals compare them
    assert [w.index for w in r.worst] == [1]
    d = json.loads(json.dumps(parity_report([empty], [empty]).to_dict(per_image=True)))
    assert d["matched_fraction"] is None and d["images"][0]["matched_fraction"] is None


def test_report_counts_missed_extra_and_class_disagreement():
    from edgeyolo.metrics.parity import parity_report

    # ref box 0 (class 1) reappears as class 3: a class disagreement, so also missed + extra;
    # ref box 1 matches; a far box of class 2 is one more extra, without disagreement.
    other = dets([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 40, 40]], [0.9, 0.5, 0.8], [3, 2, 2])
    r = parity_report([A, A], [other, A], files=["a.jpg", "b.jpg"])
    assert (r.missed, r.extra, r.class_disagreement) == (1, 2, 1)
    assert r.summary.matched == 3 and r.summary == parity_summary([A, A], [other, A])
    first, second = r.images
    assert (first.file, first.matched, first.missed, first.extra) == ("a.jpg", 1, 1, 2)
    assert first.matched_fraction == pytest.approx(1 / 3)
    assert (second.matched_fraction, second.mean_iou, second.class_disagreement) == (1.0, 1.0, 0)
    assert [w.index for w in r.worst] == [0, 1]


def test_report_missing_box_and_score_mae():
    from edgeyolo.metrics.parity import parity_report

    one = dets([[20, 20, 40, 40]], [0.7], [2])  # A's class-1 box is gone, the other moved score
    r = parity_report([A], [one])
    assert (r.missed, r.extra, r.class_disagreement) == (1, 0, 0)
    assert r.score_mae == pytest.approx(0.1, abs=1e-6)
    d = r.to_dict(per_image=True)
    assert d["missed"] == 1 and d["p5_iou"] == 1.0 and len(d["images"]) == 1
    assert d["worst_images"][0]["matched_fraction"] == 0.5


def test_report_p5_iou_is_numpy_linear_percentile():
    from edgeyolo.metrics.parity import parity_report

    # 11 boxes 10 px wide, the i-th shifted right by s = i/4 px: IoU (10 - s) / (10 + s).
    shifts = [i / 4 for i in range(11)]  # 0 .. 2.5 px, IoU 1.0 .. 0.6
    ref = dets([[100 * i, 0, 100 * i + 10, 10] for i in range(11)], [0.9] * 11, [0] * 11)
    moved = dets(
        [[100 * i + s, 0, 100 * i + 10 + s, 10] for i, s in enumerate(shifts)], [0.9] * 11, [0] * 11
    )
    r = parity_report([ref], [moved])
    ious = sorted((10 - s) / (10 + s) for s in shifts)
    # numpy 'linear': position 0.05 * (11 - 1) = 0.5, halfway between the two smallest.
    assert r.p5_iou == pytest.approx(ious[0] + 0.5 * (ious[1] - ious[0]))
    assert sorted(r.ious.tolist()) == pytest.approx(ious)


def test_report_empty_and_worst_limit():
    from edgeyolo.metrics.parity import parity_report

    empty = Detections.empty()
    r = parity_report([empty] * 3, [empty] * 3)
    assert r.worst == () and math.isnan(r.p5_iou) and r.to_dict()["p5_iou"] is None
    r = parity_report([A] * 7, [Detections.empty()] * 7, worst=5)
    assert len(r.worst) == 5 and r.missed == 14
    with pytest.raises(ValueError, match="1 file names for 7 images"):
        parity_report([A] * 7, [A] * 7, files=["x"])


def test_numpy_box_iou_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (40, 2))
    a = np.concatenate([xy, xy + rng.uniform(0, 50, (40, 2))], axis=1)
    a[3, 2:] = a[3, :2]  # a zero-area box: IoU 0 with everything, not NaN
    b = a[::-1].copy() + rng.normal(0, 3, a.shape)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    want = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    got = box_iou(a, b)
    np.testing.assert_allclose(got, np.nan_to_num(want), rtol=1e-12, atol=1e-12)
    assert got[3].max() == 0.0 and box_iou(a[:0], b).shape == (0, 40)
