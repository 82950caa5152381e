from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from edgeyolo.config import DEFAULT_MAX_CANDIDATES
from edgeyolo.postprocess import Detections, decode_heads, postprocess, split_head

A = 3


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _zero_heads(batch: int, num_classes: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    return [torch.zeros(batch, A * (5 + num_classes), h, w) for h, w in sizes]


# --------------------------------------------------------------------------------------- decode


def test_zero_logits_decode_to_cell_centres_and_anchor_sizes_in_documented_order() -> None:
    num_classes = 2
    strides = (32, 16)
    sizes = [(2, 3), (4, 6)]  # a 64x96 input
    anchors = torch.tensor(
        [[[40.0, 50.0], [60.0, 30.0], [90.0, 80.0]], [[10.0, 12.0], [14.0, 20.0], [25.0, 18.0]]]
    )
    boxes, obj, cls_prob = decode_heads(_zero_heads(2, num_classes, sizes), anchors, strides)
    n = sum(A * h * w for h, w in sizes)
    assert boxes.shape == (2, n, 4) and obj.shape == (2, n) and cls_prob.shape == (2, n, 2)

    # Documented order: head, then anchor, then row y, then column x.
    expected = []
    for s, (h, w) in enumerate(sizes):
        for a in range(A):
            for y in range(h):
                for x in range(w):
                    cx, cy = (x + 0.5) * strides[s], (y + 0.5) * strides[s]
                    aw, ah = anchors[s, a].tolist()
                    expected.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    expected_t = torch.tensor(expected)
    for b in range(2):
        torch.testing.assert_close(boxes[b], expected_t)
    torch.testing.assert_close(obj, torch.full((2, n), 0.5))
    torch.testing.assert_close(cls_prob, torch.full((2, n, 2), 0.5))


def test_one_prediction_with_known_logits_decodes_exactly() -> None:
    num_classes = 3
    sizes = [(2, 2), (3, 4)]
    strides = (32, 16)
    anchors = torch.tensor(
        [[[60.0, 70.0], [80.0, 90.0], [100.0, 120.0]], [[10.0, 10.0], [20.0, 40.0], [30.0, 30.0]]]
    )
    heads = _zero_heads(1, num_classes, sizes)
    # Head 1 (stride 16), anchor 1 (20x40), row y=1, column x=2.
    a, y, x, c = 1, 1, 2, 5 + num_classes
    heads[1][0, a * c + 0, y, x] = _logit(0.25)  # sigmoid(tx) = 0.25
    heads[1][0, a * c + 1, y, x] = _logit(0.75)  # sigmoid(ty) = 0.75
    heads[1][0, a * c + 2, y, x] = math.log(2.0)  # w = 2 * 20 = 40
    heads[1][0, a * c + 3, y, x] = math.log(0.5)  # h = 0.5 * 40 = 20
    heads[1][0, a * c + 4, y, x] = _logit(0.9)
    heads[1][0, a * c + 5 + 2, y, x] = _logit(0.8)
    boxes, obj, cls_prob = decode_heads(heads, anchors, strides)

    # cx = (0.25 + 2) * 16 = 36, cy = (0.75 + 1) * 16 = 28 -> (36 -+ 20, 28 -+ 10)
    n = A * 2 * 2 + (a * 3 + y) * 4 + x
    torch.testing.assert_close(boxes[0, n], torch.tensor([16.0, 18.0, 56.0, 38.0]))
    torch.testing.assert_close(obj[0, n], torch.tensor(0.9))
    torch.testing.assert_close(cls_prob[0, n], torch.tensor([0.5, 0.5, 0.8]))


def test_split_head_channel_layout() -> None:
    num_classes = 2
    head = torch.arange(A * 7 * 2 * 3, dtype=torch.float32).view(1, A * 7, 2, 3)
    raw = split_head(head, A)
    assert raw.shape == (1, A, 2, 3, 7)
    # raw[b, a, y, x, k] == head[b, a * (5 + C) + k, y, x]
    assert raw[0, 2, 1, 0, 4].item() == head[0, 2 * (5 + num_classes) + 4, 1, 0].item()


def test_decode_heads_traces_with_dynamic_batch_and_input_size() -> None:
    anchors = torch.tensor(
        [[[40.0, 50.0], [60.0, 30.0], [90.0, 80.0]], [[10.0, 12.0], [14.0, 20.0], [25.0, 18.0]]]
    )

    class Decode(torch.nn.Module):
        def forward(
            self, h0: torch.Tensor, h1: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return decode_heads([h0, h1], anchors, (32, 16))

    gen = torch.Generator().manual_seed(0)
    module = Decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
        traced = torch.jit.trace(
            module,
            (torch.randn(1, 21, 2, 2, generator=gen), torch.randn(1, 21, 4, 4, generator=gen)),
        )
    other = (torch.randn(3, 21, 3, 5, generator=gen), torch.randn(3, 21, 6, 10, generator=gen))
    for got, want in zip(traced(*other), module(*other), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------------- postprocess


def _inputs(boxes: list[list[float]], obj: list[float], cls_prob: list[list[float]]):
    f32 = torch.float32
    return (
        torch.tensor([boxes], dtype=f32),
        torch.tensor([obj], dtype=f32),
        torch.tensor([cls_prob], dtype=f32),
    )


def test_overlapping_boxes_of_one_class_keep_the_best() -> None:
    # IoU of the two boxes: 90 / 110 = 0.82 > 0.45
    inputs = _inputs([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [[1.0, 0.0], [1.0, 0.0]])
    (det,) = postprocess(*inputs)
    assert len(det) == 1
    torch.testing.assert_close(det.boxes, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    torch.testing.assert_close(det.scores, torch.tensor([0.9]))
    assert det.labels.tolist() == [0]


def test_overlapping_boxes_of_different_classes_are_both_kept() -> None:
    inputs = _inputs([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [[1.0, 0.0], [0.0, 1.0]])
    (det,) = postprocess(*inputs)
    assert det.labels.tolist() == [0, 1]
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.8]))


def test_score_is_obj_times_class_prob_and_threshold_is_strict() -> None:
    inputs = _inputs(
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        [0.5, 0.5, 0.9],
        [[0.8, 0.1], [0.5, 0.2], [0.1, 0.2]],
    )
    # scores of the best classes: 0.4, 0.25, 0.18
    (det,) = postprocess(*inputs, conf_thres=0.25)
    torch.testing.assert_close(det.scores, torch.tensor([0.4]))
    (det,) = postprocess(*inputs, conf_thres=0.1)
    torch.testing.assert_close(det.scores, torch.tensor([0.4, 0.25, 0.18]))
    assert det.labels.tolist() == [0, 0, 1]


def test_max_det_keeps_the_best_sorted_descending() -> None:
    boxes = [[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(6)]
    obj = [0.3, 0.9, 0.5, 0.7, 0.4, 0.8]
    (det,) = postprocess(*_inputs(boxes, obj, [[1.0]] * 6), max_det=3)
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.8, 0.7]))
    torch.testing.assert_close(det.boxes[:, 0], torch.tensor([20.0, 100.0, 60.0]))
    (det,) = postprocess(*_inputs(boxes, obj, [[1.0]] * 6), max_det=6, max_candidates=2)
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.8]))


