"""Would TensorRT's ONNX parser take this graph? Checked against a table, without TensorRT.

TensorRT cannot be installed on the machines that export, so :mod:`edgeyolo.runtime.trt_support`
writes down what its parser accepts for each target version (each fact with its source) and
this module holds a graph to it::

    problems = check_graph(onnx.load("model_fp32.onnx"), ("8.6", "10.3"))
    require_conformance(model, targets, name="model_fp32.onnx")   # ExportError listing all

Every rule is named in :data:`edgeyolo.runtime.trt_support.RULES`, which says which targets it
applies to and where it was read. The check is static: it reads op types, dtypes (from ONNX shape
inference), attributes, constants and static shapes; control-flow subgraphs (If, Loop) are not
entered. A graph that passes can still fail on a GPU for reasons no table records (a kernel
missing for a GPU, memory); a graph that fails would fail, or silently differ from ONNX Runtime,
on the target named.

An artifact made for ONNX Runtime only (the int8 ``onnxruntime`` placement, whose int32-bias
``DequantizeLinear`` TensorRT rejects) is not held to TensorRT: its manifest entry says
``"targets": ["onnxruntime"]`` and why (:func:`manifest_targets`, :func:`cpu_only_reason`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgeyolo.config import TRT_TARGETS, parse_trt_targets
from edgeyolo.errors import ExportError
from edgeyolo.runtime import trt_support as ts

__all__ = [
    "HINT",
    "ORT_ONLY_REASON",
    "Violation",
    "check_graph",
    "cpu_only_reason",
    "format_violations",
    "manifest_targets",
    "require_conformance",
    "tensorrt_targets",
]

#: Why the int8 ``onnxruntime`` placement is held to ONNX Runtime only (its manifest entry).
ORT_ONLY_REASON = (
    "int8 graph for ONNX Runtime's CPU kernels (--int8-placement onnxruntime): its conv biases "
    "are int32 DequantizeLinear inputs, which TensorRT's ONNX parser rejects ('only activation "
    f"types allowed as input to this layer': {ts.SOURCES['int32-dq']}); export with "
    "--int8-placement tensorrt for an engine"
)

#: What to do about a graph that does not conform (the last line of the error).
HINT = (
    "(--trt names the TensorRT versions a graph is checked for; drop the ones you do not deploy "
    "to, or report this with the command you ran)"
)

_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.INT4: "INT4",
    TensorProto.FLOAT8E4M3FN: "FP8",
    23: "FP4",  # TensorProto.FLOAT4E2M1, which onnx < 1.18 does not name
}
_FLOATS = frozenset({"FP32", "FP16", "BF16", "DOUBLE"})
#: The input whose dtype the table's "Supported Types" column describes (default: input 0).
_DATA_INPUT = {"Where": 1}
#: Ops through which an upper bound of a value (TopK's K) passes unchanged.
_BOUND_PASS = frozenset({"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


@dataclass(frozen=True)
class Violation:
    """One reason TensorRT ``version``'s parser would reject, or silently change, a node.

    ``node`` is the node's name (``<model>`` for graph-wide rules), ``op`` its type, ``rule`` a
    key of :data:`edgeyolo.runtime.trt_support.RULES` and ``source`` where the fact was read.
    """

    node: str
    op: str
    reason: str
    version: str
    source: str
    rule: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}), TensorRT {self.version}: {self.reason} [{self.source}]"


def _type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type))


class _Graph:
    """What the rules read of a model: nodes, constants, dtypes and static shapes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
        except (onnx.shape_inference.InferenceError, ValueError):
            graph = model.graph  # still checked, with the dtypes and shapes the file states
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int | None]] = {}
        for vi in (*graph.input, *graph.output, *graph.value_info):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                self.shapes[vi.name] = dims
        for name, t in self.inits.items():
            self.types[name] = t.data_type
            self.shapes[name] = list(t.dims)
        default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        self.opset = max(default) if default else None

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output; ``None`` for a computed tensor."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.consts.get(name)
        if node is None:
            return None
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
            if a.name in ("value_int", "value_ints", "value_float", "value_floats"):
                return np.asarray(onnx.helper.get_attribute_value(a))
        return None

    def dtype(self, name: str) -> str | None:
        """``FP32``, ``INT64`` ... of a tensor; ``None`` when ONNX could not infer it."""
        if name in self.types:
            return _type_name(self.types[name])
        node = self.consts.get(name)
        for a in node.attribute if node is not None else ():
            if a.name == "value":
                return _type_name(a.t.data_type)
        return None

    def upper_bound(self, name: str, depth: int = 0) -> float | None:
        """An upper bound of every element of ``name``: its largest value when constant, the
        smallest known bound among a ``Min``'s inputs, or a bound passed through a cast or
        reshape; ``None`` when none can be shown."""
        value = self.const(name)
        if value is not None:
            return float(np.max(value)) if value.size else None
        node = self.producer.get(name)
        if node is None or depth > 16:
            return None
        if node.op_type in ("Min", "ReduceMin"):
            inputs = node.input if node.op_type == "Min" else node.input[:1]
            bounds = [self.upper_bound(i, depth + 1) for i in inputs if i]
            known = [b for b in bounds if b is not None]
            return min(known) if known else None
        if node.op_type in _BOUND_PASS:
            return self.upper_bound(node.input[0], depth + 1)
        return None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"


