"""The deploy graph against the PyTorch model, run by real ONNX Runtime sessions."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import onnxsim
import pytest
import torch
from onnx import helper

from edgeyolo.errors import ExportError
from edgeyolo.export.graph import NET_PREFIX, dedupe_opsets, nms_tail
from edgeyolo.export.onnx_export import build_fp32, to_fp16
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.postprocess import decode_heads, from_padded, postprocess
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch
from edgeyolo.runtime.thresholds import retarget_nms
from tests.export.conftest import SIZE, busy_model


def run(path, images):
    with OnnxRuntimeSession(path, threads=1) as s:
        return s.run(images)


def torch_dets(net, images, **kw):
    with torch.no_grad():
        return detect_batch(net, torch.from_numpy(images), **kw)


@pytest.mark.parametrize("multi_label", [False, True])
def test_fp32_graph_reproduces_pytorch(tmp_path, mnist_images, multi_label):
    net = busy_model()
    kw = {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100}
    path, report = build_fp32(
        net,
        tmp_path / "m.onnx",
        img_size=SIZE,
        multi_label=multi_label,
        check_images=mnist_images,
        **kw,
    )
    with torch.no_grad():
        boxes, obj, cls = decode_heads(
            net(torch.from_numpy(mnist_images)), net.anchors, net.strides
        )
    ref = postprocess(boxes, obj, cls, multi_label=multi_label, **kw)
    out = run(path, mnist_images)
    got = from_padded(out["num_dets"], out["boxes"], out["scores"], out["classes"])
    assert sum(len(r) for r in ref) > 40  # the check has something to bite on
    # Detections are matched as `parity` matches them, never by row: two boxes with equal scores
    # may come back in either order from ONNX Runtime and PyTorch (seen on an AVX-512 CPU).
    for r, g in zip(ref, got, strict=True):
        assert len(g) == len(r)
        assert sorted(g.labels.tolist()) == sorted(r.labels.tolist())
        assert torch.allclose(g.scores.sort().values, r.scores.sort().values, atol=1e-5)
        one = parity_summary([r], [g])
        assert one.matched == len(r)  # matched pairs have the same class
        assert one.min_iou >= 0.999 and one.max_score_diff <= 1e-4  # float rounding only
    p = parity_summary(ref, got)
    assert p.matched_fraction == 1.0 and p.min_iou >= 0.999 and p.max_score_diff <= 1e-4
    # onnxsim ran, shrank the graph and changed nothing on the real images
    assert report is not None and report.nodes_after < report.nodes_before
    assert report.max_abs_diff <= 1e-4


def test_outputs_are_fixed_shape_padded_and_batch_is_dynamic(tmp_path, mnist_images):
    net = busy_model()
    path, _ = build_fp32(net, tmp_path / "m.onnx", img_size=SIZE, conf_thres=0.3, max_det=7)
    batch = run(path, mnist_images)
    assert batch["num_dets"].shape == (4, 1) and batch["num_dets"].dtype == np.int32
    assert batch["boxes"].shape == (4, 7, 4) and batch["boxes"].dtype == np.float32
    assert batch["scores"].shape == (4, 7) and batch["classes"].dtype == np.int32
    n = batch["num_dets"][:, 0]
    assert (n == 7).all()  # the busy model has far more than 7 boxes per image: capped at K
    # top-K by score, in descending order, equal to PyTorch's top 7
    ref = torch_dets(net, mnist_images, conf_thres=0.3, iou_thres=0.45, max_det=7)
    assert np.allclose(batch["scores"], np.stack([r.scores.numpy() for r in ref]), atol=1e-5)
    # one image at a time gives the same rows as the batch of 4
    for i in range(4):
        single = run(path, mnist_images[i : i + 1])
        assert np.array_equal(single["classes"][0], batch["classes"][i])
        assert np.allclose(single["boxes"][0], batch["boxes"][i], rtol=1e-4, atol=1e-2)


def test_padding_past_num_dets(tmp_path, mnist_images):
    net = busy_model()
    path, _ = build_fp32(net, tmp_path / "m.onnx", img_size=SIZE, conf_thres=0.4, max_det=300)
    out = run(path, mnist_images)
    for i, n in enumerate(out["num_dets"][:, 0]):
        assert 0 < n < 300
        assert (out["scores"][i, n:] == 0).all() and (out["classes"][i, n:] == -1).all()
        assert (out["boxes"][i, n:] == 0).all()
        assert (out["scores"][i, :n] > 0.4).all() and (out["classes"][i, :n] >= 0).all()


def nms_only(boxes, scores, **kw):
    """Run the hand-written NMS tail alone on ``boxes [1, N, 4]`` and ``scores [1, C, N]``."""
    model = nms_tail(num_classes=scores.shape[1], num_preds=boxes.shape[1], **kw)
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {"pred_boxes": boxes, "pred_scores": scores}), strict=True))


def test_nms_tail_on_hand_made_boxes():
    boxes = np.array(
        [[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]]], np.float32
    )  # IoU(box0, box1) = 90 / 110 = 0.818
    scores = np.zeros((1, 2, 4), np.float32)
    scores[0, 0] = [0.9, 0.8, 0.7, 0.0]  # class 0: box1 suppressed by box0, box2 kept
    scores[0, 1] = [0.0, 0.0, 0.0, 0.5]  # class 1: same place as box0, other class: kept
    out = nms_only(boxes, scores, conf_thres=0.25, iou_thres=0.45, max_det=10)
    n = int(out["num_dets"][0, 0])
    assert n == 3
    assert np.allclose(out["scores"][0, :n], [0.9, 0.7, 0.5])
    assert out["classes"][0, :n].tolist() == [0, 0, 1]
    assert np.allclose(out["boxes"][0, :n], boxes[0, [0, 2, 3]])
    # an IoU threshold above 0.818 keeps box1; a score threshold of 0.75 drops all but two
    assert (
        int(nms_only(boxes, scores, conf_thres=0.25, iou_thres=0.85, max_det=10)["num_dets"][0, 0])
        == 4
    )
    assert (
        int(nms_only(boxes, scores, conf_thres=0.75, iou_thres=0.45, max_det=10)["num_dets"][0, 0])
        == 1
    )


def test_fp16_keeps_decode_and_nms_in_fp32(tmp_path, mnist_images):
    net = busy_model()
    kw = {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100}
    fp32, _ = build_fp32(net, tmp_path / "a.onnx", img_size=SIZE, **kw)
    fp16 = to_fp16(fp32, tmp_path / "b.onnx")
    m = onnx.load(str(fp16))
    inits = {i.name: i for i in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(n.name.startswith(NET_PREFIX) for n in convs)
    assert all(inits[n.input[1]].data_type == onnx.TensorProto.FLOAT16 for n in convs)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # the tail's thresholds are still fp32 initializers: decode and NMS were not converted
    assert inits["score_threshold"].data_type == onnx.TensorProto.FLOAT
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    ref = torch_dets(net, mnist_images, **kw)
    out = run(fp16, mnist_images)
    p = parity_summary(
        ref, from_padded(out["num_dets"], out["boxes"], out["scores"], out["classes"])
    )
    # stated bound for fp16 on a random (badly conditioned) model: most boxes agree closely
    assert p.matched_fraction >= 0.9 and p.mean_iou >= 0.98 and p.max_score_diff <= 0.02


def test_raw_graph_returns_the_head_maps(tmp_path, mnist_images):
    net = busy_model()
    path, _ = build_fp32(net, tmp_path / "raw.onnx", img_size=SIZE, raw=True)
    out = run(path, mnist_images)
    with torch.no_grad():
        heads = net(torch.from_numpy(mnist_images))
    assert list(out) == ["head0", "head1"]
    for name, h in zip(out, heads, strict=True):
        assert np.allclose(out[name], h.numpy(), atol=1e-4)


def test_onnxsim_failure_and_output_change_are_reported(tmp_path, mnist_images, monkeypatch):
    net = busy_model()

    def crash(model, **_kw):
        os.write(2, b"[onnxsim] cannot fold node /foo\n")
        raise RuntimeError("bad node")

    monkeypatch.setattr(onnxsim, "simplify", crash)
    with pytest.raises(ExportError, match=r"onnxsim failed: bad node.*cannot fold.*--no-simplify"):
        build_fp32(
            net, tmp_path / "a.onnx", img_size=SIZE, conf_thres=0.3, check_images=mnist_images
        )
    assert not (tmp_path / "a.onnx").exists()

    def wrong(model, **_kw):  # a "simplification" that changes what the graph computes
        return retarget_nms(model, conf_thres=0.3, iou_thres=0.45, max_det=50), True

    monkeypatch.setattr(onnxsim, "simplify", wrong)
    with pytest.raises(ExportError, match="onnxsim changed the outputs"):
        build_fp32(
            net, tmp_path / "b.onnx", img_size=SIZE, conf_thres=0.3, check_images=mnist_images
        )
    # --no-simplify still exports
    path, report = build_fp32(net, tmp_path / "c.onnx", img_size=SIZE, simplify=False)
    assert path.exists() and report is None


def test_retarget_nms_changes_only_the_tail_settings():
    boxes = np.array(
        [[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]]], np.float32
    )
    scores = np.zeros((1, 2, 4), np.float32)
    scores[0, 0] = [0.9, 0.8, 0.7, 0.0]
    scores[0, 1] = [0.0, 0.0, 0.0, 0.5]
    base = nms_tail(num_classes=2, num_preds=4, conf_thres=0.25, iou_thres=0.45, max_det=8)

    def count(model):
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out = s.run(None, {"pred_boxes": boxes, "pred_scores": scores})
        return int(out[0][0, 0]), out[1].shape

    assert count(base) == (3, (1, 8, 4))
    assert count(retarget_nms(base, conf_thres=0.25, iou_thres=0.85, max_det=8)) == (4, (1, 8, 4))
    assert count(retarget_nms(base, conf_thres=0.75, iou_thres=0.45, max_det=8))[0] == 1
    assert count(retarget_nms(base, conf_thres=0.25, iou_thres=0.45, max_det=2)) == (2, (1, 2, 4))


def test_dedupe_opsets_keeps_each_domains_highest_version_once():
    model = nms_tail(num_classes=2, num_preds=4, conf_thres=0.25, iou_thres=0.45, max_det=8)
    model.opset_import.extend(
        [
            helper.make_opsetid("com.microsoft", 1),
            helper.make_opsetid("", 13),
            helper.make_opsetid("", 18),
            helper.make_opsetid("com.microsoft", 1),
        ]
    )
    dedupe_opsets(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18), ("com.microsoft", 1)]


def test_joined_graph_imports_each_opset_domain_once(tmp_path):
    # onnx.compose.merge_models writes the default domain twice; ONNX Runtime's quantizer
    # rejects such a file, so the unsimplified fp32 graph must already be merged
    path, _ = build_fp32(busy_model(), tmp_path / "m.onnx", img_size=SIZE, simplify=False)
    domains = [o.domain for o in onnx.load(str(path)).opset_import]
    assert domains == [""]
