"""The TensorRT parser-conformance check: the table's consistency, one deliberately broken graph per
rule (to show the check bites), and every graph variant `edgeyolo export` writes (to show ours
pass). No TensorRT runs here; the table stands in for its parser."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.config import TRT_TARGETS, ExportConfig, ModelConfig, parse_trt_targets, to_dict
from edgeyolo.errors import ConfigError, ExportError
from edgeyolo.export.graph import NET_PREFIX, nms_tail
from edgeyolo.export.pipeline import export_model
from edgeyolo.models import build_model
from edgeyolo.models.checkpoint import save_checkpoint
from edgeyolo.runtime import trt_support as ts
from edgeyolo.runtime.conformance import (
    ORT_ONLY_REASON,
    Violation,
    check_graph,
    cpu_only_reason,
    format_violations,
    manifest_targets,
    require_conformance,
    tensorrt_targets,
)
from edgeyolo.runtime.manifest import read_manifest
from tests.export.conftest import busy_model

runner = CliRunner()
#: The targets that still build weakly typed (an fp32-dequantizing int8 graph is fine there).
WEAK = tuple(t for t in TRT_TARGETS if not ts.TARGETS[t].strongly_typed_only)


# ---- helpers -----------------------------------------------------------------------------------


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: Sequence[onnx.TensorProto] = (),
    opset: int = 17,
) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def _vi(name: str, dtype: int, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def _init(name: str, value: object, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _rules(vs: list[Violation], version: str | None = None) -> set[str]:
    return {v.rule for v in vs if version is None or v.version == version}


def _by_version(vs: list[Violation], rule: str) -> set[str]:
    return {v.version for v in vs if v.rule == rule}


def _unary(op: str, dtype: int = TP.FLOAT, opset: int = 17, **attrs: object) -> onnx.ModelProto:
    node = h.make_node(op, ["x"], ["y"], name=f"/t/{op}", **attrs)
    return _model([node], [_vi("x", dtype, [1, 3, 8, 8])], [_vi("y", dtype, None)], opset=opset)


# ---- the table ---------------------------------------------------------------------------------


def test_table_names_the_config_targets_and_every_rule_cites_a_source() -> None:
    assert tuple(ts.TARGETS) == TRT_TARGETS
    for key, target in ts.TARGETS.items():
        assert target.key == key and target.opset_source and target.max_opset >= 17
        rows = ts.op_table(key)
        assert len(rows) > 80 and all(r.source for r in rows.values())
        assert all(r.types for r in rows.values() if r.supported)
    for name, rule in ts.RULES.items():
        assert rule.source and set(rule.targets) <= set(TRT_TARGETS), name


def test_table_holds_the_facts_the_issue_names() -> None:
    assert ts.TARGETS["8.6"].max_opset == 17 and not ts.TARGETS["8.6"].int64
    assert ts.TARGETS["11"].strongly_typed_only and not ts.TARGETS["10.3"].strongly_typed_only
    assert ts.TOPK_MAX_K == 3840 and ts.NMS_MAX_CANDIDATES == 5000
    for key in TRT_TARGETS:
        assert "INT32" not in ts.op_table(key)["DequantizeLinear"].types
        assert not ts.op_table(key)["QLinearConv"].supported
    assert ts.op_table("8.6")["Slice"].const == (3,)  # 10.3 takes tensor axes
    assert ts.op_table("10.3")["Slice"].const == ()


def test_parse_trt_targets_orders_dedupes_and_names_the_flag() -> None:
    assert parse_trt_targets("11, 8.6,8.6") == ("8.6", "11")
    assert parse_trt_targets(["10", "10.3"]) == ("10.3", "10")
    for bad in ("9", "", "8.6,10.2"):
        with pytest.raises(ConfigError, match="--trt"):
            parse_trt_targets(bad)
    assert ExportConfig().trt == TRT_TARGETS
    assert ExportConfig(trt=("10", "8.6")).trt == ("8.6", "10")
    with pytest.raises(ConfigError, match="unknown TensorRT target"):
        ExportConfig(trt=("12",))


# ---- one broken graph per rule -----------------------------------------------------------------


def _to_int32(name: str) -> onnx.NodeProto:
    """A Cast to the graph output ``<name>32``: INT64 graph outputs are a finding of their own."""
    return h.make_node("Cast", [name], [f"{name}32"], to=TP.INT32)


def _shape_model(**attrs: int) -> onnx.ModelProto:
    nodes = [h.make_node("Shape", ["x"], ["s"], name="/t/Shape", **attrs), _to_int32("s")]
    return _model(nodes, [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("s32", TP.INT32, None)])


def test_shape_with_start_end_is_caught_for_8_6_only() -> None:
    bad = check_graph(_shape_model(start=0, end=1))
    assert _by_version(bad, "shape-start-end") == {"8.6"}
    assert bad[0].node == "/t/Shape" and bad[0].op == "Shape" and "ignores" in bad[0].reason
    assert check_graph(_shape_model()) == []
    assert check_graph(_shape_model(start=0, end=4)) == []  # end >= rank: the whole shape


def test_opset_above_a_targets_maximum_is_caught() -> None:
    assert check_graph(_unary("Relu", opset=17)) == []
    assert _by_version(check_graph(_unary("Relu", opset=18)), "opset") == {"8.6"}
    assert _by_version(check_graph(_unary("Relu", opset=21)), "opset") == {"8.6", "10.3"}
    assert _by_version(check_graph(_unary("Relu", opset=25)), "opset") == set(TRT_TARGETS)


def _topk_model(
    k_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], k: str, **attrs: int
) -> onnx.ModelProto:
    """TopK over ``x [1, 9000]``; ``n`` (``[1]``, INT64) is its run-time width for ``k_nodes``."""
    nodes = [
        h.make_node("Shape", ["x"], ["shape"]),
        h.make_node("Gather", ["shape", "one"], ["n"], axis=0),
        *k_nodes,
        h.make_node("TopK", ["x", k], ["v", "i"], name="/t/TopK", axis=1, **attrs),
        _to_int32("i"),
    ]
    outs = [_vi("v", TP.FLOAT, None), _vi("i32", TP.INT32, None)]
    inits = [*inits, _init("one", [1], np.int64)]
    return _model(nodes, [_vi("x", TP.FLOAT, [1, 9000])], outs, inits)


def test_topk_k_above_3840_or_unbounded_is_caught() -> None:
    def run(value: int) -> list[Violation]:
        return check_graph(_topk_model([], [_init("k", [value], np.int64)], "k"))

    assert run(3840) == [] and run(100) == []
    bad = run(5000)
    assert _by_version(bad, "topk-k") == set(TRT_TARGETS) and "5000 > 3840" in bad[0].reason
    bounded = h.make_node("Min", ["n", "cap"], ["k"])
    ok = _topk_model([bounded], [_init("cap", [3840], np.int64)], "k")
    assert check_graph(ok) == []
    unbounded = _topk_model([h.make_node("Identity", ["n"], ["k"])], [], "k")
    assert "no constant bound" in check_graph(unbounded)[0].reason


def test_topk_sorted_0_is_caught_from_10_on() -> None:
    bad = check_graph(_topk_model([], [_init("k", [10], np.int64)], "k", sorted=0))
    assert _by_version(bad, "topk-sorted") == {"10.3", "10", "11"}


def _nms_model(boxes: int) -> onnx.ModelProto:
    nodes = [
        h.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "sc"], ["sel"], name="/t/NMS"),
        _to_int32("sel"),
    ]
    inits = [
        _init("m", [100], np.int64),
        _init("iou", [0.45], np.float32),
        _init("sc", [0.25], np.float32),
    ]
    ins = [_vi("b", TP.FLOAT, ["batch", boxes, 4]), _vi("s", TP.FLOAT, ["batch", 80, boxes])]
    return _model(nodes, ins, [_vi("sel32", TP.INT32, None)], inits)


def test_nms_over_5000_boxes_per_image_is_caught() -> None:
    assert check_graph(_nms_model(3840)) == []
    bad = check_graph(_nms_model(10647))  # yolov3 at 416 without a candidate cap
    assert _by_version(bad, "nms-candidates") == set(TRT_TARGETS)
    assert "10647 boxes" in bad[0].reason and "5000" in bad[0].reason


def _dq_model(
    x_dtype: int, x: object, zp: object, scale: float = 0.1, scale_dtype: type = np.float32
) -> onnx.ModelProto:
    np_dtype = {TP.INT8: np.int8, TP.INT32: np.int32, TP.UINT8: np.uint8}[x_dtype]
    inits = [_init("q", x, np_dtype), _init("scale", scale, scale_dtype)]
    inputs = ["q", "scale"]
    if zp is not None:
        inits.append(_init("zp", zp, np_dtype))
        inputs.append("zp")
    node = h.make_node("DequantizeLinear", inputs, ["y"], name="/t/DQ")
    out = TP.FLOAT16 if scale_dtype == np.float16 else TP.FLOAT
    return _model([node], [], [_vi("y", out, None)], inits)


def test_int32_dequantize_linear_is_caught_for_every_version() -> None:
    assert check_graph(_dq_model(TP.INT8, [1, -2, 3], 0), WEAK) == []
    bad = check_graph(_dq_model(TP.INT32, [1000, -2, 3], 0))  # ORT's int32 conv bias
    assert _by_version(bad, "op-dtype") == set(TRT_TARGETS)
    assert "INT32 data is not supported" in bad[0].reason
    assert "onnx-tensorrt/issues/850" in bad[0].reason and "TensorRT/issues/3360" in bad[0].reason


def test_qdq_zero_point_scale_and_missing_zero_point_are_caught() -> None:
    assert _by_version(check_graph(_dq_model(TP.INT8, [1], 3)), "qdq-zero-point") == set(
        TRT_TARGETS
    )
    uint8 = check_graph(_dq_model(TP.UINT8, [1], 0))
    assert _by_version(uint8, "qdq-zero-point") == set(TRT_TARGETS)
    assert _by_version(check_graph(_dq_model(TP.INT8, [1], 0, 0.0)), "qdq-scale") == set(
        TRT_TARGETS
    )
    assert _by_version(check_graph(_dq_model(TP.INT8, [1], None)), "qdq-inputs") == {"8.6"}


def test_fp16_scales_that_11_wants_are_misread_by_8_6() -> None:
    fp16 = check_graph(_dq_model(TP.INT8, [1, -1], 0, scale_dtype=np.float16))
    assert {(v.version, v.rule) for v in fp16} == {("8.6", "qdq-scale-dtype")}
    fp32 = check_graph(_dq_model(TP.INT8, [1, -1], 0))
    assert {(v.version, v.rule) for v in fp32} == {("11", "qdq-high-precision")}


def test_unsupported_unknown_and_custom_domain_ops_are_caught() -> None:
    unique = _model(
        [h.make_node("Unique", ["x"], ["y"], name="/t/Unique")],
        [_vi("x", TP.FLOAT, [5])],
        [_vi("y", TP.FLOAT, None)],
    )
    bad = check_graph(unique)
    assert _by_version(bad, "op-support") == set(TRT_TARGETS)
    assert "not supported" in bad[0].reason
    celu = check_graph(_unary("Celu"))  # real ONNX op, not in edgeyolo's table: not vouched for
    assert _by_version(celu, "op-support") == set(TRT_TARGETS) and "add its row" in celu[0].reason
    custom = _model(
        [h.make_node("FusedConv", ["x"], ["y"], name="/t/ms", domain="com.microsoft")],
        [_vi("x", TP.FLOAT, [1, 3, 8, 8])],
        [_vi("y", TP.FLOAT, None)],
    )
    custom.opset_import.append(h.make_opsetid("com.microsoft", 1))
    assert _by_version(check_graph(custom), "domain") == set(TRT_TARGETS)


def _scatter_model(opset: int = 17, **attrs: str) -> onnx.ModelProto:
    node = h.make_node("ScatterND", ["d", "i", "u"], ["y"], name="/t/ScatterND", **attrs)
    ins = [_vi("d", TP.FLOAT, [4]), _vi("u", TP.FLOAT, [1])]
    inits = [_init("i", [[2]], np.int64)]
    return _model([node], ins, [_vi("y", TP.FLOAT, None)], inits, opset=opset)


def test_scatternd_reduction_and_opset_18_are_caught_per_version() -> None:
    assert check_graph(_scatter_model()) == []
    assert _by_version(check_graph(_scatter_model(reduction="add")), "scatternd-reduction") == (
        set(TRT_TARGETS)
    )
    assert _by_version(check_graph(_scatter_model(reduction="none")), "scatternd-reduction") == {
        "10.3"
    }
    at18 = check_graph(_scatter_model(opset=18))
    assert _by_version(at18, "scatternd-opset18") == {"10.3"}
    assert _rules(at18, "10") == set() and _rules(at18, "8.6") == {"opset"}


def test_dtypes_are_read_as_each_version_reads_them() -> None:
    # 8.6: INT64 is cast down to INT32 (listed); ConstantOfShape only makes FP32
    where = _model(
        [h.make_node("Where", ["c", "a", "b"], ["y"], name="/t/Where")],
        [_vi("c", TP.BOOL, [3]), _vi("a", TP.INT64, [3]), _vi("b", TP.INT64, [3])],
        [_vi("y", TP.INT64, None)],
    )
    assert _rules(check_graph(where)) == {"io-dtype"}  # int64 graph output, 8.6 only
    assert _by_version(check_graph(where), "io-dtype") == {"8.6"}
    value = h.make_tensor("value", TP.INT64, [1], [0])
    cos = _model(
        [h.make_node("ConstantOfShape", ["s"], ["y"], name="/t/COS", value=value)],
        [_vi("s", TP.INT64, [2])],
        [_vi("y", TP.FLOAT, None)],
    )
    assert _by_version(check_graph(cos), "op-dtype") == {"8.6"}


def test_computed_reduce_axes_and_resize_and_pool_options_are_caught() -> None:
    reduce = _model(
        [h.make_node("ReduceSum", ["x", "axes"], ["y"], name="/t/ReduceSum")],
        [_vi("x", TP.FLOAT, [2, 3]), _vi("axes", TP.INT64, [1])],
        [_vi("y", TP.FLOAT, None)],
    )
    assert _by_version(check_graph(reduce), "const-input") == set(TRT_TARGETS)
    resize = _model(
        [h.make_node("Resize", ["x", "", "sc"], ["y"], name="/t/Resize", mode="cubic")],
        [_vi("x", TP.FLOAT, [1, 3, 8, 8])],
        [_vi("y", TP.FLOAT, None)],
        [_init("sc", [1, 1, 2, 2], np.float32)],
    )
    assert "mode=cubic" in check_graph(resize)[0].reason
    pool = h.make_node(
        "MaxPool", ["x"], ["y", "idx"], name="/t/MaxPool", kernel_shape=[2, 2], dilations=[2, 2]
    )
    bad = check_graph(
        _model([pool], [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("y", TP.FLOAT, None)])
    )
    assert {v.reason for v in bad if v.version == "8.6"} == {"the Indices output is not supported"}
    assert any("dilations" in v.reason for v in bad if v.version == "10.3")


def _fp16_casts() -> onnx.ModelProto:
    nodes = [
        h.make_node("Cast", ["x"], ["x16"], name="/t/to16", to=TP.FLOAT16),
        h.make_node("Cast", ["x16"], ["x32"], name="/t/back32", to=TP.FLOAT),
        h.make_node("Cast", ["c16"], ["c32"], name="/t/const32", to=TP.FLOAT),
        h.make_node("Add", ["x32", "c32"], ["y"], name="/t/Add"),
    ]
    return _model(
        nodes,
        [_vi("x", TP.FLOAT, [3])],
        [_vi("y", TP.FLOAT, None)],
        [_init("c16", [1, 2, 3], np.float16)],
    )


def test_cast_chains_and_cast_constants_are_caught_where_typing_is_strong() -> None:
    bad = check_graph(_fp16_casts())
    assert {(v.node, v.rule) for v in bad} == {
        ("/t/back32", "cast-chain"),
        ("/t/const32", "cast-constant"),
    }
    assert {v.version for v in bad} == {"11"}


def test_int8_graph_dequantizing_to_fp32_is_caught_where_typing_is_strong() -> None:
    def graph(scale_dtype: type, out: int) -> onnx.ModelProto:
        inits = [
            _init("w", [[1, -1]], np.int8),
            _init("ws", 0.1, scale_dtype),
            _init("zp", 0, np.int8),
        ]
        node = h.make_node("DequantizeLinear", ["w", "ws", "zp"], ["wf"], name="/t/DQ")
        return _model([node], [], [_vi("wf", out, None)], inits)

    assert _by_version(check_graph(graph(np.float32, TP.FLOAT)), "qdq-high-precision") == {"11"}
    assert _rules(check_graph(graph(np.float16, TP.FLOAT16))) == {"qdq-scale-dtype"}  # 8.6's


def test_require_conformance_names_node_op_reason_and_versions() -> None:
    model = _shape_model(start=1)
    require_conformance(model, ("10.3", "10", "11"))  # only 8.6 ignores start/end
    with pytest.raises(ExportError) as exc:
        require_conformance(model, "8.6,10", name="model_fp32.onnx")
    msg = str(exc.value)
    assert "model_fp32.onnx" in msg and "/t/Shape (Shape), TensorRT 8.6:" in msg
    assert "builtin_op_importers.cpp @ release/8.6-GA" in msg and "--trt" in msg
    both = check_graph(_topk_model([], [_init("k", [5000], np.int64)], "k"), ("8.6", "11"))
    text = format_violations(both)
    assert "TensorRT 8.6, 11:" in text and text.count("/t/TopK") == 1  # one line, two versions
    assert str(both[0]).startswith("/t/TopK (TopK), TensorRT 8.6: K = 5000")


def test_manifest_target_helpers() -> None:
    assert manifest_targets(("8.6", "11")) == ["onnxruntime", "tensorrt-8.6", "tensorrt-11"]
    assert manifest_targets(None) == ["onnxruntime"]
    assert tensorrt_targets({"targets": manifest_targets(("10",))}) == ("10",)
    assert tensorrt_targets({}) is None and cpu_only_reason({}) is None
    cpu = {"targets": ["onnxruntime"], "targets_reason": "why"}
    assert tensorrt_targets(cpu) == () and cpu_only_reason(cpu) == "why"
    assert cpu_only_reason({"targets": manifest_targets(TRT_TARGETS)}) is None


def test_the_nms_tail_at_coco_scale_conforms() -> None:
    """yolov3 at 416 with 80 classes: 10647 boxes per image, more than TensorRT's NMS keeps."""
    tail = nms_tail(num_classes=80, num_preds=10647, conf_thres=0.001, iou_thres=0.5, max_det=300)
    assert check_graph(tail) == []