def _violation(
    node: onnx.NodeProto | None, rule: str, reason: str, target: ts.Target, source: str = ""
) -> Violation:
    return Violation(
        node=_node_name(node) if node is not None else "<model>",
        op=node.op_type if node is not None else "-",
        reason=reason,
        version=target.key,
        source=source or ts.RULES[rule].source,
        rule=rule,
    )


def _applies(rule: str, target: ts.Target) -> bool:
    return target.key in ts.RULES[rule].targets


# ---- the op table: support, dtypes, constant inputs --------------------------------------------


def _as_target_dtype(dtype: str, target: ts.Target) -> str:
    """The dtype the target's parser works in: 8.6 casts INT64 down to INT32, DOUBLE to FP32."""
    if not target.int64 and dtype == "INT64":
        return "INT32"
    return "FP32" if dtype == "DOUBLE" else dtype


def _data_dtypes(g: _Graph, node: onnx.NodeProto) -> list[str]:
    """The dtypes the table's "Supported Types" column is about, for ``node``."""
    attrs = _attrs(node)
    if node.op_type == "ConstantOfShape":
        value = attrs.get("value")
        return [_type_name(value.data_type if value is not None else TensorProto.FLOAT)]
    if node.op_type == "Constant":
        dtype = g.dtype(node.output[0])
        return [dtype] if dtype else []
    index = _DATA_INPUT.get(node.op_type, 0)
    names = [node.input[index]] if len(node.input) > index and node.input[index] else []
    dtypes = [d for d in (g.dtype(n) for n in names) if d is not None]
    if node.op_type == "Cast":
        dtypes.append(_type_name(attrs["to"]))
    return dtypes


def _table_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    """``domain``, ``op-support``, ``op-dtype`` and ``const-input`` for one node."""
    if node.domain not in ("", "ai.onnx"):
        reason = (
            f"op of domain {node.domain!r}, not an ONNX op: TensorRT imports it as a plugin, "
            "which must be registered"
        )
        return [_violation(node, "domain", reason, target)]
    row = ts.op_table(target.key).get(node.op_type)
    if row is None:
        reason = (
            f"{node.op_type} is not in edgeyolo's TensorRT table (edgeyolo.runtime.trt_support): "
            "its support was not checked; add its row from operators.md"
        )
        return [_violation(node, "op-support", reason, target)]
    if not row.supported:
        reason = f"{node.op_type} is not supported by TensorRT's ONNX parser"
        return [_violation(node, "op-support", reason, target, row.source)]
    out = []
    for dtype in _data_dtypes(g, node):
        if _as_target_dtype(dtype, target) not in row.types:
            extra = ts.EXTRA_NOTES.get(node.op_type, "")
            reason = (
                f"{dtype} data is not supported (the parser takes {', '.join(sorted(row.types))})"
                + (f"; {extra}" if extra else "")
            )
            out.append(_violation(node, "op-dtype", reason, target, row.source))
    for index in row.const:
        name = node.input[index] if len(node.input) > index else ""
        if name and g.const(name) is None:
            reason = f"input {index} ({name}) must be a constant ({row.note or 'initializer'})"
            out.append(_violation(node, "const-input", reason, target, row.source))
    return out


# ---- node rules --------------------------------------------------------------------------------


