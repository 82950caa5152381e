"""Backends behind one interface, and the Detector's mapping back to frame pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeyolo.errors import ConfigError, DataError, EdgeYoloError, ModelFileError
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.postprocess import Detections
from edgeyolo.runtime import detector as detector_mod
from edgeyolo.runtime.backends import (
    DYNAMIC_BATCH,
    Backend,
    OnnxRuntimeBackend,
    artifacts_in,
    open_backend,
)
from edgeyolo.runtime.detector import Detector
from edgeyolo.runtime.pytorch import TorchBackend


def test_torch_backend_gives_back_the_thread_count(busy_checkpoint):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with open_backend(busy_checkpoint, device="cpu", threads=want):
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == before


def test_backends_agree_on_the_same_inputs(exported, busy_checkpoint, mnist_images):
    with open_backend(busy_checkpoint, device="cpu", conf_thres=0.3) as ref_b:
        assert isinstance(ref_b, TorchBackend) and ref_b.img_size == 128
        ref = ref_b.infer(mnist_images)
        assert set(ref_b.last_times) == {"h2d", "compute", "postprocess"}
    with open_backend(exported / "model_fp32.onnx") as ort_b:
        assert isinstance(ort_b, OnnxRuntimeBackend)
        # the graph's batch axis is dynamic: ONNX Runtime takes any batch (the manifest's
        # max_batch 4 is the engine's profile)
        assert (ort_b.precision, ort_b.img_size, ort_b.max_batch) == ("fp32", 128, DYNAMIC_BATCH)
        assert len(ort_b.infer(np.concatenate([mnist_images] * 2))) == 2 * len(mnist_images)
        assert ort_b.class_names == tuple(str(i) for i in range(10))
        got = ort_b.infer(mnist_images)
        assert ort_b.last_times["bytes_d2h"] == 4 * (4 + 100 * 4 * 4 + 100 * 4 + 100 * 4)
    p = parity_summary(ref, got)
    assert p.ref_count > 20 and p.matched_fraction == 1.0 and p.min_iou > 0.999
    with open_backend(exported / "model_fp16.onnx") as h:
        assert h.precision == "fp16"
        assert parity_summary(ref, h.infer(mnist_images)).matched_fraction > 0.9


def test_artifacts_in_lists_the_manifest_files_fp32_first(exported):
    assert [p.name for p in artifacts_in(exported)] == ["model_fp32.onnx", "model_fp16.onnx"]


def test_open_backend_errors_are_named(tmp_path, exported):
    with pytest.raises(ModelFileError, match="nope.onnx: no such model file"):
        open_backend(tmp_path / "nope.onnx")
    with pytest.raises(ConfigError, match="--device 'gpu' is not a device"):
        open_backend(exported / "model_fp32.onnx", device="gpu")
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
        self.entered = self.exited = 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1

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


def test_detector_checks_frames(monkeypatch):
    fake = FixedBackend([0.0, 0.0, 10.0, 10.0], img_size=64)
    monkeypatch.setattr(detector_mod, "open_backend", lambda *a, **k: fake)
    det = Detector("any.onnx")
    assert fake.entered == 0  # nothing acquired before open()
    with pytest.raises(RuntimeError, match=r"not open: use `with Detector\(model\) as det:`"):
        det(np.zeros((64, 64, 3), np.uint8))
    assert det.open() is det and det.open() is det  # idempotent
    assert len(det(np.zeros((64, 64, 3), np.uint8))) == 1
    with pytest.raises(DataError, match=r"frame 0 is uint8 \(64, 64\); .*\(H, W, 3\) uint8"):
        det(np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match=r"frame 1 is float32 \(8, 8, 3\)"):
        det.batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    det.close()
    det.close()
    assert (fake.entered, fake.exited) == (1, 1)


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


# ------------------------------------------------------- NMS thresholds of exported models


@pytest.fixture(scope="module")
def roomy(exported, calib_folder, tmp_path_factory):
    """The fixture export's graphs (conf 0.3, IoU 0.45) with room for 300 detections, saved
    without a manifest (so their own initializers are what the backend reads), plus an int8 one.
    At max_det 100 the busy model fills every image, which would hide what a threshold does."""
    import onnx

    from edgeyolo.export.calib import load_calibration
    from edgeyolo.export.quantize import calibrate, quantize_int8
    from edgeyolo.runtime.thresholds import retarget_nms

    out = tmp_path_factory.mktemp("roomy")
    for precision in ("fp32", "fp16"):
        model = onnx.load(str(exported / f"model_{precision}.onnx"))
        wide = retarget_nms(model, conf_thres=0.3, iou_thres=0.45, max_det=300)
        onnx.save(wide, str(out / f"model_{precision}.onnx"))
    calib = load_calibration(calib_folder, img_size=128, progress=False)
    ranges = calibrate(out / "model_fp32.onnx", calib, method="minmax")
    quantize_int8(out / "model_fp32.onnx", out / "model_int8.onnx", ranges=ranges)
    return out


def _torch_at(busy_checkpoint, images, **nms) -> list[Detections]:
    with open_backend(busy_checkpoint, device="cpu", **nms) as b:
        return b.infer(images)


def _count(dets: list[Detections]) -> int:
    return sum(len(d) for d in dets)


def _same(a: list[Detections], b: list[Detections]) -> None:
    """Box for box the same detections (class, IoU > 0.999, score within 1e-5)."""
    p = parity_summary(a, b)
    assert p.ref_count == p.other_count == p.matched, p
    assert p.min_iou > 0.999 and p.max_score_diff < 1e-5, p


@pytest.mark.parametrize(
    ("conf", "iou", "retargeted"),
    [(0.1, None, True), (None, 0.2, True), (0.1, 0.7, True), (0.4, None, False)],
)
def test_onnx_runs_at_the_requested_thresholds_like_pytorch(
    roomy, busy_checkpoint, mnist_images, conf, iou, retargeted
):
    """The graph has conf 0.3 and IoU 0.45 built in; any other request is honoured, box for box
    equal to the checkpoint's own post-processing at those thresholds."""
    want = {"conf_thres": 0.3 if conf is None else conf, "iou_thres": 0.45 if iou is None else iou}
    with open_backend(roomy / "model_fp32.onnx", conf_thres=conf, iou_thres=iou) as b:
        assert b.plan.retarget is retargeted and b.plan.limit is not retargeted
        assert (b.nms.conf_thres, b.nms.iou_thres, b.nms.max_det) == (*want.values(), 300)
        got = b.infer(mnist_images)
    ref = _torch_at(busy_checkpoint, mnist_images, max_det=300, **want)
    baked = _torch_at(busy_checkpoint, mnist_images, conf_thres=0.3, max_det=300)
    assert _count(ref) != _count(baked)  # the request changes the result: the test can bite
    assert max(len(d) for d in ref) < 300  # and no image is cut at max_det
    _same(ref, got)