# ---- every variant `edgeyolo export` writes ------------------------------------------------------


def _export(tmp: Path, ckpt: Path, calib: Path, **kw: object) -> tuple[dict, list[str]]:
    logs: list[str] = []
    cfg = ExportConfig(weights=str(ckpt), out=str(tmp), calib=str(calib), conf_thres=0.3, **kw)
    return export_model(cfg, progress=False, log=logs.append), logs


def _assert_conforms(out: Path, manifest: dict, trt: Sequence[str] = TRT_TARGETS) -> None:
    onnx_entries = [a for a in manifest["artifacts"] if a["kind"] == "onnx"]
    assert onnx_entries
    for a in onnx_entries:
        claimed = tensorrt_targets(a)
        if a.get("targets_reason"):  # a graph may claim fewer versions, saying why
            assert claimed and set(claimed) < set(trt), a
        else:
            assert a["targets"] == manifest_targets(trt), a["file"]
        problems = check_graph(onnx.load(str(out / a["file"])), claimed)
        assert problems == [], format_violations(problems, name=a["file"])


@pytest.fixture(scope="module")
def calib(mnist_small_yaml: Path) -> Path:
    return mnist_small_yaml.parent / "images" / "train"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = busy_model()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"model_config": to_dict(net.config), "model": net.state_dict()})
    return path


