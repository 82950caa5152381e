"""The int8 graph means the same on every onnxruntime the install allows (1.20 on).

ONNX Runtime's CPU ``QuantizeLinear`` truncated float16 inputs toward zero before 1.30
(:mod:`edgeyolo.runtime.onnxruntime`); the default int8 graph (``tensorrt`` placement, fp16
outside its Q/DQ pairs) quantizes fp16 activations, so on 1.20-1.29 it drifted from PyTorch's
boxes unless the session rounds them. These tests run on whatever onnxruntime is installed: in a
Python 3.10 venv with onnxruntime 1.20 they fail without the fix.

The tests of the shipped int8 graph read ``deploy_export`` (tests/deploy/conftest.py: made here
with torch, or given through ``EDGEYOLO_TEST_EXPORT`` in a venv without it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeyolo.runtime.onnxruntime import (
    OnnxRuntimeSession,
    fp16_quantize_truncates,
    round_fp16_quantize,
    session_source,
)

SCALE = 0.0213


def _qdq_model(scale: float = SCALE) -> onnx.ModelProto:
    """``float32 x → Cast fp16 → QuantizeLinear → DequantizeLinear → Cast fp32``, opset 19,
    fp16 scale, zero point 0: the pattern of the default int8 graph. Outputs ``q`` (int8) and
    ``y`` (float32)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("QuantizeLinear", ["x16", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d16"], name="dq"),
        helper.make_node("Cast", ["d16"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor_value_info("q", TensorProto.INT8, [None]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None]),
        ],
        [
            numpy_helper.from_array(np.array(scale, np.float16), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _exact(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """ONNX's QuantizeLinear / DequantizeLinear of fp16 ``x`` in float64: ``(q, y)``."""
    s = np.float64(np.float16(scale))
    q = np.clip(np.rint(x.astype(np.float16).astype(np.float64) / s), -128, 127)
    y = (q * s).astype(np.float16).astype(np.float32)
    return q.astype(np.int8), y


def _plain(model: onnx.ModelProto | bytes, level: ort.GraphOptimizationLevel | None = None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if level is not None:
        opts.graph_optimization_level = level
    blob = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    return np.random.default_rng(0).uniform(-3.0, 3.0, 20000).astype(np.float32)


def test_probe_reports_what_the_fp16_kernel_does(values: np.ndarray) -> None:
    """:func:`fp16_quantize_truncates` agrees with the raw kernel on many values."""
    q = _plain(_qdq_model()).run(["q"], {"x": values})[0]
    want, _ = _exact(values, SCALE)
    wrong = int((q != want).sum())
    assert fp16_quantize_truncates() == (wrong > 0), (
        f"onnxruntime {ort.__version__}: {wrong} of {values.size} fp16 values quantized "
        f"off ONNX's round-to-nearest-even, probe says {fp16_quantize_truncates()}"
    )


def test_session_rounds_fp16_quantize_on_this_onnxruntime(values: np.ndarray) -> None:
    """Through :class:`OnnxRuntimeSession` fp16 Q/DQ is ONNX's on every onnxruntime."""
    with OnnxRuntimeSession(_qdq_model().SerializeToString()) as s:
        out = s.session.run(None, {"x": values})
    want_q, want_y = _exact(values, SCALE)
    assert np.array_equal(out[0], want_q), f"onnxruntime {ort.__version__} quantizes off ONNX's"
    assert np.array_equal(out[1], want_y)


@pytest.mark.parametrize(
    "level",
    ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"],
)
def test_rewrite_is_exact_and_loads_at_every_level(values: np.ndarray, level: str) -> None:
    """:func:`round_fp16_quantize` changes the Q/DQ pair together (onnxruntime 1.20's
    ``DoubleQDQPairsRemover`` fails the session on a float32 Q beside a float16 DQ) and gives
    ONNX's numbers; where the kernel already rounds, exactly the original graph's."""
    model = _qdq_model()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert round_fp16_quantize(rewritten) == 1
    onnx.checker.check_model(rewritten, full_check=True)
    lvl = getattr(ort.GraphOptimizationLevel, level)
    got = _plain(rewritten, lvl).run(None, {"x": values})
    want_q, want_y = _exact(values, SCALE)
    assert np.array_equal(got[0], want_q)
    assert np.array_equal(got[1], want_y)
    if not fp16_quantize_truncates():
        orig = _plain(model, lvl).run(None, {"x": values})
        assert all(np.array_equal(a, b) for a, b in zip(orig, got, strict=True))


def test_session_source_leaves_graphs_without_fp16_quantize_alone(tmp_path: Path) -> None:
    """No fp16 QuantizeLinear (fp32/fp16/onnxruntime-placement graphs): the file itself."""
    model = _qdq_model()
    for n in model.graph.node:  # make it an fp32 Q/DQ graph
        if n.op_type == "Cast":
            n.attribute[0].i = TensorProto.FLOAT
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(SCALE, np.float32), "s"))
    path = tmp_path / "fp32_qdq.onnx"
    onnx.save(model, path)
    assert session_source(path) == str(path)
    assert round_fp16_quantize(model) == 0


# -- the int8 graph of an export folder ------------------------------------------------------------


def test_int8_graph_quantizes_every_activation_to_nearest(deploy_export: Path) -> None:
    """Every activation ``QuantizeLinear`` of the shipped int8 graph, run through the session
    every backend uses, gives the nearest int8 step of its input: ``|q - x / scale| <= 0.5``
    plus half an fp16 step of ``x`` (the session quantizes the float32 value before its fp16
    rounding, :mod:`edgeyolo.runtime.onnxruntime`). onnxruntime 1.20-1.29's fp16 kernel
    truncated, missing by up to one whole step."""
    from edgeyolo.runtime.references import load_references

    model = onnx.load(str(deploy_export / "model_int8.onnx"))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quants = [
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in init and n.input[1] in init
    ]
    assert quants, "the int8 graph has no activation QuantizeLinear"
    have = {o.name for o in model.graph.output}
    for n in quants:
        dtype = helper.np_dtype_to_tensor_dtype(init[n.input[1]].dtype)
        for name, t in ((n.input[0], dtype), (n.output[0], TensorProto.INT8)):
            if name not in have:
                model.graph.output.append(helper.make_tensor_value_info(name, t, None))
                have.add(name)
    images = load_references(deploy_export).inputs()[:2]
    with OnnxRuntimeSession(model.SerializeToString(), threads=1) as s:
        out = s.run(images)
    bad = []
    for n in quants:
        scale = init[n.input[1]].astype(np.float64)
        zero = init[n.input[2]].astype(np.float64) if len(n.input) > 2 else 0.0
        x = out[n.input[0]]
        ratio = x.astype(np.float64) / scale + zero
        tol = 0.5 + np.spacing(x).astype(np.float64) / (2 * scale) + 1e-6
        lo = np.clip(np.ceil(ratio - tol), -128, 127)
        hi = np.clip(np.floor(ratio + tol), -128, 127)
        q = out[n.output[0]]
        wrong = int(((q < lo) | (q > hi)).sum())
        if wrong:
            bad.append(f"{n.name}: {wrong} of {x.size}")
    assert not bad, f"onnxruntime {ort.__version__} quantizes off the nearest step: {bad}"


def test_int8_graph_meets_its_parity_floor_on_this_onnxruntime(deploy_export: Path) -> None:
    """The int8 graph against the PyTorch detections stored in the folder, at the int8 floor
    (:data:`edgeyolo.build.references.FLOORS`), as ``edgeyolo bench --models`` judges it."""
    from edgeyolo.build.references import check_against_references
    from edgeyolo.runtime.references import load_references

    refs = load_references(deploy_export)
    result = check_against_references(deploy_export / "model_int8.onnx", refs, "int8")
    assert result.passed, (
        f"onnxruntime {ort.__version__}: {result.describe()} ({result.floor.rule})"
    )
