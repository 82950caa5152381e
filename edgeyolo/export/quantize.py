"""Explicit INT8 (Q/DQ) for TensorRT, calibrated by us, with a measured accuracy gate.

TensorRT 11 has no implicit INT8 (no calibrator, no ``BuilderFlag.INT8``): precision has to be in
the ONNX graph as ``QuantizeLinear``/``DequantizeLinear`` pairs, and TensorRT 8.6/10.x accept the
same graph. The placement follows TensorRT's Q/DQ recommendations:

* **``Conv`` is quantized on its inputs**: the activation (per tensor) and the weight (per
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
* **Residual ``Add`` nodes get Q/DQ on their skip input** (:func:`residual_adds`; yolov3 has
  23, tiny none), the pair its conv already reads: TensorRT's guide asks for it so that the Add
  fuses into the int8 conv making its other input, which stays unquantized.
* **fp16 outside the Q/DQ pairs** (``high_precision``, :func:`resolve_high_precision`): strongly
  typed TensorRT (10.12+, 11) runs every layer outside them at the graph's own dtype, so the
  graph carries fp16 there, as NVIDIA's ModelOpt writes with ``high_precision_dtype=fp16``
  (:func:`fp16_outside_qdq`: opset 19, fp16 scales, one Cast at each edge of the network). The
  ``onnxruntime`` placement stays fp32 (a CPU graph), and so does ``high_precision="fp32"``,
  for TensorRT 8.6/10.3 (weakly typed: the builder's FP16 flag picks fp16 kernels). ONNX
  Runtime's CPU runs both, so the accuracy gate scores the graph that ships.
* Only nodes under ``/net/`` are candidates; the decode + NMS tail is never quantized (box
  coordinates and scores in int8 would cost accuracy and TensorRT runs it in float anyway). The
  heads' last 1x1 convs (raw box offsets and logits) stay fp32 unless ``quantize_heads``.

``quant_pre_process`` is not used, because it has nothing to do here and fails by default: its
symbolic shape inference stops at the NMS tail's data-dependent shapes ("Incomplete symbolic shape
inference"), and without it the ORT optimizer only drops six Constant nodes (BatchNorm is already
folded into the convs by the exporter; quantize_static re-runs ONNX shape inference itself).

Calibration (:func:`edgeyolo.export.calib.calibrate`, re-exported here) runs once;
:func:`quantize_int8` only applies the stored ranges, so the accuracy gate
(:func:`edgeyolo.export.int8_gate.int8_with_budget`) re-quantizes with a growing list of
layers kept out of int8 without recalibrating.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, version_converter
from onnxruntime.quantization import QuantFormat, QuantType, TensorsData, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from edgeyolo.config import ExportConfig
from edgeyolo.errors import ExportError
from edgeyolo.export.calib import (
    METHOD_ENUMS,
    METHODS,
    _quiet,
    calibrate,
)
from edgeyolo.export.fp16 import Fp16Report, convert_region_to_fp16
from edgeyolo.export.graph import NET_PREFIX, dedupe_opsets
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.runtime.onnxruntime import session_source

__all__ = [
    "FP16_QDQ_OPSET",
    "HIGH_PRECISIONS",
    "METHODS",
    "QUANT_OP_TYPES",
    "WEAKLY_TYPED_TARGETS",
    "QuantResult",
    "calibrate",
    "head_conv_names",
    "quantize_int8",
    "fp16_outside_qdq",
    "resolve_high_precision",
    "resolve_reduce_range",
    "residual_adds",
]

#: Op types that get Q/DQ on their inputs (module docstring: why only Conv).
QUANT_OP_TYPES = ("Conv",)
#: The ``onnxruntime`` placement quantizes these too, with their outputs, so that ONNX Runtime's
#: CPU kernels fuse DQ → op → Q into integer kernels (QLinearConv ...); TensorRT also accepts it.
ORT_OP_TYPES = ("Conv", "LeakyRelu", "MaxPool", "Concat", "Resize")
PLACEMENTS = ("tensorrt", "onnxruntime")
#: The dtype of everything outside the Q/DQ pairs (``high_precision``): see :func:`quantize_int8`.
HIGH_PRECISIONS = ("fp16", "fp32")
#: ``QuantizeLinear``/``DequantizeLinear`` take fp16 inputs and scales from opset 19 on.
FP16_QDQ_OPSET = 19
#: ``--trt`` targets whose engines are built weakly typed by default (TensorRT before 10.12,
#: :func:`edgeyolo.build.tensorrt.choose_typing`): the FP16 flag picks fp16 kernels there, so
#: an fp32 graph outside the Q/DQ pairs serves them (and 8.6 cannot parse an fp16 Q/DQ graph:
#: it stops at opset 17 and reads Q/DQ scales as FP32).
WEAKLY_TYPED_TARGETS = ("8.6", "10.3")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def ort_session(model: str | bytes, threads: int = 0) -> ort.InferenceSession:
    """A CPU session of ``model`` that rounds float16 ``QuantizeLinear`` on every onnxruntime
    (:func:`edgeyolo.runtime.onnxruntime.session_source`)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(session_source(model), options, providers=["CPUExecutionProvider"])