def test_onnx_without_a_request_keeps_its_own_thresholds(exported, busy_checkpoint, mnist_images):
    with open_backend(exported / "model_fp32.onnx") as b:
        assert str(b.nms) == "conf 0.3, IoU 0.45, max_det 100"
        assert not b.plan.retarget and not b.plan.limit
        got = b.infer(mnist_images)
    _same(_torch_at(busy_checkpoint, mnist_images, conf_thres=0.3), got)


def test_fewer_detections_are_a_filter_and_more_a_retarget(roomy, mnist_images):
    path = roomy / "model_fp32.onnx"
    with open_backend(path) as b:
        full = b.infer(mnist_images)
    with open_backend(path, max_det=5) as b:
        assert b.plan.limit and not b.plan.retarget
        top5 = b.infer(mnist_images)
    for d, t in zip(full, top5, strict=True):
        assert np.array_equal(t.scores, d.scores[:5]) and np.array_equal(t.labels, d.labels[:5])
    with open_backend(path, max_det=400, iou_thres=1.0) as b:
        assert b.plan.retarget and b.nms.max_det == 400
        assert b.session.run(mnist_images)["boxes"].shape == (4, 400, 4)  # K followed
        assert max(len(d) for d in b.infer(mnist_images)) > max(len(d) for d in full)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_retargeting_works_on_fp16_and_int8_graphs(roomy, mnist_images, precision):
    """Lowering conf adds boxes and keeps every box the graph gave at its own conf (exact: greedy
    NMS never lets a lower score suppress a higher one); another IoU changes the result."""
    from edgeyolo.runtime.backends import limit_detections
    from edgeyolo.runtime.thresholds import NmsSettings

    path = roomy / f"model_{precision}.onnx"
    with open_backend(path) as b:
        assert b.nms == NmsSettings(0.3, 0.45, 300)
        own = b.infer(mnist_images)
    with open_backend(path, conf_thres=0.05) as b:
        assert b.plan.retarget
        low = b.infer(mnist_images)
    with open_backend(path, iou_thres=0.2) as b:
        tight = b.infer(mnist_images)
    assert _count(low) > _count(own) > 0
    back = limit_detections(low, NmsSettings(0.3, 0.45, 300))
    for a, c in zip(own, back, strict=True):
        assert np.array_equal(a.labels, c.labels) and np.array_equal(a.scores, c.scores)
        assert np.array_equal(a.boxes, c.boxes)
    assert 0 < _count(tight) < _count(own)


