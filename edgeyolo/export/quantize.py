"""Explicit INT8 (Q/DQ) for TensorRT, calibrated by us, with a measured accuracy gate.

TensorRT 11 has no implicit INT8 (no calibrator, no ``BuilderFlag.INT8``): precision has to be in
the ONNX graph as ``QuantizeLinear``/``DequantizeLinear`` pairs, and TensorRT 8.6/10.x accept the
same graph. The placement follows TensorRT's Q/DQ recommendations:

* **Only ``Conv`` is quantized**, on its inputs: the activation (per tensor) and the weight (per
  output channel, axis 0). Both symmetric int8, zero point 0 (TensorRT supports nothing else).
* **The Conv output is not quantized** (``OpTypesToExcludeOutputQuantization``): TensorRT fuses
  Conv + bias + LeakyReLU and re-quantizes at the next Conv's input; a Q/DQ between Conv and its
  activation would only block that fusion. MaxPool, Resize (nearest), Concat and Slice commute with
  a per-tensor scale, so TensorRT propagates the next Conv's Q/DQ through them; quantizing them
  ourselves adds nodes and no int8 kernel. (ORT's CPU kernels do not fuse this placement into
  QLinearConv: on CPU the graph is a faithful *simulation* of what TensorRT runs, not a fast one.)
* **Biases stay float** (``QuantizeBias=False``), as NVIDIA's own Q/DQ exporters write them:
  TensorRT folds a float bias into the int8 convolution; ORT's default int32 bias + DQ is not the
  pattern TensorRT's Q/DQ fusion is documented for (not checked on a GPU here).
* Only nodes under ``/net/`` are candidates; the decode + NMS tail is never quantized (box
  coordinates and scores in int8 would cost accuracy and TensorRT runs it in float anyway). The
  heads' last 1x1 convs (raw box offsets and logits) stay fp32 unless ``quantize_heads``.

``quant_pre_process`` is not used, because it has nothing to do here and fails by default: its
symbolic shape inference stops at the NMS tail's data-dependent shapes ("Incomplete symbolic shape
inference"), and without it the ORT optimizer only drops six Constant nodes (BatchNorm is already
folded into the convs by the exporter; quantize_static re-runs ONNX shape inference itself).

Calibration (:func:`edgeyolo.export.calib.calibrate`, re-exported here) runs once;
:func:`quantize_int8` only applies the stored ranges, so the accuracy gate
(:func:`int8_with_budget`) re-quantizes with a growing fp32 list without recalibrating.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxruntime.quantization import QuantFormat, QuantType, TensorsData, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from edgeyolo.config import ExportConfig
from edgeyolo.errors import AccuracyBudgetError, ExportError
from edgeyolo.export.calib import (
    METHOD_ENUMS,
    METHODS,
    CalibSet,
    _quiet,
    calibrate,
)
from edgeyolo.export.graph import NET_PREFIX, dedupe_opsets

__all__ = [
    "METHODS",
    "QUANT_OP_TYPES",
    "GateReport",
    "QuantResult",
    "calibrate",
    "head_conv_names",
    "int8_with_budget",
    "layer_sensitivity",
    "quantize_int8",
    "resolve_reduce_range",
]

#: Op types that get Q/DQ on their inputs (module docstring: why only Conv).
QUANT_OP_TYPES = ("Conv",)
#: The ``onnxruntime`` placement quantizes these too, with their outputs, so that ONNX Runtime's
#: CPU kernels fuse DQ → op → Q into integer kernels (QLinearConv ...); TensorRT also accepts it.
ORT_OP_TYPES = ("Conv", "LeakyRelu", "MaxPool", "Concat", "Resize")
PLACEMENTS = ("tensorrt", "onnxruntime")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _session(model: str | bytes, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _load(path: str | Path) -> onnx.ModelProto:
    """The graph with duplicate opset imports merged (``onnx.compose.merge_models`` writes the
    default domain twice; ORT's quantizer rejects that: "Failed to find proper ai.onnx domain")."""
    model = onnx.load(str(path))
    dedupe_opsets(model)
    return model


def head_conv_names(model: onnx.ModelProto) -> list[str]:
    """Names of the heads' last convs (``/net/stages.<i>/head/...`` Conv nodes)."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and n.name.startswith(f"{NET_PREFIX}stages.") and "/head/" in n.name
    ]


@dataclass(frozen=True)
class QuantResult:
    """What :func:`quantize_int8` wrote: the Q/DQ file, the calibration method of its ranges,
    the Conv nodes with Q/DQ on activation and weight, and the ``/net/`` Conv nodes kept in fp32
    (heads unless ``quantize_heads``, plus ``exclude``), both in graph order."""

    path: Path
    method: str
    quantized: tuple[str, ...]
    excluded: tuple[str, ...]


def _quantized_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv nodes whose activation and weight both come from a ``DequantizeLinear``."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n for n in model.graph.node if n.op_type == "Conv" and {*n.input[:2]} <= dq]


def resolve_reduce_range(
    placement: str, reduce_range: bool | None, cpu_target: str = "any"
) -> bool:
    """7-bit weights or not: ``reduce_range`` when given, else the rule of
    :meth:`edgeyolo.config.ExportConfig.reduce_range_for` (on for the ``onnxruntime`` placement
    with CPU target ``any``, off for target ``vnni`` and for ``tensorrt``; see
    :func:`quantize_int8`)."""

    if reduce_range is not None:
        return reduce_range
    return ExportConfig.reduce_range_for(placement, cpu_target)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    ranges: TensorsData,
    exclude: Sequence[str] = (),
    quantize_heads: bool = False,
    placement: str = "tensorrt",
    reduce_range: bool | None = None,
) -> QuantResult:
    """Write the Q/DQ int8 graph of ``fp32_path`` to ``out_path`` with ``ranges`` from
    :func:`calibrate` (no calibration runs here). ``exclude``: further ``/net/`` Conv node names
    kept in fp32; ``quantize_heads``: quantize the heads' last 1x1 convs too.

    ``placement``: ``tensorrt`` (default; Q/DQ on conv inputs only, float bias, as TensorRT
    recommends) or ``onnxruntime`` (activations quantized after every conv, activation, pool,
    concat and resize of the network, int32 bias: ONNX Runtime's CPU kernels then run integer
    convolutions, measured faster than fp32 on CPU where the TensorRT placement is slower).

    ``reduce_range``: 7-bit weights (ONNX Runtime's option). ``None``: on for the ``onnxruntime``
    placement, off for ``tensorrt`` (CPU target ``any``; ``edgeyolo export`` passes the value
    its ``--int8-cpu-target`` implies). On x86 CPUs without VNNI, ONNX Runtime's int8 convolution
    multiplies u8 activations by s8 weights with ``vpmaddubsw``, which saturates the int16 sum of
    two products; with full-range weights and near-white images the first conv's output collapsed
    (mAP@0.5 0.00; ``bench/RESULTS.md``), with 7-bit weights it cannot saturate. CPUs with
    AVX512-VNNI or AVX-VNNI (``vpdpbusd``, int32 sums) run full-range weights correctly; TensorRT
    and ORT's Q/DQ simulation compute in wider types and keep the full range.

    Raises:
        ExportError: an ``exclude`` name is not a ``/net/`` Conv, nothing is left to quantize, or
            ONNX Runtime skipped a conv (e.g. ``ranges`` lack its input: another graph's ranges).
    """
    model = _load(fp32_path)
    convs, keep, targets = _conv_targets(model, fp32_path, exclude, quantize_heads)
    if placement not in PLACEMENTS:
        raise ExportError(f"unknown int8 placement {placement!r}; use {' or '.join(PLACEMENTS)}")
    ort_placement = placement == "onnxruntime"
    reduce_range = resolve_reduce_range(placement, reduce_range)
    if ort_placement:
        heads = set() if quantize_heads else set(head_conv_names(model))
        nodes = _ort_nodes(model, keep, heads)
    else:
        nodes = targets
    method = next(k for k, v in METHOD_ENUMS.items() if v == ranges.calibration_method)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _quantize_static(
        model,
        out_path,
        ranges=ranges,
        nodes=nodes,
        ort_placement=ort_placement,
        reduce_range=reduce_range,
    )
    qmodel = onnx.load(str(out_path))
    onnx.checker.check_model(qmodel)
    done = {n.name for n in _quantized_convs(qmodel)}
    missing = sorted(set(targets) - done)
    if missing:
        raise ExportError(f"onnxruntime left these convs unquantized: {missing}")
    return QuantResult(
        path=out_path,
        method=method,
        quantized=tuple(c for c in convs if c in done),
        excluded=tuple(c for c in convs if c in keep),
    )


def _conv_targets(
    model: onnx.ModelProto, fp32_path: str | Path, exclude: Sequence[str], quantize_heads: bool
) -> tuple[list[str], set[str], list[str]]:
    """``(convs, keep, targets)``: the ``/net/`` Conv nodes in graph order, those kept in fp32
    (``exclude``, plus the heads unless ``quantize_heads``), and the rest, to be quantized.

    Raises:
        ExportError: an ``exclude`` name is not a ``/net/`` Conv, or nothing is left to quantize.
    """
    convs = [
        n.name for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(NET_PREFIX)
    ]
    unknown = sorted(set(exclude) - set(convs))
    if unknown:
        raise ExportError(f"cannot exclude {unknown}: not Conv nodes under {NET_PREFIX}")
    keep = set(exclude) | (set() if quantize_heads else set(head_conv_names(model)))
    targets = [c for c in convs if c not in keep]
    if not targets:
        raise ExportError(f"every Conv of {fp32_path} is excluded: nothing left to quantize")
    return convs, keep, targets


def _ort_nodes(model: onnx.ModelProto, keep: set[str], heads: set[str]) -> list[str]:
    """The nodes the ``onnxruntime`` placement quantizes: every ``/net/`` node of
    :data:`ORT_OP_TYPES` not in ``keep`` and not in the module of a head conv in ``heads``."""
    return [
        n.name
        for n in model.graph.node
        if n.name.startswith(NET_PREFIX)
        and n.op_type in ORT_OP_TYPES
        and n.name not in keep
        and not any(n.name.startswith(h.rsplit("/", 1)[0] + "/") for h in heads)
    ]


def _quantize_static(
    model: onnx.ModelProto,
    out_path: Path,
    *,
    ranges: TensorsData,
    nodes: list[str],
    ort_placement: bool,
    reduce_range: bool,
) -> None:
    """ONNX Runtime's ``quantize_static`` of ``nodes`` to ``out_path`` (QDQ format, symmetric
    int8, per-channel weights) from the stored ``ranges``, with the placement's options."""
    extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True}
    if not ort_placement:
        extra.update(QuantizeBias=False, OpTypesToExcludeOutputQuantization=list(QUANT_OP_TYPES))
    with tempfile.TemporaryDirectory(prefix="edgeyolo-q-") as tmp, _quiet():
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(
            model,
            str(out_path),
            calibration_data_reader=None,
            calibration_cache_path=cache,
            calibrate_method=ranges.calibration_method,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(ORT_OP_TYPES if ort_placement else QUANT_OP_TYPES),
            nodes_to_quantize=nodes,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options=extra,
        )


def _qdq_subgraph(conv: onnx.NodeProto, qmodel: onnx.ModelProto) -> tuple[bytes, str]:
    """A model ``x (fp32) → Q → DQ → Conv(DQ(w), b)`` holding one quantized conv; returns it
    serialized, with the name of its fp32 input ``x`` (the same tensor name as in fp32)."""
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    inits = {i.name: i for i in qmodel.graph.initializer}
    nodes, leaves, used = [conv], set(), set()
    stack = [t for t in conv.input if t]
    while stack:
        name = stack.pop()
        if name in inits:
            used.add(name)
        elif name in producers and producers[name].op_type in _QDQ:
            nodes.append(producers[name])
            stack.extend(t for t in producers[name].input if t)
        else:
            leaves.add(name)
    if len(leaves) != 1:
        raise ExportError(f"{conv.name}: expected one fp32 input behind its Q/DQ, got {leaves}")
    x = leaves.pop()
    order = {id(n): i for i, n in enumerate(qmodel.graph.node)}
    graph = helper.make_graph(
        sorted(nodes, key=lambda n: order[id(n)]),
        "qdq_conv",
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None)],
        initializer=[inits[n] for n in sorted(used)],
    )
    model = helper.make_model(graph, opset_imports=qmodel.opset_import)
    model.ir_version = qmodel.ir_version
    return model.SerializeToString(), x


