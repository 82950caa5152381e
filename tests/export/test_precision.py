"""Precision carried by the graph: fp16 with one Cast at each edge of the network, int8 with fp16
outside its Q/DQ pairs, Q/DQ on residual Adds; checked with ONNX's type inference and run by ONNX
Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeyolo.config import ExportConfig
from edgeyolo.detections import from_padded
from edgeyolo.errors import ConfigError, ExportError
from edgeyolo.export.calib import CalibSet
from edgeyolo.export.fp16 import convert_region_to_fp16, edge_casts, region_nodes
from edgeyolo.export.graph import NET_PREFIX
from edgeyolo.export.onnx_export import build_fp32, to_fp16
from edgeyolo.export.pipeline import export_model
from edgeyolo.export.quantize import (
    calibrate,
    quantize_int8,
    residual_adds,
    resolve_high_precision,
)
from edgeyolo.metrics.parity import box_iou, parity_summary
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.pytorch import detect_batch
from tests.export.conftest import SIZE, busy_model

KW = {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100}
HEADS = ("/net/stages.0/head/Conv_output_0", "/net/stages.1/head/Conv_output_0")
EDGES = ["to_fp16/images", *(f"to_fp32/{h}" for h in HEADS)]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, mnist_images: np.ndarray) -> Path:
    path, _ = build_fp32(
        busy_model(),
        tmp_path_factory.mktemp("p") / "fp32.onnx",
        img_size=SIZE,
        check_images=mnist_images,
        **KW,
    )
    return path


@pytest.fixture(scope="module")
def fp16(fp32: Path) -> Path:
    return to_fp16(fp32, fp32.with_name("fp16.onnx"))


def dtypes(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    out = {i.name: i.data_type for i in g.initializer}
    out.update((v.name, v.type.tensor_type.elem_type) for v in [*g.input, *g.value_info, *g.output])
    return out


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_fp16_graph_casts_once_at_each_edge_of_the_network(fp32: Path, fp16: Path) -> None:
    m32, m16 = onnx.load(fp32), onnx.load(fp16)
    onnx.checker.check_model(m16, full_check=True)  # types consistent, topologically sorted
    # yolov3-tiny: the input into fp16, the two head maps back to fp32 before the tail (the
    # converter of onnxruntime.transformers wrote 137 Casts here)
    assert edge_casts(m16, NET_PREFIX) == EDGES
    added = [n for n in m16.graph.node if n.name in EDGES]
    assert [helper.get_attribute_value(n.attribute[0]) for n in added] == [10, 1, 1]
    # besides them the graph is the fp32 one: same nodes, names and order
    rest = [(n.name, n.op_type) for n in m16.graph.node if n.name not in EDGES]
    assert rest == [(n.name, n.op_type) for n in m32.graph.node]
    outputs = [o for n in m16.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))  # single static assignment
    t16, t32 = dtypes(m16), dtypes(m32)
    region = region_nodes(m16.graph, NET_PREFIX)
    for i, n in enumerate(m16.graph.node):
        floats = [t for t in [*n.input, *n.output] if t32.get(t) == TensorProto.FLOAT]
        if n.name in EDGES:
            continue
        if i in region and n.op_type not in ("Constant", "Resize"):
            assert floats and all(t16[t] == TensorProto.FLOAT16 for t in floats), n.name
        elif i not in region:  # the decode + NMS tail: untouched fp32
            assert all(t16[t] == TensorProto.FLOAT for t in floats), n.name
    resize = next(n for n in m16.graph.node if n.op_type == "Resize")
    assert t16[resize.input[0]] == TensorProto.FLOAT16
    assert t16[resize.input[2]] == TensorProto.FLOAT  # `scales` is tensor(float) in every opset
    io = [(v.name, v.type.tensor_type.elem_type) for v in [*m16.graph.input, *m16.graph.output]]
    assert io == [
        (v.name, v.type.tensor_type.elem_type) for v in [*m32.graph.input, *m32.graph.output]
    ]


def test_fp16_graph_matches_pytorch_within_the_stated_bound(
    fp16: Path, mnist_images: np.ndarray
) -> None:
    """Bound (as for every fp16 graph of the random, badly conditioned busy model): >= 90 % of
    boxes matched, mean IoU >= 0.98, scores within 0.02."""
    with torch.no_grad():
        ref = detect_batch(busy_model(), torch.from_numpy(mnist_images), **KW)
    with OnnxRuntimeSession(fp16, threads=1) as s:
        out = s.run(mnist_images)
    got = from_padded(out["num_dets"], out["boxes"], out["scores"], out["classes"])
    p = parity_summary(ref, got)
    assert p.matched_fraction >= 0.9 and p.mean_iou >= 0.98 and p.max_score_diff <= 0.02


def test_fp16_raw_graph_keeps_head_names_and_fp32_outputs(
    tmp_path: Path, mnist_images: np.ndarray
) -> None:
    raw, _ = build_fp32(busy_model(), tmp_path / "raw.onnx", img_size=SIZE, raw=True)
    half = to_fp16(raw, tmp_path / "raw16.onnx")
    m = onnx.load(half)
    assert edge_casts(m, NET_PREFIX) == ["to_fp16/images", "to_fp32/head0", "to_fp32/head1"]
    assert [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output] == [
        ("head0", TensorProto.FLOAT),
        ("head1", TensorProto.FLOAT),
    ]
    a, b = run(raw, {"images": mnist_images}), run(half, {"images": mnist_images})
    for x, y in zip(a, b, strict=True):  # fp16: ~3 significant digits of each head value
        assert y.dtype == np.float32
        assert np.abs(x - y).max() <= 2e-3 * np.abs(x).max() + 1e-3


def _tiny_graph(weight: np.ndarray, opset: int = 17) -> onnx.ModelProto:
    """``x → /net/Conv → t``; ``t`` read by two tail nodes (``Sigmoid``, ``Relu``)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["t"], name="/net/conv/Conv"),
        helper.make_node("Sigmoid", ["t"], ["a"], name="/tail/Sigmoid"),
        helper.make_node("Relu", ["t"], ["b"], name="/tail/Relu"),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [1, 2, 4, 4])],
        [helper.make_tensor_value_info(n, f, [1, 2, 4, 4]) for n in ("a", "b")],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_a_tensor_read_by_two_fp32_nodes_gets_one_cast() -> None:
    # ONNX Runtime 1.30's converter gave each reader its own Cast, all writing one name, which
    # onnx.checker rejects ("Graph must be in single static assignment (SSA) form")
    w = np.random.default_rng(0).normal(size=(2, 2, 1, 1)).astype(np.float32)
    half, report = convert_region_to_fp16(_tiny_graph(w), NET_PREFIX)
    onnx.checker.check_model(half, full_check=True)
    assert report.casts == (("to_fp16/x", TensorProto.FLOAT16), ("to_fp32/t", TensorProto.FLOAT))
    readers = [n for n in half.graph.node if n.name.startswith("/tail/")]
    assert [n.input[0] for n in readers] == ["t_fp32", "t_fp32"]
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 4)).astype(np.float32)
    for want, got in zip(run(_tiny_graph(w), {"x": x}), run(half, {"x": x}), strict=True):
        assert np.allclose(want, got, atol=1e-2)