def _shape_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    attrs = _attrs(node)
    dims = g.shapes.get(node.input[0])
    start, end = attrs.get("start", 0), attrs.get("end")
    noop_end = end is None or (dims is not None and end >= len(dims))
    if start == 0 and noop_end:
        return []
    reason = (
        f"Shape with start={start}, end={end}: the parser ignores both and returns the whole "
        "shape; use a plain Shape and a Gather or Slice"
    )
    return [_violation(node, "shape-start-end", reason, target)]


def _topk_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    out = []
    k_name = node.input[1] if len(node.input) > 1 else ""
    bound = g.upper_bound(k_name) if k_name else float(_attrs(node).get("k", 1))
    if bound is None:
        reason = (
            f"K ({k_name}) is computed at run time with no constant bound, so it cannot be shown "
            f"<= {ts.TOPK_MAX_K} (larger K is a run-time error); bound it with a Min"
        )
        out.append(_violation(node, "topk-k", reason, target))
    elif bound > ts.TOPK_MAX_K:
        reason = f"K = {int(bound)} > {ts.TOPK_MAX_K}, the largest K TensorRT's TopK supports"
        out.append(_violation(node, "topk-k", reason, target))
    if _attrs(node).get("sorted", 1) != 1:
        out.append(_violation(node, "topk-sorted", "sorted=0 is not supported", target))
    return out


def _nms_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    boxes = g.shapes.get(node.input[0])
    scores = g.shapes.get(node.input[1]) if len(node.input) > 1 else None
    out = []
    for what, dims in (("boxes", boxes), ("scores", scores)):
        if dims is not None and len(dims) != 3:
            reason = f"{what} has rank {len(dims)}; the parser needs 3-D boxes and scores"
            out.append(_violation(node, "nms-rank", reason, target))
    # N, the boxes per image: dim 1 of boxes or dim 2 of scores, whichever is static
    n = next((d[i] for d, i in ((boxes, 1), (scores, 2)) if d and len(d) == 3 and d[i]), None)
    if n is None:
        reason = (
            "the number of boxes per image is not static, so it cannot be shown <= "
            f"{ts.NMS_MAX_CANDIDATES}: TensorRT's NMS considers only that many (ONNX Runtime all)"
        )
        out.append(_violation(node, "nms-candidates", reason, target))
    elif n > ts.NMS_MAX_CANDIDATES:
        reason = (
            f"{n} boxes per image enter NMS: TensorRT's NMS layer considers only the "
            f"{ts.NMS_MAX_CANDIDATES} highest-scoring ones, ONNX Runtime all of them, so engine "
            "and graph differ whenever more pass the score threshold; cap the candidates first"
        )
        out.append(_violation(node, "nms-candidates", reason, target))
    return out


def _scatternd_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    out = []
    reduction = _text(_attrs(node).get("reduction"))
    if reduction is not None:
        if target.key == "8.6" and reduction != "none":
            reason = f"reduction={reduction!r} is ignored: the parser computes 'none'"
        elif target.key == "10.3":
            reason = f"reduction={reduction!r}: any reduction attribute is rejected"
        elif reduction != "none":
            reason = f"reduction={reduction!r}: only 'none' is supported"
        else:
            reason = ""
        if reason:
            out.append(_violation(node, "scatternd-reduction", reason, target))
    if (g.opset or 0) >= 18:
        reason = f"ScatterND at opset {g.opset} needs TensorRT 10.9 or newer"
        out.append(_violation(node, "scatternd-opset18", reason, target))
    return out


def _qdq_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    out = []
    if len(node.input) < 3:
        reason = "no zero-point input: 8.6 needs x, scale and zero point"
        out.append(_violation(node, "qdq-inputs", reason, target))
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    scale_type = g.dtype(node.input[1]) if len(node.input) > 1 else None
    if scale_type not in ("FP32", None):
        reason = f"{scale_type} scale {node.input[1]}: read as FP32 by this version's importer"
        out.append(_violation(node, "qdq-scale-dtype", reason, target))
    if scale is not None and not bool(np.all(scale > 0)):
        reason = f"a scale <= 0 ({float(np.min(scale)):g}): scales must all be positive"
        out.append(_violation(node, "qdq-scale", reason, target))
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if zp_name:
        zp = g.const(zp_name)
        zp_type = g.dtype(zp_name)
        if zp is None or np.any(zp != 0) or zp_type not in ("INT8", "FP8", "INT4", None):
            what = "computed" if zp is None else f"{zp_type}, max |zp| {int(np.max(np.abs(zp)))}"
            reason = f"zero point {zp_name} ({what}): TensorRT quantizes symmetric INT8 only"
            out.append(_violation(node, "qdq-zero-point", reason, target))
    return out


