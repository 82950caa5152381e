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

from edgeyolo.config import DEFAULT_MAX_CANDIDATES, ExportConfig
from edgeyolo.detections import from_padded
from edgeyolo.errors import ConfigError, ExportError
from edgeyolo.export.graph import NET_PREFIX, dedupe_opsets, nms_tail
from edgeyolo.export.onnx_export import build_fp32, check_opset, to_fp16
from edgeyolo.export.pipeline import export_model
from edgeyolo.metrics.parity import parity_summary
from edgeyolo.postprocess import decode_heads, postprocess
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
        assert np.allclose(np.sort(g.scores), np.sort(r.scores.numpy()), atol=1e-5)
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
    feed = {"pred_boxes": boxes, "pred_scores": np.ascontiguousarray(scores.transpose(0, 2, 1))}
    return dict(zip(names, s.run(None, feed), strict=True))


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
        out = s.run(None, {"pred_boxes": boxes, "pred_scores": scores.transpose(0, 2, 1).copy()})
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


# ------------------------------------------------------------ the tail: TensorRT-ready, cheap


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _tail_outputs(model: onnx.ModelProto, boxes: np.ndarray, scores: np.ndarray) -> list:
    """The tail's outputs for ``boxes [B, N, 4]`` and ``scores [B, C, N]`` (NMS's layout)."""
    feed = {"pred_boxes": boxes, "pred_scores": np.ascontiguousarray(scores.transpose(0, 2, 1))}
    return _session(model).run(None, feed)


def _ort_selected(boxes, scores, *, conf, iou, max_det) -> np.ndarray:
    """``NonMaxSuppression`` alone in ONNX Runtime: ``[S, 3]`` (image, class, box)."""
    c, n = scores.shape[1], scores.shape[2]
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["b", "s", "k", "i", "c"], ["sel"])],
        "nms",
        [
            helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, ["B", n, 4]),
            helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, ["B", c, n]),
        ],
        [helper.make_tensor_value_info("sel", onnx.TensorProto.INT64, ["S", 3])],
        initializer=[
            onnx.numpy_helper.from_array(np.array([max_det], np.int64), "k"),
            onnx.numpy_helper.from_array(np.array([iou], np.float32), "i"),
            onnx.numpy_helper.from_array(np.array([conf], np.float32), "c"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return _session(model).run(None, {"b": boxes, "s": scores})[0]


def _dense_definition(boxes, scores, selected, k):
    """What the tail computed as a dense ``[B, C * N]`` scatter + ``TopK`` (its first version):
    each image's survivors by score, then by ``class * N + box``, padded with 0 / 0 / -1."""
    b_, _, n = scores.shape
    num = np.zeros((b_, 1), np.int32)
    out_boxes = np.zeros((b_, k, 4), np.float32)
    out_scores = np.zeros((b_, k), np.float32)
    out_cls = np.full((b_, k), -1, np.int32)
    for b in range(b_):
        rows = [(scores[b, c, i], c, i) for bb, c, i in selected.tolist() if bb == b]
        rows = sorted(rows, key=lambda r: (-r[0], r[1] * n + r[2]))[:k]
        num[b, 0] = len(rows)
        for j, (s, c, i) in enumerate(rows):
            out_boxes[b, j], out_scores[b, j], out_cls[b, j] = boxes[b, i], s, c
    return [num, out_boxes, out_scores, out_cls]


def _random_tail_inputs(rng, *, ties: bool, c: int | None = None, n: int | None = None):
    b = int(rng.integers(1, 4))
    c = c or int(rng.integers(1, 6))
    n = n or int(rng.integers(1, 60))
    xy = rng.uniform(0, 100, (b, n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (b, n, 2)).astype(np.float32)], -1)
    if ties:  # eight score levels: ties within and across classes everywhere
        scores = (rng.integers(0, 8, (b, c, n)) / 8).astype(np.float32)
    else:
        scores = rng.random((b, c, n), dtype=np.float32)
    return boxes, scores


@pytest.mark.parametrize("multi_label", [False, True])
def test_tail_equals_the_dense_definition_ties_and_padding_included(multi_label):
    rng = np.random.default_rng(0)
    for _ in range(60):
        boxes, scores = _random_tail_inputs(rng, ties=True)
        if not multi_label:  # DecodeHead's form: only each box's best class scores
            scores = scores * (scores >= scores.max(axis=1, keepdims=True))
        kw = {
            "conf": float(rng.choice([0.0, 0.1, 0.3])),
            "iou": float(rng.choice([0.3, 0.5, 0.9])),
            "max_det": int(rng.integers(1, 20)),
        }
        tail = nms_tail(
            num_classes=scores.shape[1],
            num_preds=scores.shape[2],
            conf_thres=kw["conf"],
            iou_thres=kw["iou"],
            max_det=kw["max_det"],
            multi_label=multi_label,
        )
        got = _tail_outputs(tail, boxes, scores)
        k = min(kw["max_det"], scores.shape[1] * scores.shape[2])
        want = _dense_definition(boxes, scores, _ort_selected(boxes, scores, **kw), k)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and np.array_equal(g, w)


@pytest.mark.parametrize("multi_label", [False, True])
def test_candidate_cap_in_the_graph_is_postprocess_bit_for_bit(multi_label):
    rng = np.random.default_rng(1)
    bound = 0
    for _ in range(40):
        b, n, c = int(rng.integers(1, 4)), int(rng.integers(40, 120)), int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (b, n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (b, n, 2)).astype(np.float32)], -1)
        obj, cls = rng.random((b, n), dtype=np.float32), rng.random((b, n, c), dtype=np.float32)
        scores = obj[..., None] * cls
        if not multi_label:
            scores = scores * (scores >= scores.max(-1, keepdims=True))
        conf, cap, max_det = float(rng.choice([0.0, 0.05, 0.3])), int(rng.integers(1, 40)), 60
        tail = nms_tail(
            num_classes=c,
            num_preds=n,
            conf_thres=conf,
            iou_thres=0.5,
            max_det=max_det,
            max_candidates=cap,
            multi_label=multi_label,
        )
        assert sum(x.op_type == "TopK" for x in tail.graph.node) == 2  # the cap is in the graph
        num, out_boxes, out_scores, out_cls = _tail_outputs(
            tail, boxes, np.ascontiguousarray(scores.transpose(0, 2, 1))
        )
        t = [torch.from_numpy(x) for x in (boxes, obj, cls)]
        kw = {"conf_thres": conf, "iou_thres": 0.5, "max_det": max_det, "multi_label": multi_label}
        ref = postprocess(*t, max_candidates=cap, **kw)
        bound += sum(len(r) for r in ref) < sum(len(r) for r in postprocess(*t, **kw))
        for i, r in enumerate(ref):
            m = int(num[i, 0])
            assert m == len(r)
            assert np.array_equal(out_scores[i, :m], r.scores.numpy())
            assert np.array_equal(out_cls[i, :m], r.labels.numpy())
            assert np.array_equal(out_boxes[i, :m], r.boxes.numpy())
    assert bound >= 10  # the cap changed the result often: the comparison has something to bite on