def test_fp16_refuses_what_it_cannot_convert() -> None:
    big = np.full((2, 2, 1, 1), 1e6, np.float32)
    with pytest.raises(ExportError, match="initializer w holds values beyond fp16's range"):
        convert_region_to_fp16(_tiny_graph(big), NET_PREFIX)
    with pytest.raises(ExportError, match="no node named /other/"):
        convert_region_to_fp16(_tiny_graph(big), "/other/")


def test_weight_scales_below_fp16s_normal_range_are_rerounded() -> None:
    """A per-channel weight scale of 1e-7 is an fp16 subnormal (a few significant bits): the int8
    codes are re-rounded to the fp16 scale, so the dequantized weights stay within half a step;
    a normal-range scale leaves its codes as they were."""
    q = np.array([[[[127]]], [[[-101]]]], np.int8)
    s32 = np.array([1e-2, 1e-7], np.float32)
    f, i8 = TensorProto.FLOAT, TensorProto.INT8
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0, name="/net/w/DQ"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="/net/conv/Conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", f, [1, 2, 2, 2])],
        initializer=[
            numpy_helper.from_array(q, "wq"),
            numpy_helper.from_array(s32, "ws"),
            helper.make_tensor("wz", i8, [2], [0, 0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    half, report = convert_region_to_fp16(model, NET_PREFIX)
    inits = {i.name: numpy_helper.to_array(i) for i in half.graph.initializer}
    s16, q2 = inits["ws"], inits["wq"]
    assert s16.dtype == np.float16 and (s16 > 0).all() and report.requantized == ("wq",)
    assert q2[0] == q[0]  # normal range: unchanged
    w32, w16 = q.ravel() * s32.astype(np.float64), q2.ravel() * s16.astype(np.float64)
    assert abs(w16[1] - w32[1]) <= s16[1] / 2 + 1e-12
    assert abs(float(s16[1]) * -101 - w32[1]) > 10 * s16[1]  # storing the scale alone: 19 % off


def test_int8_graph_is_fp16_outside_its_qdq_pairs(
    fp32: Path, calib_folder: Path, mnist_images: np.ndarray, tmp_path: Path
) -> None:
    """Against the same Q/DQ graph in fp32: >= 90 % of detections matched (IoU >= 0.5, same
    class), scores within 0.05 (fp16 rounding of every layer outside the pairs)."""
    from edgeyolo.export.calib import load_calibration

    ranges = calibrate(
        fp32, load_calibration(calib_folder, img_size=SIZE, progress=False), method="minmax"
    )
    h = quantize_int8(fp32, tmp_path / "h.onnx", ranges=ranges)
    f = quantize_int8(fp32, tmp_path / "f.onnx", ranges=ranges, high_precision="fp32")
    assert (h.high_precision, h.opset, f.high_precision, f.opset) == ("fp16", 19, "fp32", 17)
    assert h.quantized == f.quantized and h.excluded == f.excluded
    m = onnx.load(h.path)
    onnx.checker.check_model(m, full_check=True)
    assert edge_casts(m, NET_PREFIX) == EDGES
    types = dtypes(m)
    for n in m.graph.node:
        if n.op_type in ("Conv", "QuantizeLinear", "DequantizeLinear") and n.name.startswith(
            NET_PREFIX
        ):
            assert types[n.output[0]] in (TensorProto.FLOAT16, TensorProto.INT8), n.name
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert types[n.input[1]] == TensorProto.FLOAT16  # the scale
    a, b = (run(p, {"images": mnist_images}) for p in (f.path, h.path))
    for da, db in zip(from_padded(*a), from_padded(*b), strict=True):
        assert len(da) > 0 and len(db) > 0
        same = da.labels[:, None] == db.labels[None, :]
        assert ((box_iou(da.boxes, db.boxes) * same).max(axis=1) >= 0.5).mean() >= 0.9
    assert np.abs(np.sort(a[2], axis=1) - np.sort(b[2], axis=1)).max() <= 0.05


def test_high_precision_follows_placement_and_targets() -> None:
    assert resolve_high_precision("tensorrt") == "fp16"
    assert resolve_high_precision("tensorrt", "auto", ("8.6", "10.3", "10", "11")) == "fp16"
    assert resolve_high_precision("tensorrt", None, ("8.6", "10.3")) == "fp32"  # weakly typed
    assert resolve_high_precision("tensorrt", "fp16", ("8.6",)) == "fp16"  # asked: given
    assert resolve_high_precision("onnxruntime") == "fp32"
    with pytest.raises(ExportError, match="CPU graph"):
        resolve_high_precision("onnxruntime", "fp16")
    with pytest.raises(ExportError, match="unknown int8 high precision 'bf16'"):
        resolve_high_precision("tensorrt", "bf16")
    with pytest.raises(ConfigError, match="--int8-high-precision fp16 is for"):
        ExportConfig(int8=True, int8_placement="onnxruntime", int8_high_precision="fp16")
    with pytest.raises(ConfigError, match="unknown --int8-high-precision 'half'"):
        ExportConfig(int8_high_precision="half")


def _residual_net() -> onnx.ModelProto:
    """``images → /net/c0 → a``; block: ``a → /net/b/c1 → /net/b/c2 → r``; ``/net/b/Add(a, r)``;
    ``→ /net/head/Conv → out``: a darknet residual block with LeakyReLU convs."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name: str, x: str, cin: int, cout: int, act: bool = True) -> str:
        inits.append(
            numpy_helper.from_array(
                rng.normal(0, 0.3, (cout, cin, 1, 1)).astype(np.float32), f"{name}.w"
            )
        )
        nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}/y"], name=f"{name}/Conv"))
        if not act:
            return f"{name}/y"
        nodes.append(
            helper.make_node(
                "LeakyRelu", [f"{name}/y"], [f"{name}/a"], alpha=0.1, name=f"{name}/LeakyRelu"
            )
        )
        return f"{name}/a"

    a = conv("/net/c0", "images", 3, 4)
    r = conv("/net/b/c2", conv("/net/b/c1", a, 4, 2), 2, 4)
    nodes.append(helper.make_node("Add", [a, r], ["/net/b/sum"], name="/net/b/Add"))
    out = conv("/net/head", "/net/b/sum", 4, 3, act=False)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "r",
        [helper.make_tensor_value_info("images", f, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(out, f, [1, 3, 8, 8])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("high_precision", ["fp16", "fp32"])
def test_residual_add_gets_qdq_on_its_skip_input_only(tmp_path: Path, high_precision: str) -> None:
    model = _residual_net()
    assert residual_adds(model) == {"/net/b/Add": "/net/c0/a"}  # a computes r, so a is the skip
    path = tmp_path / "r.onnx"
    onnx.save(model, path)
    images = np.random.default_rng(1).random((4, 3, 8, 8), dtype=np.float32)
    calib = CalibSet(images=images, files=(), sha256="", folder="random")
    ranges = calibrate(path, calib, method="minmax")
    q = quantize_int8(path, tmp_path / "q.onnx", ranges=ranges, high_precision=high_precision)
    assert q.residual_adds == ("/net/b/Add",)
    m = onnx.load(q.path)
    onnx.checker.check_model(m, full_check=True)
    producer = {o: n for n in m.graph.node for o in n.output}
    add = next(n for n in m.graph.node if n.op_type == "Add")
    skip, branch = (producer[t] for t in add.input)
    assert skip.op_type == "DequantizeLinear" and branch.op_type == "LeakyRelu"
    # the skip input shares the Q/DQ pair its conv reads: one tensor, one scale
    c1 = next(n for n in m.graph.node if n.name == "/net/b/c1/Conv")
    assert c1.input[0] == add.input[0]
    want = run(path, {"images": images[:1]})[0]
    got = run(q.path, {"images": images[:1]})[0]
    assert np.abs(want - got).max() <= 0.05 * np.abs(want).max()
    cpu = quantize_int8(path, tmp_path / "c.onnx", ranges=ranges, placement="onnxruntime")
    assert cpu.residual_adds == () and cpu.high_precision == "fp32"


def test_export_holds_the_fp16_int8_graph_to_the_targets_that_parse_it(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path
) -> None:
    logs: list[str] = []
    common = {"weights": str(busy_checkpoint), "int8": True, "calib": str(calib_folder)}
    common |= {"calib_method": "minmax"}
    m = export_model(
        ExportConfig(out=str(tmp_path / "a"), **common), progress=False, log=logs.append
    )
    a = next(x for x in m["artifacts"] if x["precision"] == "int8")
    assert (a["high_precision"], a["opset"]) == ("fp16", 19)
    # 8.6 cannot parse it (opset <= 17, scales read as fp32); 10 and 11 can
    assert "tensorrt-8.6" not in a["targets"]
    assert a["targets"][-2:] == ["tensorrt-10", "tensorrt-11"]
    assert "TensorRT 8.6" in a["targets_reason"]
    assert "--int8-high-precision fp32" in a["targets_reason"]
    assert any("the int8 graph is checked for TensorRT" in line for line in logs)
    fp32 = next(x for x in m["artifacts"] if x["precision"] == "fp32")
    assert fp32["targets"] == [
        "onnxruntime",
        *(f"tensorrt-{t}" for t in ("8.6", "10.3", "10", "11")),
    ]
    # every target says what it rests on: numerics on onnxruntime, the parser's rules on TensorRT
    for entry in (a, fp32):
        how = entry["targets_checked"]
        assert list(how) == entry["targets"]
        assert how["onnxruntime"].startswith("numerics: parity against PyTorch")
        assert all(how[t].startswith("static only") for t in entry["targets"][1:])
    old = ExportConfig(out=str(tmp_path / "b"), trt=("8.6", "10.3"), **common)
    b = next(
        x
        for x in export_model(old, progress=False, log=lambda _s: None)["artifacts"]
        if x["precision"] == "int8"
    )
    assert (b["high_precision"], b["opset"], b["targets"]) == (
        "fp32",
        17,
        ["onnxruntime", "tensorrt-8.6", "tensorrt-10.3"],
    )
    with pytest.raises(ExportError, match="cannot parse"):
        export_model(
            ExportConfig(
                out=str(tmp_path / "c"), trt=("8.6",), int8_high_precision="fp16", **common
            ),
            progress=False,
            log=lambda _s: None,
        )


def test_cli_passes_int8_high_precision_and_refuses_fp16_for_the_cpu_placement(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path
) -> None:
    from typer.testing import CliRunner

    from edgeyolo.cli import app

    base = ["export", "--weights", str(busy_checkpoint), "--calib", str(calib_folder), "--int8"]
    base += ["--calib-method", "minmax", "--no-progress"]
    r = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "a"), "--int8-high-precision", "fp32"]
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    a = next(x for x in manifest["artifacts"] if x["precision"] == "int8")
    assert (a["high_precision"], a["opset"]) == ("fp32", 17)
    # strongly typed TensorRT 11 would run its unquantized layers in fp32: not claimed for 11
    assert "tensorrt-8.6" in a["targets"] and "tensorrt-11" not in a["targets"]
    assert "--int8-high-precision fp16" in a["targets_reason"]
    bad = [*base, "--out", str(tmp_path / "b"), "--int8-placement", "onnxruntime"]
    r = CliRunner().invoke(app, [*bad, "--int8-high-precision", "fp16"])
    assert r.exit_code == 1 and "error:" in r.output and "--int8-high-precision fp16" in r.output
    assert not (tmp_path / "b").exists()