def _resize_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    attrs = {k: _text(v) for k, v in _attrs(node).items()}
    bad = []
    if attrs.get("mode", "nearest") not in ts.RESIZE_MODES:
        bad.append(f"mode={attrs['mode']}")
    coord = attrs.get("coordinate_transformation_mode", "half_pixel")
    if coord not in ts.RESIZE_COORD_MODES:
        bad.append(f"coordinate_transformation_mode={coord}")
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if attrs.get("mode", "nearest") == "nearest" and nearest not in ts.RESIZE_NEAREST_MODES:
        bad.append(f"nearest_mode={nearest}")
    if attrs.get("antialias", 0):
        bad.append("antialias=1")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        bad.append(f"keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']}")
    return [_violation(node, "resize", f"unsupported {', '.join(bad)}", target)] if bad else []


def _pool_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    out = []
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        out.append(_violation(node, "pool", "the Indices output is not supported", target))
    dilations = _attrs(node).get("dilations")
    if target.key != "8.6" and dilations and any(d != 1 for d in dilations):
        out.append(_violation(node, "pool", f"dilations={list(dilations)} (must be 1)", target))
    return out


def _float_cast(g: _Graph, node: onnx.NodeProto | None) -> bool:
    if node is None or node.op_type != "Cast":
        return False
    return g.dtype(node.input[0]) in _FLOATS and _type_name(_attrs(node)["to"]) in _FLOATS


def _cast_rules(g: _Graph, node: onnx.NodeProto, target: ts.Target) -> list[Violation]:
    if not _float_cast(g, node):
        return []
    src = node.input[0]
    if _float_cast(g, g.producer.get(src)):
        reason = (
            f"Cast of the Cast {g.producer[src].name or src}: strongly typed, TensorRT runs both "
            "(a round trip or a chain); cast once, at the network's edges"
        )
        return [_violation(node, "cast-chain", reason, target)]
    if g.const(src) is not None:
        reason = f"Cast of the constant {src}: store it in the dtype it is used in"
        return [_violation(node, "cast-constant", reason, target)]
    return []


_NODE_RULES: dict[str, Callable[[_Graph, onnx.NodeProto, ts.Target], list[Violation]]] = {
    "Shape": _shape_rules,
    "TopK": _topk_rules,
    "NonMaxSuppression": _nms_rules,
    "ScatterND": _scatternd_rules,
    "QuantizeLinear": _qdq_rules,
    "DequantizeLinear": _qdq_rules,
    "Resize": _resize_rules,
    "MaxPool": _pool_rules,
    "AveragePool": _pool_rules,
    "Cast": _cast_rules,
}


# ---- graph rules -------------------------------------------------------------------------------


def _graph_rules(g: _Graph, target: ts.Target) -> list[Violation]:
    """``opset``, ``io-dtype`` and ``qdq-high-precision``: rules about the whole graph."""
    out = []
    if g.opset is not None and g.opset > target.max_opset:
        reason = (
            f"opset {g.opset} > {target.max_opset}, the newest this version documents; export "
            f"with --opset {target.max_opset} or lower"
        )
        out.append(_violation(None, "opset", reason, target, target.opset_source))
    for vi in (*g.graph.input, *g.graph.output):
        dtype = _type_name(vi.type.tensor_type.elem_type)
        if dtype == "DOUBLE" or (dtype == "INT64" and not target.int64):
            turned = "INT32" if dtype == "INT64" else "FP32"
            reason = f"graph {vi.name} is {dtype}: the engine binds it as {turned}"
            out.append(_violation(None, "io-dtype", reason, target))
    if _applies("qdq-high-precision", target):  # one message for the graph, not per node
        dq = [n for n in g.graph.node if n.op_type == "DequantizeLinear"]
        fp32 = [n for n in dq if len(n.input) > 1 and g.dtype(n.input[1]) == "FP32"]
        if fp32:
            more = f" (+{len(fp32) - 1} more)" if len(fp32) > 1 else ""
            reason = (
                f"{len(fp32)} of {len(dq)} DequantizeLinear dequantize to FP32: strongly typed, "
                "every layer outside the Q/DQ pairs runs in fp32; give the graph fp16 there"
            )
            v = _violation(fp32[0], "qdq-high-precision", reason, target)
            out.append(Violation(v.node + more, v.op, v.reason, v.version, v.source, v.rule))
    return out