def _far_apart(n: int) -> list[list[float]]:
    """``n`` 10x10 boxes that never overlap (NMS keeps every one)."""
    return [
        [20.0 * (i % 100), 20.0 * (i // 100), 20.0 * (i % 100) + 10, 20.0 * (i // 100) + 10]
        for i in range(n)
    ]


def test_candidate_cap_keeps_the_best_and_ties_go_to_the_lower_box_index() -> None:
    obj = [0.5, 0.9, 0.5, 0.7, 0.5, 0.2]
    inputs = _inputs(_far_apart(6), obj, [[1.0]] * 6)
    (det,) = postprocess(*inputs, max_det=10, max_candidates=3)
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.7, 0.5]))
    # of the three boxes scoring 0.5 the first (index 0, x = 0) is the one that entered NMS
    torch.testing.assert_close(det.boxes[:, 0], torch.tensor([20.0, 60.0, 0.0]))
    (det,) = postprocess(*inputs, max_det=10, max_candidates=4)
    torch.testing.assert_close(det.boxes[:, 0], torch.tensor([20.0, 60.0, 0.0, 40.0]))


def test_multi_label_candidate_cap_counts_pairs_box_major() -> None:
    # four (box, class) pairs of score 0.5: the graph's order is box * C + class, so a cap of 2
    # keeps both classes of box 0, and a cap of 3 adds class 0 of box 1
    inputs = _inputs(_far_apart(2), [1.0, 1.0], [[0.5, 0.5], [0.5, 0.5]])
    (det,) = postprocess(*inputs, conf_thres=0.25, multi_label=True, max_candidates=2)
    assert sorted(det.labels.tolist()) == [0, 1]
    assert det.boxes[:, 0].tolist() == [0.0, 0.0]
    (det,) = postprocess(*inputs, conf_thres=0.25, multi_label=True, max_candidates=3)
    pairs = zip(det.boxes[:, 0].tolist(), det.labels.tolist(), strict=True)
    assert sorted(pairs) == [(0, 0), (0, 1), (20, 0)]


