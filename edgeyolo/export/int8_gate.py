"""The int8 accuracy gate: which quantized layer hurts most, and keeping layers out of int8 until
the mAP budget holds.

:func:`layer_sensitivity` ranks the quantized convolutions by the SQNR of each one's output (the
fp32 graph's against the int8 graph's, on calibration images, each layer on its own Q/DQ
subgraph); :func:`int8_with_budget` re-quantizes (:func:`edgeyolo.export.quantize.quantize_int8`,
no recalibration) with the worst layer left out, one at a time, until int8 loses at most
``max_drop`` points of the caller's score, and reports every step (:class:`GateReport`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnxruntime.quantization import TensorsData

from edgeyolo.errors import AccuracyBudgetError, ExportError
from edgeyolo.export import quantize
from edgeyolo.export.calib import METHOD_ENUMS, CalibSet, calibrate
from edgeyolo.export.quantize import QDQ_OPS, QuantResult, ort_session, quantized_convs

__all__ = ["GateReport", "int8_with_budget", "layer_sensitivity"]


def _qdq_subgraph(
    conv: onnx.NodeProto, qmodel: onnx.ModelProto, types: dict[str, int]
) -> tuple[bytes, str, int]:
    """A model ``x → [Cast →] Q → DQ → Conv(DQ(w), b)`` holding one quantized conv; returns it
    serialized, with the name of its input ``x`` (the same tensor name as in fp32) and ``x``'s
    dtype there (fp16 inside a graph with fp16 outside the Q/DQ pairs; ``types`` maps tensor
    names of ``qmodel`` to ONNX dtypes)."""
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    inits = {i.name: i for i in qmodel.graph.initializer}
    nodes, leaves, used = [conv], set(), set()
    stack = [t for t in conv.input if t]
    while stack:
        name = stack.pop()
        if name in inits:
            used.add(name)
        elif name in producers and producers[name].op_type in (*QDQ_OPS, "Cast"):
            nodes.append(producers[name])
            stack.extend(t for t in producers[name].input if t)
        else:
            leaves.add(name)
    if len(leaves) != 1:
        raise ExportError(f"{conv.name}: expected one fp32 input behind its Q/DQ, got {leaves}")
    x = leaves.pop()
    order = {id(n): i for i, n in enumerate(qmodel.graph.node)}
    x_type = types.get(x, onnx.TensorProto.FLOAT)
    y_type = types.get(conv.output[0], onnx.TensorProto.FLOAT)
    graph = helper.make_graph(
        sorted(nodes, key=lambda n: order[id(n)]),
        "qdq_conv",
        [helper.make_tensor_value_info(x, x_type, None)],
        [helper.make_tensor_value_info(conv.output[0], y_type, None)],
        initializer=[inits[n] for n in sorted(used)],
    )
    model = helper.make_model(graph, opset_imports=qmodel.opset_import)
    model.ir_version = qmodel.ir_version
    return model.SerializeToString(), x, x_type


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX dtype of every tensor of ``model`` (shape inference)."""
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {i.name: i.data_type for i in g.initializer}
    types.update((v.name, v.type.tensor_type.elem_type) for v in [*g.input, *g.value_info])
    types.update((v.name, v.type.tensor_type.elem_type) for v in g.output)
    return types


def layer_sensitivity(
    fp32_path: str | Path,
    int8_path: str | Path,
    calib: CalibSet,
    *,
    max_images: int = 16,
) -> list[tuple[str, float]]:
    """SQNR (dB) of each quantized conv's own quantization, worst (lowest) first.

    For every Conv with Q/DQ in ``int8_path``, its fp32 input activation (from the fp32 graph) goes
    through that conv's Q/DQ and int8 weights (in fp16, with the input rounded to fp16, where the
    int8 graph is fp16 outside its Q/DQ pairs); the result is compared with the fp32 conv output:
    ``SQNR = 10 log10(sum(y^2) / sum((y - y_q)^2))`` over the first ``max_images`` images. The
    layers are measured in isolation (upstream error does not accumulate), so the ranking says
    which layer's *own* quantization loses the most signal; ``inf`` means no loss.
    """
    qmodel = onnx.load(str(int8_path))
    types = _dtypes(qmodel)
    minis = {
        c.name: (*_qdq_subgraph(c, qmodel, types), c.output[0]) for c in quantized_convs(qmodel)
    }
    fp32 = onnx.load(str(fp32_path))
    existing = {o.name for o in fp32.graph.output}
    wanted = sorted({t for _, x, _, y in minis.values() for t in (x, y)} - existing)
    fp32.graph.output.extend(
        helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted
    )
    ref = ort_session(fp32.SerializeToString())
    sessions = {name: ort_session(blob, threads=1) for name, (blob, *_) in minis.items()}
    input_name = ref.get_inputs()[0].name
    names = [o.name for o in ref.get_outputs()]
    signal = dict.fromkeys(minis, 0.0)
    noise = dict.fromkeys(minis, 0.0)
    for i in range(min(max_images, len(calib))):
        acts = dict(zip(names, ref.run(None, {input_name: calib.images[i : i + 1]}), strict=True))
        for name, (_, x, x_type, y) in minis.items():
            feed = acts[x].astype(onnx.helper.tensor_dtype_to_np_dtype(x_type))
            y_q = sessions[name].run(None, {x: feed})[0].astype(np.float64)
            signal[name] += float(np.sum(np.square(acts[y], dtype=np.float64)))
            noise[name] += float(np.sum(np.square(acts[y] - y_q)))
    db = {
        n: 10 * math.log10(max(signal[n], 1e-30) / noise[n]) if noise[n] else math.inf
        for n in minis
    }
    return sorted(db.items(), key=lambda t: t[1])


