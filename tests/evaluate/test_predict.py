"""The one scoring loop: numpy in, detections mapped back to each image's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeyolo.data.dataset import DetectionDataset
from edgeyolo.data.images import network_input
from edgeyolo.data.records import ImageRecord
from edgeyolo.detections import Detections
from edgeyolo.evaluate.predict import letterboxed_batch, predict_with
from tests.data.conftest import sample_records  # noqa: F401


def _noisy_record(tmp_path: Path, w: int, h: int, seed: int) -> ImageRecord:
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / f"noise_{seed}.png"
    Image.fromarray(rgb).save(path)
    return ImageRecord(path=path, width=w, height=h, boxes=np.zeros((0, 4), np.float32),
                       classes=np.zeros(0, np.int64))  # fmt: skip


def test_network_input_is_the_evaluation_transform_bit_for_bit(tmp_path: Path) -> None:
    records = [_noisy_record(tmp_path, 97, 61, 0), _noisy_record(tmp_path, 40, 130, 1)]
    ds = DetectionDataset(records, img_size=64, augment=None)
    for i, r in enumerate(records):
        x, params = network_input(r, 64)
        want = ds[i][0]
        assert x.dtype == np.float32 and x.shape == (3, 64, 64)
        assert torch.equal(torch.from_numpy(x), want)
        assert params == ds.letterbox_meta(i)
    batch = letterboxed_batch(records, 64)
    assert batch.shape == (2, 3, 64, 64) and np.array_equal(
        batch[1], network_input(records[1], 64)[0]
    )


def test_predict_with_maps_boxes_back_and_keeps_order(tmp_path: Path) -> None:
    records = [_noisy_record(tmp_path, 128, 64, i) for i in range(5)]  # scale 0.5, pad_y 16
    calls: list[int] = []

    def detect(x: np.ndarray) -> list[Detections]:
        assert x.dtype == np.float32 and x.shape[1:] == (3, 64, 64)
        calls.append(len(x))
        return [
            Detections(
                np.array([[10.0, 20.0, 30.0, 40.0]], np.float32),
                np.array([0.9], np.float32),
                np.array([k], np.int64),
            )
            for k in range(len(x))
        ]

    preds = predict_with(detect, records, img_size=64, batch=2)
    assert calls == [2, 2, 1]  # the remainder is its own batch
    assert len(preds) == 5
    boxes, scores, labels = preds[4]
    np.testing.assert_allclose(boxes, [[20.0, 8.0, 60.0, 48.0]])  # (x - pad) / scale
    assert labels.tolist() == [0] and scores.dtype == np.float32
    assert preds[1][2].tolist() == [1]  # second image of the first batch


def test_predict_with_refuses_a_detector_that_drops_images(tmp_path: Path) -> None:
    records = [_noisy_record(tmp_path, 64, 64, i) for i in range(3)]
    with pytest.raises(ValueError, match="2 results for 3 images"):
        predict_with(lambda x: [Detections.empty()] * 2, records, img_size=64, batch=4)