def check_graph(
    model: onnx.ModelProto, targets: str | Sequence[str] = TRT_TARGETS
) -> list[Violation]:
    """Every way ``model`` breaks what TensorRT's ONNX parser accepts, for each of ``targets``.

    Args:
        model: the graph (``onnx.load(path)``); not modified.
        targets: keys of :data:`edgeyolo.runtime.trt_support.TARGETS` (``"8.6"``, ``"10.3"``,
            ``"10"``, ``"11"``) or a comma-separated string of them; default all four.

    Returns:
        The violations, target by target in ``targets`` order, nodes in graph order; empty when
        the graph conforms.

    Raises:
        ConfigError: an unknown target name.
    """
    keys = parse_trt_targets(targets if isinstance(targets, str) else tuple(targets))
    g = _Graph(model)
    out: list[Violation] = []
    for key in keys:
        target = ts.TARGETS[key]
        out += _graph_rules(g, target)
        for node in g.graph.node:
            out += _table_rules(g, node, target)
            rule = _NODE_RULES.get(node.op_type)
            if rule is not None and node.domain in ("", "ai.onnx"):
                out += rule(g, node, target)
    # which rule holds for which version is data (RULES[rule].targets), applied here once
    return [v for v in out if _applies(v.rule, ts.TARGETS[v.version])]


def format_violations(violations: Sequence[Violation], *, name: str = "the graph") -> str:
    """One readable message: each problem once (node, op, reason), with the TensorRT versions it
    applies to and its source."""
    grouped: dict[tuple[str, str, str], list[Violation]] = {}
    for v in violations:
        grouped.setdefault((v.node, v.op, v.reason), []).append(v)
    sources: dict[str, int] = {}
    lines = [
        f"{name} would not parse as written on TensorRT's ONNX parser "
        f"({len(grouped)} problem{'s' if len(grouped) != 1 else ''}):"
    ]
    for (node, op, reason), vs in grouped.items():
        versions = ", ".join(dict.fromkeys(v.version for v in vs))
        ref = sources.setdefault(vs[0].source, len(sources) + 1)
        lines.append(f"  - {node} ({op}), TensorRT {versions}: {reason} [{ref}]")
    lines += ["sources:", *(f"  [{i}] {s}" for s, i in sources.items())]
    return "\n".join(lines)


def require_conformance(
    model: onnx.ModelProto, targets: str | Sequence[str] = TRT_TARGETS, *, name: str = "the graph"
) -> None:
    """:func:`check_graph`, raising when anything is found.

    Raises:
        ExportError: every violation in one message (:func:`format_violations`), with what to do.
    """
    violations = check_graph(model, targets)
    if violations:
        raise ExportError(format_violations(violations, name=name) + "\n" + HINT)


# ---- the manifest's record of it ---------------------------------------------------------------


def manifest_targets(trt: Sequence[str] | None) -> list[str]:
    """The ``targets`` of a manifest entry: ``onnxruntime`` and ``tensorrt-<key>`` for each
    TensorRT target the graph was checked for; ``None``: ONNX Runtime only."""
    if not trt:
        return ["onnxruntime"]
    return ["onnxruntime", *(f"tensorrt-{t}" for t in parse_trt_targets(tuple(trt)))]


def tensorrt_targets(entry: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The TensorRT targets a manifest entry was checked for (``()``: none, a CPU-only graph);
    ``None`` when the entry records no targets (an export older than this check)."""
    targets = entry.get("targets")
    if targets is None:
        return None
    return tuple(t.removeprefix("tensorrt-") for t in targets if t.startswith("tensorrt-"))


def cpu_only_reason(entry: Mapping[str, Any]) -> str | None:
    """Why a manifest entry's graph must not go to TensorRT, or ``None`` when it may (or when the
    entry predates the record)."""
    if tensorrt_targets(entry) == ():
        return str(entry.get("targets_reason") or "the export marked it for ONNX Runtime only")
    return None
