"""Q/DQ INT8 with real ONNX Runtime on a small yolov3-tiny graph and real MNIST-detection images."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import TensorData, TensorsData

import edgeyolo.export.calib as calib_mod
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.detections import from_outputs, from_padded
from edgeyolo.errors import AccuracyBudgetError, CalibrationError, ExportError
from edgeyolo.evaluate.predict import predict_with
from edgeyolo.export.calib import CalibSet, load_calibration
from edgeyolo.export.graph import NET_PREFIX
from edgeyolo.export.int8_gate import GateReport, int8_with_budget, layer_sensitivity
from edgeyolo.export.onnx_export import build_fp32
from edgeyolo.export.quantize import QuantResult, calibrate, quantize_int8
from edgeyolo.metrics.bootstrap import Matches, map50, match_detections
from edgeyolo.metrics.parity import box_iou
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from tests.export.conftest import SIZE, busy_model
from tests.metrics.synthetic_matches import one_box_matches

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, mnist_images: np.ndarray) -> Path:
    path, _ = build_fp32(
        busy_model(),
        tmp_path_factory.mktemp("q") / "fp32.onnx",
        img_size=SIZE,
        conf_thres=0.3,
        check_images=mnist_images,
    )
    return path


@pytest.fixture(scope="module")
def calib(calib_folder: Path) -> CalibSet:
    return load_calibration(calib_folder, img_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def ranges(fp32: Path, calib: CalibSet) -> TensorsData:
    return calibrate(fp32, calib, method="minmax")


@pytest.fixture(scope="module")
def int8(fp32: Path, ranges: TensorsData, tmp_path_factory: pytest.TempPathFactory) -> QuantResult:
    """The default: TensorRT placement, fp16 outside the Q/DQ pairs."""
    return quantize_int8(fp32, tmp_path_factory.mktemp("q8") / "int8.onnx", ranges=ranges)


@pytest.fixture(scope="module")
def int8_fp32(
    fp32: Path, ranges: TensorsData, tmp_path_factory: pytest.TempPathFactory
) -> QuantResult:
    """TensorRT placement, fp32 outside the Q/DQ pairs (for TensorRT 8.6)."""
    out = tmp_path_factory.mktemp("q8f") / "int8.onnx"
    return quantize_int8(fp32, out, ranges=ranges, high_precision="fp32")


@pytest.fixture
def no_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any calibration run from here on fails the test."""

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("calibration ran again")

    monkeypatch.setattr(calib_mod, "create_calibrator", boom)
    ort_quantize = sys.modules["onnxruntime.quantization.quantize"]  # the module, not the function
    monkeypatch.setattr(ort_quantize, "create_calibrator", boom)