def test_fp32_fp16_int8_with_dynamic_batch_conform(tmp_path, tiny_ckpt, calib) -> None:
    out = tmp_path / "all"
    m, logs = _export(out, tiny_ckpt, calib, fp16=True, int8=True, calib_method="minmax", batch=4)
    assert {a["precision"] for a in m["artifacts"]} == {"fp32", "fp16", "int8"}
    g = onnx.load(str(out / "model_fp32.onnx"))
    assert g.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch is dynamic
    _assert_conforms(out, m)
    assert any("they conform" in line for line in logs)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["artifacts"][0]["targets"] == manifest_targets(TRT_TARGETS)
    # the fp16 graph as edgeyolo wrote it before issue 12 (ONNX Runtime's converter with the
    # tail on its block list: a Cast round trip at every boundary) is caught where typing is strong
    fp32 = onnx.load(str(out / "model_fp32.onnx"))
    block = [n.name for n in fp32.graph.node if not n.name.startswith(NET_PREFIX)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = convert_float_to_float16(fp32, keep_io_types=True, node_block_list=block)
    casts = [v for v in check_graph(old) if v.rule in ("cast-chain", "cast-constant")]
    assert len(casts) > 20 and {v.version for v in casts} == {"11"}


def test_int8_onnxruntime_placement_is_held_to_onnxruntime_and_would_be_caught(
    tmp_path, tiny_ckpt, calib
) -> None:
    out = tmp_path / "ort"
    m, _ = _export(
        out, tiny_ckpt, calib, int8=True, calib_method="minmax", int8_placement="onnxruntime"
    )
    entry = next(a for a in m["artifacts"] if a["precision"] == "int8")
    assert entry["targets"] == ["onnxruntime"] and entry["targets_reason"] == ORT_ONLY_REASON
    assert cpu_only_reason(entry) == ORT_ONLY_REASON and tensorrt_targets(entry) == ()
    # held to TensorRT, the int32-bias DequantizeLinear nodes would be refused by every version
    problems = check_graph(onnx.load(str(out / entry["file"])))
    int32_dq = [v for v in problems if v.op == "DequantizeLinear" and "INT32" in v.reason]
    assert int32_dq and {v.version for v in int32_dq} == set(TRT_TARGETS)
    fp32 = next(a for a in m["artifacts"] if a["precision"] == "fp32")
    assert tensorrt_targets(fp32) == TRT_TARGETS  # the other graphs are still checked


def test_raw_and_multi_label_graphs_conform(tmp_path, tiny_ckpt, calib) -> None:
    raw, _ = _export(tmp_path / "raw", tiny_ckpt, calib, raw=True)
    _assert_conforms(tmp_path / "raw", raw)
    multi, _ = _export(tmp_path / "ml", tiny_ckpt, calib, multi_label=True, fp16=True)
    _assert_conforms(tmp_path / "ml", multi)


def test_yolov3_graph_conforms(tmp_path, calib) -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="yolov3", num_classes=3, img_size=64))
    ckpt = tmp_path / "v3.pt"
    save_checkpoint(ckpt, {"model_config": to_dict(net.config), "model": net.state_dict()})
    m, _ = _export(tmp_path / "v3", ckpt, calib)
    _assert_conforms(tmp_path / "v3", m)


