"""fp16 inside the network, one ``Cast`` at each of its edges: the graph TensorRT should run.

Strongly typed TensorRT (the only mode in TensorRT 11) takes every tensor's dtype from the graph
and executes each ``Cast`` as written. ONNX Runtime's ``convert_float_to_float16`` with a block
list casts around every blocked node (137 ``Cast`` nodes in yolov3-tiny's graph with ORT 1.32;
in ORT 1.30 and older it also reuses one output name for each consumer of a tensor, so that
``onnx.checker`` rejects the graph: "Graph must be in single static assignment (SSA) form").

:func:`convert_region_to_fp16` does it with onnx's own helpers instead. The *region* is every node
whose name starts with the network prefix, plus every node those depend on (weights' Q/DQ,
helper ``Slice`` nodes onnxsim renamed, ...). Inside it, each float input or output whose ONNX
type constraint admits ``tensor(float16)`` becomes fp16; an input the schema fixes to
``tensor(float)`` (``Resize``'s ``scales``) stays fp32. A tensor crossing from one dtype to the
other gets exactly one ``Cast`` however many nodes read it: the graph input once into fp16, each
network output (the raw head maps) once back to fp32, before the decode + NMS tail, which stays
fp32. Nodes keep their names and the tensors inside the region keep theirs.

Q/DQ graphs (int8 with fp16 outside the Q/DQ pairs, as NVIDIA's ModelOpt writes with
``high_precision_dtype=fp16``) need opset 19, where ``QuantizeLinear``/``DequantizeLinear``
first take fp16 inputs and scales; at opset 17 the schemas keep them in fp32 and the region would
need a pair of casts around every Q/DQ (see :func:`edgeyolo.export.quantize.quantize_int8`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edgeyolo.errors import ExportError

__all__ = ["FP16_MAX", "Fp16Report", "convert_region_to_fp16", "edge_casts", "region_nodes"]

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
#: Largest finite fp16 value: a weight or constant beyond it cannot be stored in fp16.
FP16_MAX = float(np.finfo(np.float16).max)
_TINY = np.float16(np.finfo(np.float16).smallest_subnormal)
_SUFFIX = {HALF: "fp16", FLOAT: "fp32"}
#: Ops whose output dtype comes from an attribute, not from a type constraint on an input.
_ATTR_TYPED = ("Constant", "ConstantOfShape", "Cast")


@dataclass(frozen=True)
class Fp16Report:
    """What :func:`convert_region_to_fp16` did: the nodes in fp16 territory, the ``Cast`` nodes it
    added (``(name, to)``, ``to`` an ONNX dtype), and the weight scales it moved to fp16 whose int8
    values had to be re-rounded (a scale below fp16's normal range)."""

    region: int
    casts: tuple[tuple[str, int], ...]
    requantized: tuple[str, ...] = ()


def region_nodes(graph: onnx.GraphProto, prefix: str) -> set[int]:
    """Indices of the nodes named ``prefix...`` and of every node they depend on."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    stack = [i for i, n in enumerate(graph.node) if n.name.startswith(prefix)]
    seen = set(stack)
    while stack:
        for t in graph.node[stack.pop()].input:
            j = producer.get(t)
            if j is not None and j not in seen:
                seen.add(j)
                stack.append(j)
    return seen


def edge_casts(model: onnx.ModelProto, prefix: str) -> list[str]:
    """Names of the ``Cast`` nodes of ``model`` that are not in the tail, i.e. that are in the
    region of ``prefix`` or feed it or are fed by it (what strongly typed TensorRT executes
    besides the tail's own casts)."""
    region = region_nodes(model.graph, prefix)
    inside = {o for i in region for o in model.graph.node[i].output}
    return [
        n.name
        for i, n in enumerate(model.graph.node)
        if n.op_type == "Cast" and (i in region or n.input[0] in inside)
    ]


def _schema(node: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError as e:
        raise ExportError(f"node {node.name!r}: no ONNX schema for {node.op_type}") from e


def _admits_half(schema: onnx.defs.OpSchema, params: list, index: int) -> bool:
    """Whether input/output ``index`` (formal ``params``, variadic last) may be fp16."""
    if not params:
        return False
    formal = params[min(index, len(params) - 1)]
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return "tensor(float16)" in allowed.get(formal.type_str, [formal.type_str])


def _wanted(node: onnx.NodeProto, opset: int, types: dict[str, int]):
    """``(input dtypes, output dtypes)`` the region wants for ``node``: ``HALF`` at each float
    position the schema admits fp16, ``FLOAT`` at the other float ones, ``None`` elsewhere."""
    schema = _schema(node, opset)

    def pick(names: Iterable[str], params: list) -> list[int | None]:
        out: list[int | None] = []
        for i, t in enumerate(names):
            if not t or types.get(t) != FLOAT:
                out.append(None)
            else:
                out.append(HALF if _admits_half(schema, params, i) else FLOAT)
        return out

    ins = pick(node.input, list(schema.inputs))
    outs = pick(node.output, list(schema.outputs))
    if node.op_type == "Cast":  # a cast to float inside the region becomes a cast to fp16
        outs = [HALF if types.get(node.output[0]) == FLOAT else None]
    return ins, outs


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (ONNX shape inference; ``ExportError`` if it fails)."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # onnx raises InferenceError / ValidationError
        raise ExportError(f"ONNX shape inference failed before the fp16 pass: {e}") from e
    g = inferred.graph
    types = {i.name: i.data_type for i in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        types[v.name] = v.type.tensor_type.elem_type
    return types


def _to_half(array: np.ndarray, what: str) -> np.ndarray:
    if array.size and float(np.nanmax(np.abs(array))) > FP16_MAX:
        raise ExportError(
            f"{what} holds values beyond fp16's range (|x| > {FP16_MAX:g}); "
            "export without --fp16 (or keep this part in fp32)"
        )
    return array.astype(np.float16)


class _Rewriter:
    """The bookkeeping of one conversion: which dtype each tensor ends up with, and the casts."""

    def __init__(self, model: onnx.ModelProto, prefix: str) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.types = _tensor_types(model)
        self.region = region_nodes(self.graph, prefix)
        if not self.region:
            raise ExportError(f"no node named {prefix}... in the graph: nothing to convert to fp16")
        self.names = {t for n in self.graph.node for t in [*n.input, *n.output]}
        self.names |= {i.name for i in [*self.graph.input, *self.graph.initializer]}
        self.casts: dict[tuple[str, int], onnx.NodeProto] = {}

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def cast(self, tensor: str, to: int) -> str:
        """The name of ``tensor`` cast to ``to`` (one Cast node per tensor and dtype)."""
        key = (tensor, to)
        if key not in self.casts:
            out = self.unique(f"{tensor}_{_SUFFIX[to]}")
            self.casts[key] = helper.make_node(
                "Cast", [tensor], [out], to=to, name=self.unique(f"to_{_SUFFIX[to]}/{tensor}")
            )
        return self.casts[key].output[0]

    def plan(self) -> tuple[dict[str, int], dict[str, set[int]]]:
        """``(produced, needed)``: the dtype each region node's float outputs will have, and the
        dtypes each float tensor is read as (region inputs as they want, the rest as fp32)."""
        produced: dict[str, int] = {}
        needed: dict[str, set[int]] = {}
        self.wants: list[list[int | None]] = []
        for i, node in enumerate(self.graph.node):
            if i in self.region:
                ins, outs = _wanted(node, self.opset, self.types)
                if node.op_type != "Constant":  # a constant takes the dtype its readers want
                    produced.update((t, d) for t, d in zip(node.output, outs, strict=True) if d)
            else:
                ins = [FLOAT if self.types.get(t) == FLOAT else None for t in node.input]
            self.wants.append(ins)
            for t, d in zip(node.input, ins, strict=True):
                if d:
                    needed.setdefault(t, set()).add(d)
        for o in self.graph.output:
            if self.types.get(o.name) == FLOAT:
                needed.setdefault(o.name, set()).add(FLOAT)
        return produced, needed


def _half_scales(
    graph: onnx.GraphProto, region: set[int], inits: dict[str, onnx.TensorProto]
) -> dict[str, np.ndarray]:
    """fp16 values for the Q/DQ scales of the region, and the int8 weights re-rounded to them.

    A scale is kept positive (a scale under fp16's smallest subnormal would round to 0, which
    TensorRT rejects). A weight's scale below fp16's normal range loses relative precision, so
    its int8 values are re-rounded to ``round(q * s32 / s16)``: for normal-range scales
    ``|s32/s16 - 1| < 2**-11`` and ``|q| <= 127`` leave every ``q`` as it was.
    """
    out: dict[str, np.ndarray] = {}
    for i in sorted(region):
        node = graph.node[i]
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.input[1] not in inits:
            continue
        s32 = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        s16 = np.maximum(_to_half(s32, f"scale {node.input[1]}"), _TINY)
        out[node.input[1]] = s16
        x = node.input[0]
        if node.op_type == "DequantizeLinear" and x in inits:
            q = numpy_helper.to_array(inits[x])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if s32.ndim == 1 and q.ndim:
                shape[axis % q.ndim] = -1
            ratio = (s32 / s16.astype(np.float32)).reshape(shape) if s32.ndim else s32 / s16
            info = np.iinfo(q.dtype)
            q2 = np.clip(np.rint(q * ratio), info.min, info.max).astype(q.dtype)
            if not np.array_equal(q, q2):
                out[x] = q2
    return out


def _convert_data(rw: _Rewriter, produced: dict[str, int]) -> tuple[str, ...]:
    """Store in fp16 every initializer and region constant that became fp16, set region casts
    and ``ConstantOfShape`` values to fp16; returns the int8 weights that were re-rounded."""
    g = rw.graph
    inits = {i.name: i for i in g.initializer}
    scales = _half_scales(g, rw.region, inits)
    requantized = []
    for name, init in inits.items():
        if name in scales and init.data_type != FLOAT:  # re-rounded int8 weights
            init.CopyFrom(numpy_helper.from_array(scales[name], name))
            requantized.append(name)
        elif produced.get(name) == HALF:
            value = scales.get(name)
            if value is None:
                value = _to_half(numpy_helper.to_array(init), f"initializer {name}")
            init.CopyFrom(numpy_helper.from_array(value, name))
    for i in sorted(rw.region):
        node = g.node[i]
        if not node.output or produced.get(node.output[0]) != HALF:
            continue
        if node.op_type == "Cast":
            node.attribute[:] = [helper.make_attribute("to", HALF)]
        elif node.op_type in ("Constant", "ConstantOfShape"):
            attr = next((a for a in node.attribute if a.name == "value"), None)
            value = numpy_helper.to_array(attr.t) if attr else np.zeros(1, np.float32)
            half = numpy_helper.from_array(_to_half(value, f"constant {node.name}"))
            node.attribute[:] = [helper.make_attribute("value", half)]
    return tuple(requantized)


def _rename_half_outputs(rw: _Rewriter, produced: dict[str, int]) -> None:
    """A graph output the region makes in fp16 keeps its name and dtype: the region writes
    ``<name>_fp16`` and one Cast writes ``<name>`` in fp32."""
    for o in rw.graph.output:
        t = o.name
        if produced.get(t) != HALF:
            continue
        t16 = rw.unique(f"{t}_fp16")
        for i in rw.region:
            node = rw.graph.node[i]
            node.output[:] = [t16 if x == t else x for x in node.output]
            node.input[:] = [t16 if x == t else x for x in node.input]
        produced[t16] = HALF
        del produced[t]
        rw.casts[(t16, FLOAT)] = helper.make_node(
            "Cast", [t16], [t], to=FLOAT, name=rw.unique(f"to_fp32/{t}")
        )


def _rewire(rw: _Rewriter, produced: dict[str, int]) -> None:
    """Point every input that reads a tensor in the other dtype at its one Cast (an initializer
    read in both dtypes gets an fp16 copy instead of a Cast)."""
    g = rw.graph
    inits = {i.name: i for i in g.initializer}
    copies: dict[str, str] = {}
    for node, wants in zip(g.node, rw.wants, strict=True):
        for j, (t, want) in enumerate(zip(node.input, wants, strict=True)):
            have = produced.get(t, rw.types.get(t))
            if not want or have == want:
                continue
            if t in inits and want == HALF:
                if t not in copies:
                    copies[t] = rw.unique(f"{t}_fp16")
                    half = _to_half(numpy_helper.to_array(inits[t]), f"initializer {t}")
                    g.initializer.append(numpy_helper.from_array(half, copies[t]))
                node.input[j] = copies[t]
            else:
                node.input[j] = rw.cast(t, want)


def _place_casts(rw: _Rewriter) -> None:
    """Put each Cast right after the node that makes its input (first, for a graph input)."""
    after: dict[str, list[onnx.NodeProto]] = {}
    for node in rw.casts.values():
        after.setdefault(node.input[0], []).append(node)
    nodes = [c for i in rw.graph.input for c in after.pop(i.name, [])]
    for node in rw.graph.node:
        nodes.append(node)
        nodes += [c for o in node.output for c in after.pop(o, [])]
    if after:
        raise ExportError(f"fp16 pass: no producer for {sorted(after)}")
    del rw.graph.node[:]
    rw.graph.node.extend(nodes)


def convert_region_to_fp16(
    model: onnx.ModelProto, prefix: str
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A copy of ``model`` with the region of ``prefix`` (module docstring) in fp16.

    Graph inputs and outputs keep their names and dtypes; nodes keep their names; each tensor
    that crosses between fp32 and fp16 gets one ``Cast`` (named ``to_fp16/<tensor>`` or
    ``to_fp32/<tensor>``). Weights, biases, constants and Q/DQ scales of the region are stored
    in fp16.

    Raises:
        ExportError: no node is named ``prefix...``; a weight or constant does not fit in fp16;
            or the result fails ONNX's type check (the message says where).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rw = _Rewriter(out, prefix)
    produced, needed = rw.plan()
    float_sources = {i.name for i in out.graph.initializer if i.data_type == FLOAT}
    nodes = out.graph.node
    float_sources |= {nodes[i].output[0] for i in rw.region if nodes[i].op_type == "Constant"}
    for t, wants in needed.items():  # constants and weights follow their readers
        if t in float_sources and t not in produced and wants == {HALF}:
            produced[t] = HALF
    requantized = _convert_data(rw, produced)
    _rename_half_outputs(rw, produced)
    _rewire(rw, produced)
    _place_casts(rw)
    del out.graph.value_info[:]
    try:
        checked = shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    except Exception as e:  # onnx raises InferenceError / ValidationError
        raise ExportError(f"the fp16 graph fails ONNX's type check: {e}") from e
    report = Fp16Report(
        region=len(rw.region),
        casts=tuple((c.name, c.attribute[0].i) for c in rw.casts.values()),
        requantized=requantized,
    )
    return checked, report
