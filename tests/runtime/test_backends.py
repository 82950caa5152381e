"""Backends behind one interface, and the Detector's mapping back to frame pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeyolo.errors import ConfigError, EdgeYoloError
from edgeyolo.evaluate.parity import parity
from edgeyolo.postprocess import Detections
from edgeyolo.runtime import detector as detector_mod
from edgeyolo.runtime.backends import (
    Backend,
    OnnxRuntimeBackend,
    TorchBackend,
    artifacts_in,
    open_backend,
)
from edgeyolo.runtime.detector import Detector


def test_backends_agree_on_the_same_inputs(exported, busy_checkpoint, mnist_images):
    with open_backend(busy_checkpoint, device="cpu", conf_thres=0.3) as ref_b:
        assert isinstance(ref_b, TorchBackend) and ref_b.img_size == 128
        ref = ref_b.infer(mnist_images)
        assert set(ref_b.last_times) == {"h2d", "compute", "postprocess"}
    with open_backend(exported / "model_fp32.onnx") as ort_b:
        assert isinstance(ort_b, OnnxRuntimeBackend)
        assert (ort_b.precision, ort_b.img_size, ort_b.max_batch) == ("fp32", 128, 4)
        assert ort_b.class_names == tuple(str(i) for i in range(10))
        got = ort_b.infer(mnist_images)
        assert ort_b.last_times["bytes_d2h"] == 4 * (4 + 100 * 4 * 4 + 100 * 4 + 100 * 4)
    p = parity(ref, got)
    assert p.ref_count > 20 and p.matched_fraction == 1.0 and p.min_iou > 0.999
    with open_backend(exported / "model_fp16.onnx") as h:
        assert h.precision == "fp16"
        assert parity(ref, h.infer(mnist_images)).matched_fraction > 0.9


def test_artifacts_in_lists_the_manifest_files_fp32_first(exported):
    assert [p.name for p in artifacts_in(exported)] == ["model_fp32.onnx", "model_fp16.onnx"]


def test_open_backend_errors_are_named(tmp_path, exported):
    with pytest.raises(ConfigError, match="nope.onnx: no such model file"):
        open_backend(tmp_path / "nope.onnx")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="unknown model type '.tflite'"):
        open_backend(tmp_path / "m.tflite")
    with pytest.raises(ConfigError, match="input size of an exported model is fixed"):
        open_backend(exported / "model_fp32.onnx", img_size=256)
    engine = tmp_path / "model_fp32.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(EdgeYoloError, match=r"no manifest.json beside the engine|TensorRT"):
        open_backend(engine)


class FixedBackend(Backend):
    """Returns one fixed box in input pixels and records what it was given."""

    name = "fixed"

    def __init__(self, box, img_size: int) -> None:
        super().__init__()
        self.box = box
        self.img_size = img_size
        self.class_names = ("a", "b")
        self.seen: list[np.ndarray] = []

    def infer(self, images):
        self.seen.append(images)
        d = Detections(
            boxes=torch.tensor([self.box], dtype=torch.float32),
            scores=torch.tensor([0.9]),
            labels=torch.tensor([1]),
        )
        return [d for _ in range(len(images))]


def test_detector_maps_boxes_back_to_non_square_frames(monkeypatch):
    # 200 x 100 frame into 128 px: scale 0.64, resized 128 x 64, 32 px of padding above.
    fake = FixedBackend([64.0, 48.0, 96.0, 64.0], img_size=128)
    monkeypatch.setattr(detector_mod, "open_backend", lambda *a, **k: fake)
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    with Detector("any.onnx") as det:
        d = det(frame)
    assert np.allclose(d.boxes, [[100.0, 25.0, 150.0, 50.0]], atol=1e-4)
    assert d.labels == ("b",) and d.class_ids.tolist() == [1] and len(d) == 1
    x = fake.seen[0]
    assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32
    # BGR in, RGB to the model: the blue frame lands in channel 2; padding is 114/255
    assert x[0, 2, 64, 64] == 1.0 and x[0, 0, 64, 64] == 0.0
    assert np.isclose(x[0, 0, 5, 5], 114 / 255)


def test_detector_filters_by_its_threshold_and_checks_frames(monkeypatch):
    fake = FixedBackend([0.0, 0.0, 10.0, 10.0], img_size=64)
    monkeypatch.setattr(detector_mod, "open_backend", lambda *a, **k: fake)
    det = Detector("any.onnx", conf_thres=0.95)
    assert len(det(np.zeros((64, 64, 3), np.uint8))) == 0
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        det(np.zeros((64, 64), np.uint8))
    det.close()


def test_detector_on_a_real_export_matches_the_checkpoint(
    exported,
    busy_checkpoint,
    mnist_small_yaml,
):
    import cv2

    frame = cv2.imread(str(sorted((mnist_small_yaml.parent / "images/test").glob("*.jpg"))[0]))
    frame = cv2.resize(frame, (150, 96))  # non-square
    with (
        Detector(busy_checkpoint, conf_thres=0.3, device="cpu") as a,
        Detector(exported / "model_fp32.onnx", conf_thres=0.3) as b,
    ):
        da, db = a(frame), b(frame)
    assert len(da) == len(db) > 0
    assert np.allclose(np.sort(da.scores), np.sort(db.scores), atol=1e-5)
    assert (da.boxes[:, 2] <= 150).all() and (da.boxes[:, 3] <= 96).all()


def test_detect_cli_runs_an_exported_model(exported, mnist_small_yaml, tmp_path):
    import json

    from typer.testing import CliRunner

    from edgeyolo.cli import app

    images = mnist_small_yaml.parent / "images" / "test"
    r = CliRunner().invoke(
        app,
        [
            "detect",
            str(images),
            "--model",
            str(exported / "model_fp32.onnx"),
            "--out",
            str(tmp_path / "pred"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(records) == len(list(images.glob("*.jpg")))
    assert all({"label", "bbox", "score"} <= set(d) for rec in records for d in rec["detections"])
    assert sorted(p.suffix for p in (tmp_path / "pred").iterdir()).count(".jpg") == len(records)
    bad = CliRunner().invoke(app, ["detect", str(images)])
    assert bad.exit_code == 1 and "--model" in bad.output