def layer_sensitivity(
    fp32_path: str | Path,
    int8_path: str | Path,
    calib: CalibSet,
    *,
    max_images: int = 16,
) -> list[tuple[str, float]]:
    """SQNR (dB) of each quantized conv's own quantization, worst (lowest) first.

    For every Conv with Q/DQ in ``int8_path``, its fp32 input activation (from the fp32 graph) goes
    through that conv's Q/DQ and int8 weights; the result is compared with the fp32 conv output:
    ``SQNR = 10 log10(sum(y^2) / sum((y - y_q)^2))`` over the first ``max_images`` images. The
    layers are measured in isolation (upstream error does not accumulate), so the ranking says
    which layer's *own* quantization loses the most signal; ``inf`` means no loss.
    """
    qmodel = onnx.load(str(int8_path))
    minis = {c.name: (*_qdq_subgraph(c, qmodel), c.output[0]) for c in _quantized_convs(qmodel)}
    fp32 = onnx.load(str(fp32_path))
    existing = {o.name for o in fp32.graph.output}
    wanted = sorted({t for _, x, y in minis.values() for t in (x, y)} - existing)
    fp32.graph.output.extend(
        helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted
    )
    ref = _session(fp32.SerializeToString())
    sessions = {name: _session(blob, threads=1) for name, (blob, _, _) in minis.items()}
    input_name = ref.get_inputs()[0].name
    names = [o.name for o in ref.get_outputs()]
    signal = dict.fromkeys(minis, 0.0)
    noise = dict.fromkeys(minis, 0.0)
    for i in range(min(max_images, len(calib))):
        acts = dict(zip(names, ref.run(None, {input_name: calib.images[i : i + 1]}), strict=True))
        for name, (_, x, y) in minis.items():
            y_q = sessions[name].run(None, {x: acts[x]})[0]
            signal[name] += float(np.sum(np.square(acts[y], dtype=np.float64)))
            noise[name] += float(np.sum(np.square(acts[y] - y_q, dtype=np.float64)))
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
                f"fp32 layers: {', '.join(excl) or 'none'}"
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
        result = quantize_int8(
            fp32_path,
            out_path,
            ranges=ranges,
            exclude=extra,
            quantize_heads=quantize_heads,
            placement=placement,
            reduce_range=reduce_range,
        )
        score = float(evaluate(out_path))
        if not math.isfinite(score):
            raise ExportError(f"evaluate({out_path.name}) returned {score}: no ground truth?")
        steps.append((result.excluded, score))
        drop = fp32_score - score
        passed = drop <= max_drop
        log(
            f"int8 step {len(steps) - 1}: mAP@0.5 {score:.2f} vs fp32 {fp32_score:.2f} "
            f"(drop {drop:.2f}, budget {max_drop:.2f}) fp32 layers: {len(result.excluded)}"
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
