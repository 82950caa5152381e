from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from rich.console import Console

from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import DataError
from edgeyolo.metrics import ClassAP, MapResult, compute_map, print_map_table

NAMES = ("zero", "one", "two")


def _record(boxes: list[list[float]], classes: list[int], name: str = "a.png") -> ImageRecord:
    return ImageRecord(name, np.array(boxes, dtype=np.float32).reshape(-1, 4), classes, 416, 416)


def _perfect(records: list[ImageRecord]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(r.boxes.copy(), np.full(len(r.boxes), 0.9), r.classes.copy()) for r in records]


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)


@pytest.fixture
def records() -> list[ImageRecord]:
    return [
        _record([[10, 10, 140, 60], [200, 200, 260, 300]], [0, 1], "a.png"),
        _record([[50, 60, 180, 90]], [0], "b.png"),
        _record([], [], "empty.png"),
    ]


def test_perfect_predictions_score_one(records: list[ImageRecord]) -> None:
    result = compute_map(_perfect(records), records, NAMES)
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(1.0)
    assert (result.num_images, result.num_gt, result.num_dets) == (3, 3, 3)


def test_iou_0625_passes_three_of_ten_thresholds() -> None:
    # Boxes 130 px wide shifted right by 30 px: IoU = 100 / 160 = 0.625, which clears the
    # thresholds 0.50, 0.55, 0.60 and fails 0.65 ... 0.95 -> AP50 = 1, AP50:95 = 3 / 10.
    records = [_record([[10, 10, 140, 60], [200, 100, 330, 300]], [0, 1])]
    shifted = records[0].boxes + np.array([30, 0, 30, 0], dtype=np.float32)
    preds = [(shifted, np.array([0.9, 0.8]), records[0].classes)]
    result = compute_map(preds, records, NAMES)
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(0.3)


def test_false_positive_ranked_first_halves_ap() -> None:
    # [FP 0.9, TP 0.8] for one GT: precision at recall 1 is 1/2, and the interpolated
    # precision (max precision at recall >= r) is 0.5 at every recall point -> AP = 0.5.
    records = [_record([[10, 10, 110, 110]], [0])]
    boxes = np.array([[200, 200, 300, 300], [10, 10, 110, 110]], dtype=np.float32)
    preds = [(boxes, np.array([0.9, 0.8]), np.array([0, 0]))]
    result = compute_map(preds, records, NAMES)
    assert result.per_class[0].ap50 == pytest.approx(0.5)
    assert result.map50 == pytest.approx(0.5)
    assert result.num_dets == 2


def test_wrong_class_lowers_that_class_only(records: list[ImageRecord]) -> None:
    preds = _perfect(records)
    boxes, scores, labels = preds[1]
    preds[1] = (boxes, scores, np.array([2]))  # b.png's class-0 box predicted as class 2
    result = compute_map(preds, records, NAMES)
    zero, one, two = result.per_class
    # One of two class-0 boxes found at precision 1: of the 101 recall points 0.00 ... 1.00,
    # the 51 up to recall 0.50 have precision 1, the rest 0.
    assert zero.ap50 == pytest.approx(51 / 101)
    assert one.ap50 == pytest.approx(1.0)
    assert math.isnan(two.ap50)  # no ground truth of class 2: excluded, not zero
    assert result.map50 == pytest.approx((51 / 101 + 1.0) / 2)


def test_per_class_counts_and_nan_for_classes_without_ground_truth(
    records: list[ImageRecord],
) -> None:
    result = compute_map(_perfect(records), records, NAMES)
    assert [c.name for c in result.per_class] == list(NAMES)
    assert [c.num_gt for c in result.per_class] == [2, 1, 0]
    assert [c.num_images for c in result.per_class] == [2, 1, 0]
    assert math.isnan(result.per_class[2].ap50_95)


def test_no_predictions_gives_zero(records: list[ImageRecord]) -> None:
    result = compute_map([_empty() for _ in records], records, NAMES)
    assert result.map50 == 0.0
    assert result.map50_95 == 0.0
    assert result.num_dets == 0


def test_false_positive_on_image_without_ground_truth_costs_precision() -> None:
    records = [_record([[10, 10, 110, 110]], [0], "a.png"), _record([], [], "bg.png")]
    preds = [
        (records[0].boxes, np.array([0.5]), np.array([0])),
        (np.array([[0, 0, 50, 50]], dtype=np.float32), np.array([0.9]), np.array([0])),
    ]
    assert compute_map(preds, records, NAMES).map50 == pytest.approx(0.5)


def test_no_ground_truth_at_all_is_nan() -> None:
    records = [_record([], [])]
    result = compute_map([_empty()], records, NAMES)
    assert math.isnan(result.map50) and math.isnan(result.map50_95)
    assert result.to_dict()["map50"] is None


def test_to_dict_is_json_ready(records: list[ImageRecord]) -> None:
    d = compute_map(_perfect(records), records, NAMES).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["per_class"]["zero"] == {"ap50": 1.0, "ap50_95": 1.0, "num_gt": 2, "num_images": 2}
    assert d["per_class"]["two"]["ap50"] is None
    assert (d["num_images"], d["num_gt"], d["num_dets"]) == (3, 3, 3)


def test_mismatched_lengths_and_bad_labels_raise(records: list[ImageRecord]) -> None:
    with pytest.raises(ValueError, match="predictions"):
        compute_map(_perfect(records)[:2], records, NAMES)
    preds = _perfect(records)
    preds[0] = (preds[0][0], preds[0][1], np.array([0, 7]))
    with pytest.raises(ValueError, match="label"):
        compute_map(preds, records, NAMES)
    with pytest.raises(DataError, match="a.png"):
        compute_map(_perfect(records), records, NAMES[:1])


def test_evaluation_prints_nothing(
    records: list[ImageRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    compute_map(_perfect(records), records, NAMES)
    assert capsys.readouterr() == ("", "")


def test_print_map_table_lists_classes_and_all_row() -> None:
    result = MapResult(
        map50=0.5,
        map50_95=0.25,
        per_class=(ClassAP("zero", 0.75, 0.5, 4, 3), ClassAP("one", math.nan, math.nan, 0, 0)),
        num_images=5,
        num_gt=4,
        num_dets=9,
    )
    buffer = io.StringIO()
    print_map_table(result, Console(file=buffer, width=120))
    lines = buffer.getvalue().splitlines()
    all_row = next(line for line in lines if " all " in line)
    assert "0.500" in all_row and "0.250" in all_row and "5" in all_row
    zero_row = next(line for line in lines if " zero " in line)
    assert "0.750" in zero_row and "3" in zero_row and "4" in zero_row
    assert "nan" not in buffer.getvalue()