def test_a_graph_that_breaks_the_table_stops_the_export_and_writes_nothing(
    tmp_path, tiny_ckpt, calib, monkeypatch
) -> None:
    # a table in which 8.6 has no Conv: the real graph now breaks it
    real = ts.op_table

    def no_conv(target: str) -> dict[str, ts.OpRow]:
        rows = dict(real(target))
        if target == "8.6":
            rows["Conv"] = ts.OpRow("Conv", supported=False, source="test table")
        return rows

    monkeypatch.setattr(ts, "op_table", no_conv)
    out = tmp_path / "refused"
    with pytest.raises(ExportError) as exc:
        _export(out, tiny_ckpt, calib, trt=("8.6", "10"))
    msg = str(exc.value)
    assert "model_fp32.onnx" in msg and "(Conv), TensorRT 8.6: Conv is not supported" in msg
    assert "TensorRT 8.6, 10" not in msg  # 10's table is the real one
    assert not out.exists() and not list(tmp_path.glob(".refused*"))


def test_cli_trt_option(tmp_path, tiny_ckpt, calib) -> None:
    out = tmp_path / "cli"
    args = ["export", "--weights", str(tiny_ckpt), "--out", str(out), "--calib", str(calib)]
    r = runner.invoke(app, [*args, "--trt", "10.3,8.6", "--no-progress"])
    assert r.exit_code == 0, r.output
    entry = read_manifest(out)["artifacts"][0]
    assert entry["targets"] == ["onnxruntime", "tensorrt-8.6", "tensorrt-10.3"]
    bad = runner.invoke(app, [*args, "--trt", "9", "--no-progress"])
    assert bad.exit_code == 1 and "--trt: unknown TensorRT target(s) 9" in bad.output
