"""k-means anchors with the IoU distance."""

from __future__ import annotations

import numpy as np
import pytest

from edgeyolo.config import ModelConfig
from edgeyolo.errors import ConfigError
from edgeyolo.models import (
    anchor_iou,
    anchors_for_boxes,
    best_possible_recall,
    kmeans_anchors,
    mean_best_iou,
)

CENTRES = np.array([[12.0, 16.0], [60.0, 40.0], [150.0, 220.0]])


def clustered_boxes(n_per: int = 200, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    """Three well-separated size clusters with multiplicative noise, shuffled."""
    rng = np.random.default_rng(seed)
    wh = np.concatenate(
        [c * np.exp(rng.normal(0.0, noise, size=(n_per, 2))) for c in CENTRES[[2, 0, 1]]]
    )
    return wh[rng.permutation(len(wh))]


def test_anchor_iou_by_hand() -> None:
    wh = np.array([[10.0, 10.0], [20.0, 5.0]])
    anchors = np.array([[10.0, 10.0], [5.0, 20.0], [40.0, 40.0]])
    iou = anchor_iou(wh, anchors)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(
        iou,
        [[1.0, 50 / 150, 100 / 1600], [50 / 150, 25 / 175, 100 / 1600]],
    )


def test_kmeans_recovers_cluster_centres() -> None:
    wh = clustered_boxes()
    anchors = kmeans_anchors(wh, 3)
    assert anchors.dtype == np.float32 and anchors.shape == (3, 2)
    np.testing.assert_allclose(anchors, CENTRES, rtol=0.03)


def test_kmeans_is_sorted_by_area_and_deterministic() -> None:
    wh = clustered_boxes(n_per=100, noise=0.4, seed=3)  # overlapping clusters: k-means must choose
    a = kmeans_anchors(wh, 9, seed=7)
    b = kmeans_anchors(wh, 9, seed=7)
    np.testing.assert_array_equal(a, b)
    areas = a[:, 0] * a[:, 1]
    assert np.all(np.diff(areas) >= 0)
    assert len(np.unique(a, axis=0)) == 9


def test_kmeans_beats_a_bad_guess() -> None:
    wh = clustered_boxes(noise=0.2)
    fitted = kmeans_anchors(wh, 3)
    bad = np.array([[30.0, 30.0], [31.0, 31.0], [32.0, 32.0]])
    fit = mean_best_iou(wh, fitted)
    assert fit >= mean_best_iou(wh, CENTRES) - 0.005  # as good as the true centres
    assert fit > 0.7 > mean_best_iou(wh, bad)


def test_kmeans_needs_at_least_k_boxes() -> None:
    with pytest.raises(ConfigError, match="9 anchors to 4 boxes"):
        kmeans_anchors(np.ones((4, 2)), 9)
    with pytest.raises(ConfigError, match="distinct"):
        kmeans_anchors(np.ones((20, 2)), 3)


@pytest.mark.parametrize(
    "wh", [np.zeros((0, 2)) + 1, np.array([[1.0, 0.0], [2.0, 2.0]]), np.ones((3, 3))]
)
def test_bad_box_arrays_are_rejected(wh: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        kmeans_anchors(wh, 2)


def test_best_possible_recall() -> None:
    wh = np.array([[10.0, 10.0], [10.0, 40.0], [100.0, 100.0]])
    anchors = np.array([[10.0, 10.0], [40.0, 40.0]])
    # IoUs with the best anchor: 1.0, 100/400 = 400/1600 = 0.25 (not > 0.25), 1600/10000 = 0.16
    assert best_possible_recall(wh, anchors) == pytest.approx(1 / 3)
    assert best_possible_recall(wh, anchors, thresh=0.2) == pytest.approx(2 / 3)
    assert best_possible_recall(wh, anchors, thresh=0.1) == 1.0
    assert best_possible_recall(clustered_boxes(), CENTRES) == 1.0


@pytest.mark.parametrize(("arch", "k"), [("yolov3", 9), ("yolov3-tiny", 6)])
def test_anchors_for_boxes_fit_model_config(arch: str, k: int) -> None:
    wh = clustered_boxes(n_per=60, noise=0.3)  # pixels at the 416 input
    anchors = anchors_for_boxes(wh, arch, 416, seed=0)
    assert len(anchors) == k
    assert all(isinstance(v, float) for pair in anchors for v in pair)
    cfg = ModelConfig(arch=arch, num_classes=3, anchors=anchors)
    assert cfg.anchors == anchors  # already sorted by area
    assert anchors_for_boxes(wh, arch, 416, seed=0) == anchors
    np.testing.assert_allclose(np.array(anchors), kmeans_anchors(wh, k), atol=0.005)
    assert best_possible_recall(wh, np.array(anchors)) == 1.0


def test_anchors_for_boxes_rejects_sizes_not_at_the_input_size() -> None:
    with pytest.raises(ConfigError, match="do not fit a 64 px input"):
        anchors_for_boxes(clustered_boxes(), "yolov3-tiny", 64)
