"""Per-image matching, COCO's AP@0.5 from pooled matches, and the paired bootstrap of a drop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import ConfigError, DataError
from edgeyolo.metrics.bootstrap import (
    MAX_DETS,
    DropInterval,
    _map50_rows,
    images_needed,
    map50,
    match_detections,
    paired_bootstrap,
)
from edgeyolo.metrics.coco_map import compute_map
from tests.metrics.synthetic_matches import one_box_ap, one_box_matches, realistic_set

NAMES = [str(i) for i in range(10)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map50_agrees_with_faster_coco_eval(seed: int) -> None:
    """On a realistic set (misses, wrong classes, overlapping false positives, empty images) the
    pooled-matches AP is faster-coco-eval's; inverted boxes (jitter on thin ones) are ignored as
    COCO ignores them. Measured gap: at most 1.1e-16 here and on 1000-image sets."""
    records, preds = realistic_set(300, seed)
    coco = compute_map(preds, records, NAMES).map50
    ours = map50(match_detections(preds, records, len(NAMES)))
    assert 0.2 < coco < 0.9  # a set where the metric has room to be wrong
    assert ours == pytest.approx(coco, abs=1e-9)


def test_max_dets_per_image_and_class_and_classes_without_ground_truth() -> None:
    """COCO keeps the 100 best detections of a class per image: a true positive ranked 101st
    is not counted; a class with detections but no ground truth stays out of the mean."""
    rec = ImageRecord("a.jpg", [[10, 10, 60, 60], [100, 100, 150, 150]], [0, 1], 416, 416)
    far = np.tile(np.array([[300, 300, 320, 320]], dtype=np.float32), (MAX_DETS, 1))
    boxes = np.concatenate([far, rec.boxes, far[:3]])
    scores = np.concatenate([np.linspace(0.9, 0.5, MAX_DETS), [0.1, 0.95], [0.9] * 3])
    labels = np.array([0] * MAX_DETS + [0, 1] + [2] * 3)
    preds = [(boxes, scores.astype(np.float32), labels)]
    m = match_detections(preds, [rec], 3)
    assert (m.labels == 0).sum() == MAX_DETS and not m.tp[m.labels == 0].any()
    assert map50(m) == pytest.approx(compute_map(preds, [rec], NAMES[:3]).map50) == 0.5


def test_greedy_matching_takes_the_best_free_box() -> None:
    """Two ground-truth boxes, three detections: the best-scored takes the box it overlaps most;
    the second, over the same box, takes the other one if it clears IoU 0.5 there; a third on a
    box already taken is a false positive."""
    rec = ImageRecord("a.jpg", [[0, 0, 100, 100], [20, 0, 120, 100]], [0, 0], 416, 416)
    boxes = np.array([[18, 0, 118, 100], [0, 0, 100, 100], [19, 0, 119, 100]], np.float32)
    preds = [(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64))]
    m = match_detections(preds, [rec], 1)
    assert m.tp.tolist() == [True, True, False]  # sorted by score: dets 0, 1, 2
    assert m.gt_counts.tolist() == [[2]]


def test_each_resample_is_a_coco_evaluation_of_the_resampled_images() -> None:
    """Weighting an image by how often it was drawn gives the mAP COCO gives on the set with the
    image repeated that often."""
    records, preds = realistic_set(40, 7)
    matches = match_detections(preds, records, len(NAMES))
    rng = np.random.default_rng(3)
    weights = rng.multinomial(40, np.full(40, 1 / 40), size=4)
    for row, w in zip(_map50_rows(matches, weights), weights, strict=True):
        idx = np.repeat(np.arange(40), w)
        coco = compute_map([preds[i] for i in idx], [records[i] for i in idx], NAMES).map50
        assert row == pytest.approx(coco, abs=1e-9)


def _population_sample(n: int, p: float, seed: int) -> tuple:
    """A sample of ``n`` images from a population where the reference finds every box and the
    other model each box with probability ``p``."""
    found = np.random.default_rng(seed).random(n) < p
    return one_box_matches(np.ones(n, bool)), one_box_matches(found)


def test_interval_covers_the_true_drop_at_about_its_level() -> None:
    """The other model finds each box with probability 0.9: on the population its AP is that of
    recall 0.9, 91/101, so the true drop is 100 * 10/101 = 9.90 points. Of 30 samples of 200
    images, about 95 % of the intervals hold it, and their half-width is about the binomial one
    (100 * 1.96 * sqrt(p (1 - p) / n) = 4.2 points)."""
    population = np.r_[np.ones(900, bool), np.zeros(100, bool)]
    true_drop = 100 * (1 - map50(one_box_matches(population)))
    assert true_drop == pytest.approx(100 * (1 - one_box_ap(population))) == 100 * 10 / 101
    intervals = [
        paired_bootstrap(*_population_sample(200, 0.9, seed), resamples=400, seed=seed)
        for seed in range(30)
    ]
    covered = sum(iv.low <= true_drop <= iv.high for iv in intervals)
    assert 25 <= covered <= 30
    mean_half = np.mean([iv.half_width for iv in intervals])
    assert mean_half == pytest.approx(100 * 1.96 * math.sqrt(0.9 * 0.1 / 200), rel=0.25)


def test_pairing_narrows_the_interval_when_the_models_agree() -> None:
    """Images differ in difficulty (the reference misses 30 % of boxes) and the other model
    misses those plus 1 % more: paired, the shared misses cancel; unpaired, they do not."""
    rng = np.random.default_rng(0)
    ref_found = rng.random(400) < 0.7
    other_found = ref_found & (rng.random(400) > 0.01)
    ref, other = one_box_matches(ref_found), one_box_matches(other_found)
    paired = paired_bootstrap(ref, other, resamples=500)
    unpaired = paired_bootstrap(ref, other, resamples=500, paired=False)
    assert paired.drop == unpaired.drop and paired.drop > 0
    assert paired.half_width < 0.4 * unpaired.half_width
    assert paired.low >= 0  # paired: never better than the reference on any resample


def test_identical_models_have_no_drop_and_a_zero_interval() -> None:
    records, preds = realistic_set(50, 1)
    m = match_detections(preds, records, len(NAMES))
    iv = paired_bootstrap(m, m)
    assert (iv.drop, iv.low, iv.high, iv.half_width) == (0.0, 0.0, 0.0, 0.0)
    assert (iv.n_images, iv.resamples, iv.level) == (50, 1000, 0.95)


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    ref, other = _population_sample(150, 0.9, 0)
    a = paired_bootstrap(ref, other, resamples=300, seed=5)
    assert paired_bootstrap(ref, other, resamples=300, seed=5) == a
    b = paired_bootstrap(ref, other, resamples=300, seed=6)
    assert b.drop == a.drop and (b.low, b.high) != (a.low, a.high)


def test_half_width_scales_as_one_over_sqrt_n_and_images_needed_uses_it() -> None:
    small = paired_bootstrap(*_population_sample(100, 0.9, 1), resamples=1000)
    large = paired_bootstrap(*_population_sample(400, 0.9, 2), resamples=1000)
    assert small.half_width / large.half_width == pytest.approx(2.0, rel=0.3)
    assert images_needed(small, small.half_width) == 100
    assert images_needed(small, small.half_width / 2) == 400
    zero = DropInterval(0.0, 0.0, 0.0, 80, 1000, 0.0)
    assert images_needed(zero, 0.5) == 1
    with pytest.raises(ConfigError, match="half-width"):
        images_needed(small, 0.0)


def test_bad_input_is_refused() -> None:
    a, b = _population_sample(20, 0.9, 0)
    with pytest.raises(DataError, match="different ground truth"):
        paired_bootstrap(a, one_box_matches(np.ones(21, bool)))
    with pytest.raises(ConfigError, match="resamples"):
        paired_bootstrap(a, b, resamples=0)
    with pytest.raises(ConfigError, match="level"):
        paired_bootstrap(a, b, level=1.0)
    records, preds = realistic_set(3, 0)
    with pytest.raises(DataError, match="3 records"):
        match_detections(preds[:2], records, 10)
    with pytest.raises(DataError, match="image 0: predicted label"):
        match_detections(preds, records, 1)
    empty = [ImageRecord("e.jpg", np.zeros((0, 4)), [], 416, 416)]
    none = match_detections([(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))], empty, 2)
    assert math.isnan(map50(none))
    with pytest.raises(DataError, match="no ground truth"):
        paired_bootstrap(none, none)