def test_tail_work_after_nms_grows_with_the_survivors_not_classes_times_boxes():
    rng = np.random.default_rng(2)
    c, n, max_det = 80, 2000, 100
    boxes, scores = _random_tail_inputs(rng, ties=False, c=c, n=n)
    scores = np.where(scores > 0.999, scores, 0.0).astype(np.float32)  # a few hundred pairs
    tail = nms_tail(num_classes=c, num_preds=n, conf_thres=0.5, iou_thres=0.5, max_det=max_det)
    after = [o for node in tail.graph.node[_nms_at(tail) :] for o in node.output]
    inferred = onnx.shape_inference.infer_shapes(tail).graph.value_info
    types = {v.name: v.type.tensor_type.elem_type for v in inferred}
    types.update({o.name: o.type.tensor_type.elem_type for o in tail.graph.output})
    probe = onnx.ModelProto()
    probe.CopyFrom(tail)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(o, types[o], None) for o in after)
    values = dict(zip(after, _tail_outputs(probe, boxes, scores), strict=True))
    b, s = boxes.shape[0], values["nms/selected"].shape[0]
    assert s > 0 and 4 * b * (s + max_det) < c * n / 10
    for name, v in values.items():
        assert v.size <= 4 * b * (s + max_det), (name, v.shape)


def _nms_at(model: onnx.ModelProto) -> int:
    return [n.op_type for n in model.graph.node].index("NonMaxSuppression")