def test_default_candidate_cap_is_the_graphs() -> None:
    n = DEFAULT_MAX_CANDIDATES + 10
    obj = torch.linspace(0.99, 0.3, n).tolist()
    (det,) = postprocess(*_inputs(_far_apart(n), obj, [[1.0]] * n), max_det=n)
    assert len(det) == DEFAULT_MAX_CANDIDATES == 3840
    assert float(det.scores.min()) == pytest.approx(obj[DEFAULT_MAX_CANDIDATES - 1])
    with pytest.raises(ValueError, match="max_candidates"):
        postprocess(*_inputs(_far_apart(2), [0.9, 0.8], [[1.0]] * 2), max_candidates=0)


def test_multi_label_scores_every_class_over_the_threshold() -> None:
    inputs = _inputs([[0, 0, 10, 10]], [1.0], [[0.6, 0.1, 0.3]])
    (det,) = postprocess(*inputs, conf_thres=0.25, multi_label=True)
    assert det.labels.tolist() == [0, 2]
    torch.testing.assert_close(det.scores, torch.tensor([0.6, 0.3]))
    torch.testing.assert_close(det.boxes, torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2))
    (det,) = postprocess(*inputs, conf_thres=0.25, multi_label=False)
    assert det.labels.tolist() == [0]


def test_images_are_independent_and_empty_results_are_well_formed() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]]])
    obj = torch.tensor([[0.9], [0.1]])
    cls_prob = torch.ones(2, 1, 4)
    first, second = postprocess(boxes, obj, cls_prob)
    assert len(first) == 1 and len(second) == 0
    assert second.boxes.shape == (0, 4) and second.labels.dtype == torch.int64
    assert first.labels.dtype == torch.int64


def test_detections_helpers() -> None:
    det = Detections(
        boxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        scores=torch.tensor([0.5]),
        labels=torch.tensor([2]),
    )
    assert len(det) == 1
    boxes, scores, labels = det.to("cpu").numpy()
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(boxes, [[1.0, 2.0, 3.0, 4.0]])
    empty = Detections.empty()
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


@pytest.mark.parametrize("multi_label", [False, True])
def test_decode_then_postprocess_end_to_end(multi_label: bool) -> None:
    num_classes = 2
    anchors = torch.tensor([[[40.0, 40.0], [60.0, 30.0], [90.0, 80.0]]])
    heads = [torch.full((1, A * (5 + num_classes), 2, 2), -10.0)]
    c = 5 + num_classes
    heads[0][0, 0 * c : 0 * c + 4, 1, 0] = 0.0  # anchor 0, cell (x=0, y=1): box around (16, 48)
    heads[0][0, 0 * c + 4, 1, 0] = 10.0  # confident
    heads[0][0, 0 * c + 6, 1, 0] = 10.0  # class 1
    (det,) = postprocess(*decode_heads(heads, anchors, (32,)), multi_label=multi_label)
    assert det.labels.tolist() == [1]
    torch.testing.assert_close(det.boxes, torch.tensor([[-4.0, 28.0, 36.0, 68.0]]))