def load_onnx(path: str | Path) -> onnx.ModelProto:
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
    the Conv nodes with Q/DQ on activation and weight, and the ``/net/`` Conv nodes kept out of
    int8 (heads unless ``quantize_heads``, plus ``exclude``), both in graph order; the residual
    ``Add`` nodes with Q/DQ on their skip input; the dtype outside the Q/DQ pairs (``fp16`` or
    ``fp32``: the kept convs run in it too) and the graph's opset."""

    path: Path
    method: str
    quantized: tuple[str, ...]
    excluded: tuple[str, ...]
    residual_adds: tuple[str, ...] = ()
    high_precision: str = "fp32"
    opset: int = 17


def quantized_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
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


def resolve_high_precision(
    placement: str, high_precision: str | None = None, trt: Sequence[str] | None = None
) -> str:
    """The dtype outside the Q/DQ pairs: ``high_precision`` when ``fp16`` or ``fp32``; for
    ``None``/``auto``, ``fp32`` for the ``onnxruntime`` placement (a CPU graph: ONNX Runtime's
    integer kernels take fp32 around them) and, for ``tensorrt``, ``fp16`` unless every TensorRT
    target in ``trt`` builds weakly typed (:data:`WEAKLY_TYPED_TARGETS`: the builder's FP16
    flag picks fp16 kernels there; 8.6 cannot parse an fp16 Q/DQ graph, see
    :func:`quantize_int8`).

    Raises:
        ExportError: an unknown value, or ``fp16`` asked of the ``onnxruntime`` placement.
    """
    if high_precision in (None, "auto"):
        if placement != "tensorrt":
            return "fp32"
        strong = trt is None or any(t not in WEAKLY_TYPED_TARGETS for t in trt)
        return "fp16" if strong else "fp32"
    if high_precision not in HIGH_PRECISIONS:
        raise ExportError(
            f"unknown int8 high precision {high_precision!r}; use {' or '.join(HIGH_PRECISIONS)}"
        )
    if placement == "onnxruntime" and high_precision == "fp16":
        raise ExportError(
            "the onnxruntime int8 placement is a CPU graph and stays fp32 outside its Q/DQ "
            "pairs; use --int8-high-precision fp32 or the tensorrt placement"
        )
    return high_precision


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    ranges: TensorsData,
    exclude: Sequence[str] = (),
    quantize_heads: bool = False,
    placement: str = "tensorrt",
    reduce_range: bool | None = None,
    high_precision: str | None = None,
) -> QuantResult:
    """Write the Q/DQ int8 graph of ``fp32_path`` to ``out_path`` with ``ranges`` from
    :func:`calibrate` (no calibration runs here). ``exclude``: further ``/net/`` Conv node names
    kept out of int8; ``quantize_heads``: quantize the heads' last 1x1 convs too.

    ``placement``: ``tensorrt`` (default; Q/DQ on conv inputs and on the skip input of residual
    ``Add`` nodes (:func:`residual_adds`), float bias, as TensorRT's Q/DQ placement guide
    recommends) or ``onnxruntime`` (activations quantized after every conv, activation, pool,
    concat and resize of the network, int32 bias: ONNX Runtime's CPU kernels then run integer
    convolutions, measured faster than fp32 on CPU where the TensorRT placement is slower).

    ``high_precision`` (:func:`resolve_high_precision`; ``fp16`` for ``tensorrt``): the dtype of
    everything outside the Q/DQ pairs. Strongly typed TensorRT (10.12+, the only mode in 11)
    runs each layer outside them at the graph's own dtype, so an fp32 graph would run its
    unquantized layers in fp32; ``fp16`` writes them in fp16, with one Cast at each edge of the
    network, as ModelOpt's ``high_precision_dtype=fp16`` does. fp16 Q/DQ needs opset 19
    (:data:`FP16_QDQ_OPSET`; the graph is converted with ``onnx.version_converter``) and fp16
    scales, which TensorRT 8.6 does not parse: for 8.6 (weakly typed; the builder's FP16 flag
    picks fp16 kernels) use ``fp32``.

    ``reduce_range``: 7-bit weights (ONNX Runtime's option). ``None``: on for the ``onnxruntime``
    placement, off for ``tensorrt`` (CPU target ``any``; ``edgeyolo export`` passes the value
    its ``--int8-cpu-target`` implies). On x86 CPUs without VNNI, ONNX Runtime's int8 convolution
    multiplies u8 activations by s8 weights with ``vpmaddubsw``, which saturates the int16 sum of
    two products; with full-range weights and near-white images the first conv's output collapsed
    (mAP@0.5 0.00; ``bench/RESULTS.md``), with 7-bit weights it cannot saturate. CPUs with
    AVX512-VNNI or AVX-VNNI (``vpdpbusd``, int32 sums) run full-range weights correctly; TensorRT
    and ORT's Q/DQ simulation compute in wider types and keep the full range.

    Raises:
        ExportError: an ``exclude`` name is not a ``/net/`` Conv, nothing is left to quantize,
            ONNX Runtime skipped a conv (e.g. ``ranges`` lack its input: another graph's ranges),
            or an unknown placement or high precision.
    """
    model = load_onnx(fp32_path)
    convs, keep, targets = _conv_targets(model, fp32_path, exclude, quantize_heads)
    if placement not in PLACEMENTS:
        raise ExportError(f"unknown int8 placement {placement!r}; use {' or '.join(PLACEMENTS)}")
    ort_placement = placement == "onnxruntime"
    reduce_range = resolve_reduce_range(placement, reduce_range)
    high_precision = resolve_high_precision(placement, high_precision)
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
    qmodel, adds = _finish(out_path, model, ranges, ort_placement, high_precision)
    done = {n.name for n in quantized_convs(qmodel)}
    missing = sorted(set(targets) - done)
    if missing:
        raise ExportError(f"onnxruntime left these convs unquantized: {missing}")
    return QuantResult(
        path=out_path,
        method=method,
        quantized=tuple(c for c in convs if c in done),
        excluded=tuple(c for c in convs if c in keep),
        residual_adds=adds,
        high_precision=high_precision,
        opset=_opset(qmodel),
    )


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _finish(
    path: Path,
    fp32: onnx.ModelProto,
    ranges: TensorsData,
    ort_placement: bool,
    high_precision: str,
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """ONNX Runtime's Q/DQ graph at ``path``, then (``tensorrt`` placement) Q/DQ on the residual
    Adds' skip inputs and (``fp16``) fp16 outside the Q/DQ pairs; rewritten only if changed.
    Returns the checked graph and the residual Adds given Q/DQ."""
    qmodel = onnx.load(str(path))
    adds: tuple[str, ...] = ()
    if not ort_placement:
        adds = _qdq_residuals(qmodel, residual_adds(fp32), ranges)
    if high_precision == "fp16":
        qmodel, _ = fp16_outside_qdq(qmodel)
    if adds or high_precision == "fp16":
        onnx.checker.check_model(qmodel, full_check=True)
        write_bytes_atomic(path, qmodel.SerializeToString())
    else:
        onnx.checker.check_model(qmodel)
    return qmodel, adds


def fp16_outside_qdq(qmodel: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    """``qmodel`` (a Q/DQ graph) at opset :data:`FP16_QDQ_OPSET` or newer with its network in
    fp16 outside the Q/DQ pairs (scales in fp16; :func:`edgeyolo.export.fp16.
    convert_region_to_fp16`); the decode + NMS tail, inputs and outputs stay fp32."""
    dedupe_opsets(qmodel)
    if _opset(qmodel) < FP16_QDQ_OPSET:
        try:
            qmodel = version_converter.convert_version(qmodel, FP16_QDQ_OPSET)
        except Exception as e:  # onnx raises bare RuntimeErrors from C++
            raise ExportError(
                f"cannot convert the int8 graph to opset {FP16_QDQ_OPSET} for fp16 Q/DQ ({e}); "
                "use --int8-high-precision fp32"
            ) from e
        for node in qmodel.graph.node:  # e.g. ReduceMax's axes, an input from opset 18 on
            node.name = node.name or f"opset{FP16_QDQ_OPSET}/{node.output[0]}"
    return convert_region_to_fp16(qmodel, NET_PREFIX)


def residual_adds(model: onnx.ModelProto) -> dict[str, str]:
    """``{Add node: its skip input}`` for the ``/net/`` Adds of residual blocks.

    A residual Add sums two computed tensors one of which the other is computed from: that one
    is the skip connection (TensorRT's guide: quantize it, so that the Add fuses into the int8
    conv that makes the other input, which stays unquantized).
    """
    producer = {o: n for n in model.graph.node for o in n.output}

    def upstream(tensor: str) -> set[str]:
        seen: set[str] = set()
        stack = [tensor]
        while stack:
            node = producer.get(stack.pop())
            for t in node.input if node is not None else ():
                if t and t not in seen:
                    seen.add(t)
                    stack.append(t)
        return seen

    out = {}
    for n in model.graph.node:
        if n.op_type != "Add" or not n.name.startswith(NET_PREFIX) or len(n.input) != 2:
            continue
        a, b = n.input
        if a in producer and b in producer:
            if a in upstream(b):
                out[n.name] = a
            elif b in upstream(a):
                out[n.name] = b
    return out


def _qdq_residuals(
    qmodel: onnx.ModelProto, adds: dict[str, str], ranges: TensorsData
) -> tuple[str, ...]:
    """Feed each residual Add's skip input through Q/DQ: the pair its convs already read (one
    tensor, one scale), or a new symmetric pair from ``ranges``; an input with neither (not
    calibrated) stays float. Returns the Adds changed."""
    g = qmodel.graph
    q_of = {n.input[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    done = []
    for node in list(g.node):
        x = adds.get(node.name)
        if x is None:
            continue
        if x in q_of:
            dq = dq_of[q_of[x].output[0]].output[0]
        elif x in ranges.data:
            dq = _insert_qdq(g, x, ranges.data[x], before=node)
        else:
            continue
        node.input[:] = [dq if t == x else t for t in node.input]
        done.append(node.name)
    return tuple(done)


def _insert_qdq(graph: onnx.GraphProto, x: str, data: Any, *, before: onnx.NodeProto) -> str:
    """Add ``x → Q → DQ`` (symmetric int8, zero point 0, per tensor, scale ``max|range| / 127``
    as ONNX Runtime computes it) just before ``before``; returns the DQ output's name."""
    lo, hi = data.range_value
    absmax = max(abs(float(np.min(lo))), abs(float(np.max(hi))))
    scale, zero = f"{x}_scale", f"{x}_zero_point"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(absmax / 127.0 if absmax else 1.0, np.float32), scale),
            numpy_helper.from_array(np.array(0, np.int8), zero),
        ]
    )
    q = helper.make_node(
        "QuantizeLinear", [x, scale, zero], [f"{x}_QuantizeLinear_Output"], name=f"{x}_Q"
    )
    dq = helper.make_node(
        "DequantizeLinear",
        [q.output[0], scale, zero],
        [f"{x}_DequantizeLinear_Output"],
        name=f"{x}_DQ",
    )
    at = list(graph.node).index(before)
    graph.node.insert(at, dq)
    graph.node.insert(at, q)
    return dq.output[0]


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