@dataclass(frozen=True)
class GateReport:
    """The INT8 accuracy gate's record: ``steps`` holds ``(convs kept in fp32, mAP@0.5 points)``
    of every attempt in order; ``excluded``/``score``/``result`` are the last attempt's;
    ``passed`` is ``fp32_score - score <= max_drop``; ``sensitivity`` is ``(conv, SQNR dB)``,
    worst first (empty when the first attempt passed)."""

    steps: tuple[tuple[tuple[str, ...], float], ...]
    excluded: tuple[str, ...]
    score: float
    passed: bool
    fp32_score: float
    max_drop: float
    method: str
    sensitivity: tuple[tuple[str, float], ...] = ()
    result: QuantResult | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the manifest); an infinite SQNR becomes ``None``."""
        return {
            "method": self.method,
            "passed": self.passed,
            "fp32_map50": self.fp32_score,
            "int8_map50": self.score,
            "max_drop": self.max_drop,
            "kept_fp32": list(self.excluded),
            "steps": [{"kept_fp32": list(e), "map50": s} for e, s in self.steps],
            "sensitivity_db": {n: (None if math.isinf(v) else v) for n, v in self.sensitivity},
        }

    def describe(self) -> str:
        """Every step as text, one per line."""
        lines = [f"fp32 mAP@0.5 {self.fp32_score:.2f}, allowed drop {self.max_drop:.2f} points"]
        for i, (excl, score) in enumerate(self.steps):
            lines.append(
                f"  step {i}: int8 mAP@0.5 {score:.2f} (drop {self.fp32_score - score:.2f}), "
                f"layers out of int8: {', '.join(excl) or 'none'}"
            )
        return "\n".join(lines)


def int8_with_budget(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    calib: CalibSet,
    method: str,
    ranges: TensorsData | None = None,
    evaluate: Callable[[Path], float],
    fp32_score: float,
    max_drop: float,
    max_steps: int = 8,
    quantize_heads: bool = False,
    placement: str = "tensorrt",
    reduce_range: bool | None = None,
    high_precision: str | None = None,
    log: Callable[[str], object] = print,
) -> GateReport:
    """Quantize, score, and keep the most sensitive layers in fp32 until the drop is in budget.

    Calibrates once (:func:`calibrate`; pass ``ranges`` to reuse ranges already computed on a
    graph with the same ``/net/`` part), then: quantize → ``evaluate(out_path)`` (mAP@0.5 points of
    that ONNX file) → if ``fp32_score - score > max_drop``, move the most sensitive conv still in
    int8 (:func:`layer_sensitivity`, measured once on the first int8 graph) to fp32 and retry,
    at most ``max_steps`` times.

    Returns:
        :class:`GateReport` with ``passed=True``; ``out_path`` holds the passing graph.

    Raises:
        AccuracyBudgetError: still over budget after ``max_steps`` exclusions (or nothing left to
            exclude); its message lists every step, its ``report`` attribute is the GateReport.
            ``out_path`` is removed so that no failing int8 graph is left to ship.
    """
    out_path = Path(out_path)
    if ranges is None:
        log(f"int8: calibrating on {len(calib)} images from {calib.folder} ({method})")
        ranges = calibrate(fp32_path, calib, method=method)
    elif ranges.calibration_method != METHOD_ENUMS[method]:
        raise ExportError(f"ranges were calibrated with {ranges.calibration_method}, not {method}")
    extra: list[str] = []
    steps: list[tuple[tuple[str, ...], float]] = []
    ranking: list[tuple[str, float]] = []
    while True:
        result = quantize.quantize_int8(
            fp32_path,
            out_path,
            ranges=ranges,
            exclude=extra,
            quantize_heads=quantize_heads,
            placement=placement,
            reduce_range=reduce_range,
            high_precision=high_precision,
        )
        score = float(evaluate(out_path))
        if not math.isfinite(score):
            raise ExportError(f"evaluate({out_path.name}) returned {score}: no ground truth?")
        steps.append((result.excluded, score))
        drop = fp32_score - score
        passed = drop <= max_drop
        log(
            f"int8 step {len(steps) - 1}: mAP@0.5 {score:.2f} vs fp32 {fp32_score:.2f} "
            f"(drop {drop:.2f}, budget {max_drop:.2f}) layers out of int8: {len(result.excluded)}"
            + (f", latest {extra[-1]}" if extra else "")
        )
        if not ranking and not passed:
            ranking = layer_sensitivity(fp32_path, out_path, calib)
            log(
                "int8 sensitivity (SQNR dB, worst first): "
                + ", ".join(f"{n} {s:.1f}" for n, s in ranking[:5])
            )
        candidates = [n for n, _ in ranking if n in result.quantized]
        if passed or len(extra) >= max_steps or len(candidates) <= 1:
            break
        extra.append(candidates[0])
    report = GateReport(
        steps=tuple(steps),
        excluded=result.excluded,
        score=score,
        passed=passed,
        fp32_score=fp32_score,
        max_drop=max_drop,
        method=method,
        sensitivity=tuple(ranking),
        result=result,
    )
    if not passed:
        out_path.unlink(missing_ok=True)
        error = AccuracyBudgetError(
            f"int8 stays {drop:.2f} mAP@0.5 points below fp32 after {len(steps)} attempts "
            f"(budget {max_drop:.2f}); raise --int8-max-drop, try another --calib-method, use "
            f"more representative --calib images, or ship fp16.\n{report.describe()}"
        )
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