@pytest.mark.parametrize("multi_label", [False, True])
def test_exported_graph_is_free_of_what_tensorrt_8_6_misreads(tmp_path, multi_label):
    path, _ = build_fp32(
        busy_model(), tmp_path / "m.onnx", img_size=SIZE, max_candidates=50, multi_label=multi_label
    )
    model = onnx.load(str(path))
    shapes = [n for n in model.graph.node if n.op_type == "Shape"]
    assert shapes and all(not n.attribute for n in shapes)  # no start / end (8.6 ignores them)
    assert not any(n.op_type == "ScatterND" for n in model.graph.node)
    tops = [n for n in model.graph.node if n.op_type == "TopK"]
    k = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert sorted(int(k[t.input[1]][0]) for t in tops) == [50, 100]  # the cap and max_det
    assert model.opset_import[0].version == 17


def test_opset_is_checked_against_the_trt_targets_and_18_works(tmp_path, mnist_images):
    net = busy_model()
    with pytest.raises(ExportError, match=r"--opset 18 .*TensorRT 8\.6 parses opsets up to 17"):
        build_fp32(net, tmp_path / "a.onnx", img_size=SIZE, opset=18)
    with pytest.raises(ExportError, match=r"TensorRT 10\.3 .*up to 20.*--opset 20 or lower"):
        check_opset(21, ("10.3", "10"))
    check_opset(21, ("10", "11"))
    kw = {"img_size": SIZE, "conf_thres": 0.05, "max_candidates": 50, "check_images": mnist_images}
    p17, _ = build_fp32(net, tmp_path / "b.onnx", **kw)
    p18, _ = build_fp32(net, tmp_path / "c.onnx", opset=18, trt=("10", "11"), **kw)
    m18 = onnx.load(str(p18))
    assert m18.opset_import[0].version == 18
    (rmax,) = [n for n in m18.graph.node if n.op_type == "ReduceMax" and "/nms/" in n.name]
    assert len(rmax.input) == 2 and {a.name for a in rmax.attribute} == {"keepdims"}
    a, b = run(p17, mnist_images), run(p18, mnist_images)
    assert a["num_dets"].sum() > 0
    for name in a:
        assert np.array_equal(a[name], b[name])


def test_export_settings_bound_every_topk_k():
    with pytest.raises(ConfigError, match=r"--max-det must be between 1 and 3840, got 3841"):
        ExportConfig(weights="x", max_det=3841)
    for bad in (0, 3841):
        with pytest.raises(ConfigError, match=rf"--max-candidates .* got {bad}.*TopK"):
            ExportConfig(weights="x", max_candidates=bad)
    assert ExportConfig(weights="x", max_det=3840, max_candidates=3840).max_candidates == 3840
    assert ExportConfig(weights="x").max_candidates == DEFAULT_MAX_CANDIDATES == 3840


def test_retarget_keeps_the_cap_when_onnxsim_merged_it_with_k():
    rng = np.random.default_rng(3)
    boxes, scores = _random_tail_inputs(rng, ties=False, c=3, n=40)
    kw = {"num_classes": 3, "num_preds": 40, "conf_thres": 0.05, "iou_thres": 0.5}
    base, ok = onnxsim.simplify(nms_tail(max_det=5, max_candidates=5, **kw))
    assert ok
    tops = [n for n in base.graph.node if n.op_type == "TopK"]
    assert tops[0].input[1] == tops[1].input[1]  # one initializer for the cap and K now
    for max_det in (30, 2, 30):
        base = retarget_nms(base, conf_thres=0.05, iou_thres=0.5, max_det=max_det)
        want = _tail_outputs(nms_tail(max_det=max_det, max_candidates=5, **kw), boxes, scores)
        for g, w in zip(_tail_outputs(base, boxes, scores), want, strict=True):
            assert np.array_equal(g, w)
    used = {i for n in base.graph.node for i in n.input}
    assert {i.name for i in base.graph.initializer} <= used  # nothing left for ORT to warn about


def test_manifest_records_the_cap_and_multi_label_parity_is_exact(
    tmp_path, busy_checkpoint, calib_folder
):
    cfg = ExportConfig(
        weights=str(busy_checkpoint),
        out=str(tmp_path / "o"),
        calib=str(calib_folder),
        conf_thres=0.05,
        max_candidates=40,
        multi_label=True,
    )
    m = export_model(cfg, progress=False, log=lambda _s: None)
    assert m["nms"]["max_candidates"] == 40 and m["nms"]["multi_label"] is True
    p = m["checks"]["parity_vs_torch"]["fp32"]
    assert p["ref_count"] > 40 and p["matched_fraction"] == 1.0 and p["max_score_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "o" / "model_fp32.onnx"))
    assert sum(n.op_type == "TopK" for n in graph.graph.node) == 2