def test_threshold_requests_out_of_range_are_refused(exported):
    with pytest.raises(ConfigError, match=r"--conf\) must be in \[0, 1\), got 1.5"):
        open_backend(exported / "model_fp32.onnx", conf_thres=1.5)
    with pytest.raises(ConfigError, match=r"--iou\) must be in \(0, 1\], got 0.0"):
        open_backend(exported / "model_fp32.onnx", iou_thres=0.0)


def test_detector_uses_the_graphs_thresholds_unless_told(
    exported, busy_checkpoint, mnist_small_yaml
):
    import cv2

    frame = cv2.imread(str(sorted((mnist_small_yaml.parent / "images/test").glob("*.jpg"))[0]))
    with Detector(exported / "model_fp32.onnx") as own:
        assert (own.conf_thres, own.nms.iou_thres, own.nms.max_det) == (0.3, 0.45, 100)
        d_own = own(frame)
    nms = {"conf_thres": 0.1, "iou_thres": 0.6, "max_det": 300}
    with (
        Detector(exported / "model_fp32.onnx", **nms) as low,
        Detector(busy_checkpoint, device="cpu", **nms) as ref,
    ):
        assert low.conf_thres == 0.1
        d_low, d_ref = low(frame), ref(frame)
    assert 300 > len(d_low) == len(d_ref) > len(d_own)
    assert np.allclose(np.sort(d_low.scores), np.sort(d_ref.scores), atol=1e-5)


def test_detect_cli_applies_conf_and_iou_to_an_exported_model(
    exported, busy_checkpoint, mnist_small_yaml, tmp_path
):
    """`detect --model X.onnx --conf/--iou` used to ignore both silently; now the graph gives
    what the checkpoint gives at those thresholds."""
    import json

    from typer.testing import CliRunner

    from edgeyolo.cli import app

    images = mnist_small_yaml.parent / "images" / "test"

    def run(model, out, *extra):
        args = ["detect", str(images), "--model", str(model), "--out", str(tmp_path / out)]
        r = CliRunner().invoke(app, [*args, "--json", "--device", "cpu", *extra])
        assert r.exit_code == 0, r.output
        records = json.loads((tmp_path / out / "detections.json").read_text())
        return " ".join(r.output.split()), [[d["score"] for d in r["detections"]] for r in records]

    said, own = run(exported / "model_fp32.onnx", "own")
    assert "onnxruntime on cpu, conf 0.3, IoU 0.45, max_det 100" in said
    said, onnx_low = run(exported / "model_fp32.onnx", "low", "--conf", "0.1", "--iou", "0.05")
    assert "onnxruntime on cpu, conf 0.1, IoU 0.05, max_det 100" in said
    _, pt_low = run(busy_checkpoint, "pt", "--conf", "0.1", "--iou", "0.05")
    assert [len(s) for s in onnx_low] == [len(s) for s in pt_low] != [len(s) for s in own]
    for a, b in zip(onnx_low, pt_low, strict=True):
        assert np.allclose(sorted(a), sorted(b), atol=2e-4)  # 4 decimals in the JSON


def test_a_hand_broken_manifest_is_named(exported, tmp_path):
    import json
    import shutil

    shutil.copy(exported / "model_fp32.onnx", tmp_path / "model_fp32.onnx")
    manifest = json.loads((exported / "manifest.json").read_text())
    del manifest["input"]["shape"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"manifest.json: no valid input.shape"):
        open_backend(tmp_path / "model_fp32.onnx")


def test_detector_on_a_graph_without_its_manifest_names_classes_by_id(roomy):
    with Detector(roomy / "model_fp32.onnx") as det:
        assert det.names == () and det.img_size == 128 and det.batch([]) == []
        d = det(np.full((96, 150, 3), 200, np.uint8))
    assert len(d) > 0 and d.labels == tuple(str(int(i)) for i in d.class_ids)