def net_convs(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def dq_fed(model: onnx.ModelProto) -> set[str]:
    """Nodes with at least one input produced by a DequantizeLinear."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if dq & set(n.input)}


@pytest.mark.parametrize("variant", ["fp16", "fp32"])
def test_int8_graph_places_symmetric_qdq_on_net_convs_only(
    fp32: Path, int8: QuantResult, int8_fp32: QuantResult, variant: str
) -> None:
    q = int8 if variant == "fp16" else int8_fp32
    half = variant == "fp16"
    m32, m8 = onnx.load(fp32), onnx.load(q.path)
    onnx.checker.check_model(m8, full_check=True)  # valid and topologically sorted (TensorRT)
    assert (q.high_precision, q.opset) == (("fp16", 19) if half else ("fp32", 17))
    assert m8.opset_import[0].version == q.opset
    heads = [c for c in net_convs(m32) if "/head/" in c]
    assert len(heads) == 2 and all(c.startswith(NET_PREFIX) for c in net_convs(m32))
    assert q.excluded == tuple(heads)
    assert q.quantized == tuple(c for c in net_convs(m32) if c not in heads)
    assert q.method == "minmax" and q.residual_adds == ()  # tiny has no residual block
    # Q/DQ feed exactly the quantized convs; head convs and the decode/NMS tail see none.
    assert {n for n in dq_fed(m8) if n not in QDQ} == set(q.quantized)
    # Apart from the inserted Q/DQ (and, in fp16, the Casts at the network's edges and the
    # constant axes of ReduceMax from opset 18 on), the graph is unchanged (same names).
    added = [n for n in m8.graph.node if n.name.startswith(("to_fp16/", "to_fp32/", "opset19/"))]
    edges = [("to_fp16/images", "Cast")] + [(f"to_fp32/{h}_output_0", "Cast") for h in heads]
    assert [(n.name, n.op_type) for n in added if n.op_type == "Cast"] == (edges if half else [])
    assert [n.op_type for n in added if n.op_type != "Cast"] == (["Constant"] if half else [])
    casts = [len([n for n in m.graph.node if n.op_type == "Cast"]) for m in (m8, m32)]
    assert casts[0] == casts[1] + len(edges) * half  # and the tail's own casts
    rest = sorted((n.name, n.op_type) for n in m8.graph.node if n.op_type not in QDQ)
    rest = [r for r in rest if r[0] not in {n.name for n in added}]
    assert rest == sorted((n.name, n.op_type) for n in m32.graph.node)

    float_type = np.float16 if half else np.float32
    inits = {i.name: numpy_helper.to_array(i) for i in m8.graph.initializer}
    nodes = {o: n for n in m8.graph.node for o in n.output}
    for n in m8.graph.node:
        if n.op_type in QDQ:  # symmetric int8: every zero point is an int8 zero
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), n.name
            assert inits[n.input[1]].dtype == float_type  # fp16 scales need opset 19
    for n in m8.graph.node:
        if n.name not in q.quantized:
            continue
        act, weight = nodes[n.input[0]], nodes[n.input[1]]
        assert inits[act.input[1]].shape == ()  # activations: per tensor
        w = inits[weight.input[0]]  # weights: int8, per output channel along axis 0
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        assert w.dtype == np.int8 and axis == 0
        assert inits[weight.input[1]].shape == (w.shape[0],)
        assert np.abs(w).max() == 127  # symmetric per-channel scale uses the full range
        assert inits[n.input[2]].dtype == float_type  # bias stays float (TensorRT folds it)
    for h in heads:  # the convs kept out of int8 run in the high precision
        conv = next(n for n in m8.graph.node if n.name == h)
        assert inits[conv.input[1]].dtype == float_type


def test_heads_and_exclusions_follow_the_arguments(
    fp32: Path, ranges: TensorsData, tmp_path: Path, no_calibration: None
) -> None:
    # Re-quantizing reuses the ranges: the no_calibration fixture fails any calibration run.
    all_in = quantize_int8(fp32, tmp_path / "a.onnx", ranges=ranges, quantize_heads=True)
    assert all_in.excluded == () and sum("/head/" in c for c in all_in.quantized) == 2
    victim = all_in.quantized[3]
    some = quantize_int8(fp32, tmp_path / "b.onnx", ranges=ranges, exclude=[victim])
    assert victim in some.excluded and victim not in some.quantized
    assert victim not in dq_fed(onnx.load(some.path))
    with pytest.raises(ExportError, match="/nms/"):
        quantize_int8(fp32, tmp_path / "c.onnx", ranges=ranges, exclude=["/nms/TopK"])


def test_duplicate_opset_imports_are_merged_before_quantizing(
    fp32: Path, ranges: TensorsData, int8: QuantResult, tmp_path: Path
) -> None:
    # ONNX Runtime's quantizer alone fails on this file: "Failed to find proper ai.onnx domain"
    model = onnx.load(fp32)
    model.opset_import.append(helper.make_opsetid("", 13))
    dup = tmp_path / "dup.onnx"
    onnx.save(model, dup)
    again = quantize_int8(dup, tmp_path / "int8.onnx", ranges=ranges)
    assert again.quantized == int8.quantized and again.excluded == int8.excluded
    assert [(o.domain, o.version) for o in onnx.load(again.path).opset_import][:1] == [("", 19)]


def test_calibration_methods_and_their_errors(fp32: Path, calib: CalibSet) -> None:
    minmax = calibrate(fp32, calib, method="minmax")
    pct = calibrate(fp32, calib, method="percentile")
    convs = [n for n in onnx.load(fp32).graph.node if n.op_type == "Conv"]
    for conv in convs:  # every conv input has a range; the percentile one clips, never widens
        lo, hi = (float(np.ravel(v)[0]) for v in minmax[conv.input[0]].range_value)
        plo, phi = (float(np.ravel(v)[0]) for v in pct[conv.input[0]].range_value)
        assert lo < hi and lo <= plo and phi <= hi + 1e-6
    with pytest.raises(ExportError, match="unknown calibration method"):
        calibrate(fp32, calib, method="kl")
    small = load_calibration(Path(calib.files[0]).parent, img_size=64, max_images=1, progress=False)
    with pytest.raises(CalibrationError, match="64 px"):
        calibrate(fp32, small, method="minmax")


def run_graph(path: Path, images: np.ndarray, extra: tuple[str, ...] = ()) -> list[np.ndarray]:
    """The four outputs and the ``extra`` tensors (in their own dtype: fp16 inside an fp16
    network)."""
    model = onnx.load(path)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    model.graph.output.extend(
        helper.make_tensor_value_info(t, types.get(t, TensorProto.FLOAT), None) for t in extra
    )
    with OnnxRuntimeSession(model.SerializeToString(), threads=1) as s:
        out = s.run(images)
    return [out[k] for k in ("num_dets", "boxes", "scores", "classes", *extra)]


def test_int8_runs_in_onnxruntime_and_agrees_with_fp32(
    fp32: Path, int8: QuantResult, mnist_images: np.ndarray
) -> None:
    """Bounds: >= 90 % of fp32 detections have a same-class int8 box with IoU >= 0.5; decoded
    boxes within 1 px (mean) of fp32; the head inputs, after every int8 layer, keep an SQNR between
    15 dB (roughly equal) and 80 dB (really quantized, not a copy of fp32)."""
    heads_in = tuple(
        n.input[0] for n in onnx.load(fp32).graph.node if n.op_type == "Conv" and "/head/" in n.name
    )
    extra = ("pred_boxes", *heads_in)
    a, b = run_graph(fp32, mnist_images, extra), run_graph(int8.path, mnist_images, extra)
    for da, db in zip(from_padded(*a[:4]), from_padded(*b[:4]), strict=True):
        assert len(da) > 0 and len(db) > 0
        iou = box_iou(da.boxes, db.boxes) * (da.labels[:, None] == db.labels[None, :])
        assert (iou.max(axis=1) >= 0.5).mean() >= 0.9
    assert np.abs(a[4] - b[4]).mean() < 1.0
    for ref, q in zip(a[5:], b[5:], strict=True):
        q = q.astype(np.float64)
        sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - q) ** 2))
        assert 15.0 < sqnr < 80.0


def test_sensitivity_ranks_a_badly_calibrated_layer_worst(
    fp32: Path, int8: QuantResult, ranges: TensorsData, calib: CalibSet, tmp_path: Path
) -> None:
    base = layer_sensitivity(fp32, int8.path, calib, max_images=4)
    assert [n for n, _ in base] != [] and {n for n, _ in base} == set(int8.quantized)
    assert [s for _, s in base] == sorted(s for _, s in base) and all(s > 15 for _, s in base)
    # Clip one conv's input range to 2 % of its real range: that conv must come out worst.
    nodes = onnx.load(fp32).graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    only_reader = [n for n in convs if sum(n.input[0] in m.input for m in nodes) == 1]
    victim, tensor = next(
        (n.name, n.input[0]) for n in reversed(only_reader) if n.name in int8.quantized[:-1]
    )
    broken = {k: v for k, v in ranges.items()}
    lo, hi = ranges[tensor].range_value
    broken[tensor] = TensorData(lowest=lo * 0.02, highest=hi * 0.02)
    bad = quantize_int8(
        fp32, tmp_path / "bad.onnx", ranges=TensorsData(ranges.calibration_method, broken)
    )
    worst, worst_db = layer_sensitivity(fp32, bad.path, calib, max_images=4)[0]
    assert worst == victim and worst_db < dict(base)[victim] - 10


@pytest.fixture(scope="module")
def records(mnist_small_yaml: Path) -> list:
    return read_split(load_data_yaml(mnist_small_yaml), "test").records


def test_gate_with_impossible_budget_raises_and_lists_every_step(
    fp32: Path, calib: CalibSet, ranges: TensorsData, records: list, tmp_path: Path
) -> None:
    def evaluate(path: Path) -> Matches:  # real matches of the ONNX file on real test images
        with OnnxRuntimeSession(path, threads=1) as session:
            preds = predict_with(lambda x: from_outputs(session.run(x)), records, img_size=SIZE)
        return match_detections(preds, records, 10)

    lines: list[str] = []
    out = tmp_path / "gate.onnx"
    with pytest.raises(AccuracyBudgetError) as err:
        int8_with_budget(
            fp32,
            out,
            calib=calib,
            method="minmax",
            ranges=ranges,
            evaluate=evaluate,
            reference=evaluate(fp32),
            max_drop=-1.0,
            max_steps=2,
            log=lines.append,
        )
    report: GateReport = err.value.report
    assert report.decision == "failed" and len(report.steps) == 3 and not out.exists()
    for i in range(3):
        assert f"step {i}:" in str(err.value)
    worst_first = [n for n, _ in report.sensitivity]
    heads = {c for c in report.steps[0].excluded}
    assert len(heads) == 2 and all("/head/" in c for c in heads)
    assert set(report.steps[1].excluded) == {*heads, worst_first[0]}  # one more layer a step,
    assert set(report.steps[2].excluded) == {*heads, *worst_first[:2]}  # most sensitive first
    assert sum(line.startswith("int8 step") for line in lines) == 3


def misses(n: int) -> Matches:
    """Gate-set matches of a model that misses ``n`` of 1000 one-box images (0: all found)."""
    return one_box_matches(np.arange(1000) >= n)


def scripted(missed: list[int], seen: list[Path]) -> Callable[[Path], Matches]:
    it: Iterator[int] = iter(missed)

    def evaluate(path: Path) -> Matches:
        seen.append(path)
        return misses(next(it))

    return evaluate


def test_gate_stops_as_soon_as_one_excluded_layer_recovers(
    fp32: Path, calib: CalibSet, ranges: TensorsData, tmp_path: Path, no_calibration: None
) -> None:
    seen: list[Path] = []
    out = tmp_path / "gate.onnx"
    report = int8_with_budget(
        fp32,
        out,
        calib=calib,
        method="minmax",
        ranges=ranges,
        evaluate=scripted([100, 0, 1000], seen),
        reference=misses(0),
        max_drop=1.0,
        log=print,
    )
    assert report.passed and report.score == 100.0 and len(seen) == 2
    kept = report.sensitivity[0][0]
    assert kept in report.excluded and kept not in report.steps[0].excluded
    assert [s.score for s in report.steps] == [100 * map50(misses(100)), 100.0]
    assert out.exists() and kept not in dq_fed(onnx.load(out))
    assert report.to_dict()["kept_fp32"] == list(report.excluded)


def test_gate_passing_first_time_measures_no_sensitivity(
    fp32: Path, calib: CalibSet, ranges: TensorsData, tmp_path: Path
) -> None:
    report = int8_with_budget(
        fp32,
        tmp_path / "ok.onnx",
        calib=calib,
        method="minmax",
        ranges=ranges,
        evaluate=lambda _p: misses(0),  # as good as fp32: interval [0, 0]
        reference=misses(0),
        max_drop=1.0,
        log=lambda _s: None,
    )
    assert report.passed and len(report.steps) == 1 and report.sensitivity == ()


def test_onnxruntime_placement_quantizes_between_ops_and_still_agrees(
    fp32: Path, ranges: TensorsData, mnist_images: np.ndarray, tmp_path: Path
) -> None:
    """The CPU placement: Q/DQ after convs and activations too (what ONNX Runtime fuses into
    integer kernels), heads and tail still float. Bound: >= 85 % of fp32 detections matched (every
    activation is quantized here, so a little looser than the TensorRT placement's 90 %; the real
    model's mAP is measured in bench/RESULTS.md)."""
    res = quantize_int8(fp32, tmp_path / "cpu.onnx", ranges=ranges, placement="onnxruntime")
    g = onnx.load(str(res.path))
    producers = {o: n for n in g.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in g.graph.node if n.op_type == "Conv" and n.name.startswith(NET_PREFIX)]
    body = [n for n in convs if "/head/" not in n.name]
    # every non-head conv's output feeds a QuantizeLinear (not so in the TensorRT placement)
    assert all(any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]]) for n in body)
    # bias is int32 through its own DequantizeLinear here
    assert all(producers[n.input[2]].op_type == "DequantizeLinear" for n in body)
    for n in convs:
        if "/head/" in n.name:
            assert producers.get(n.input[1]) is None  # head weights stay fp32
    assert not any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.name.startswith("/nms/")
        for n in g.graph.node
    )
    a, b = run_graph(fp32, mnist_images, ()), run_graph(res.path, mnist_images, ())
    for da, db in zip(from_padded(*a[:4]), from_padded(*b[:4]), strict=True):
        assert len(da) > 0 and len(db) > 0
        iou = box_iou(da.boxes, db.boxes) * (da.labels[:, None] == db.labels[None, :])
        assert (iou.max(axis=1) >= 0.5).mean() >= 0.85
    with pytest.raises(ExportError, match="unknown int8 placement 'gpu'"):
        quantize_int8(fp32, tmp_path / "x.onnx", ranges=ranges, placement="gpu")


def _conv_weight_codes(path: Path) -> dict[str, np.ndarray]:
    """The int8 codes of every quantized ``/net/`` conv weight, by conv name."""
    g = onnx.load(str(path))
    inits = {t.name: t for t in g.graph.initializer}
    producers = {o: n for n in g.graph.node for o in n.output}
    out = {}
    for n in g.graph.node:
        dq = producers.get(n.input[1]) if n.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            out[n.name] = numpy_helper.to_array(inits[dq.input[0]])
    return out


def test_onnxruntime_placement_uses_7_bit_weights_and_tensorrt_the_full_range(
    fp32: Path, ranges: TensorsData, tmp_path: Path
) -> None:
    """7-bit weights keep ONNX Runtime's u8 x s8 vpmaddubsw kernels (x86 without VNNI) from
    saturating; TensorRT computes in wider types and gets the full int8 range."""
    cpu = _conv_weight_codes(
        quantize_int8(fp32, tmp_path / "cpu.onnx", ranges=ranges, placement="onnxruntime").path
    )
    trt = _conv_weight_codes(quantize_int8(fp32, tmp_path / "trt.onnx", ranges=ranges).path)
    full = _conv_weight_codes(
        quantize_int8(
            fp32, tmp_path / "full.onnx", ranges=ranges, placement="onnxruntime", reduce_range=False
        ).path
    )
    assert cpu and set(cpu) == set(full) and trt
    assert all(w.dtype == np.int8 for w in [*cpu.values(), *trt.values()])
    # symmetric per-channel, each channel's largest |code| at the top of its range: ORT's
    # reduced range is [-64, 64], and 2 * 255 * 64 = 32640 fits vpmaddubsw's int16 sums
    assert max(int(np.abs(w).max()) for w in cpu.values()) == 64
    assert max(int(np.abs(w).max()) for w in full.values()) == 127
    assert max(int(np.abs(w).max()) for w in trt.values()) == 127
