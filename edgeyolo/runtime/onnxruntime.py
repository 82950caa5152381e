"""ONNX Runtime session as a context manager (CPU by default; CUDA when asked and installed).

One graph has to mean the same thing on every onnxruntime the install allows (1.20 on; the
Jetson's cp310 wheels stop at 1.23.2). ONNX Runtime's CPU ``QuantizeLinear`` for a **float16**
input truncated ``x / scale`` toward zero before 1.30 (onnxruntime issues #18576 and #22741,
fixed by PR #32452; measured here: 1.20.1, 1.23.2 and 1.29.0 truncate, 1.30.0, 1.31.1 and 1.32.0
round to nearest even as ONNX specifies; the float32 kernel always rounded). The default int8
graph (``tensorrt`` placement, fp16 outside its Q/DQ pairs) quantizes fp16 activations, so on
those releases every activation lost up to one int8 step toward zero and its boxes drifted from
PyTorch's.

:func:`session_source` therefore hands every session a copy in which each fp16 Q/DQ pair
computes in float32 (:func:`round_fp16_quantize`; the file on disk is unchanged: TensorRT reads
it as written). It does so on *every* onnxruntime, not only where :func:`fp16_quantize_truncates`,
because ONNX Runtime's CPU has no fp16 Conv/LeakyRelu/MaxPool kernels and runs them in float32
between Casts that it then cancels (``RemoveDuplicateCastTransformer``): an fp16 Q/DQ kernel is a
rounding point to fp16, a float32 one is not, so rewriting on some versions only would make them
differ again. With the rewrite everywhere 1.20.1, 1.23.2 and 1.32.0 give the same head outputs
(measured), and the Q/DQ boundaries stay in float32 as TensorRT's fused int8 convolutions keep
them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeyolo.errors import ModelFileError, RuntimeBackendError

__all__ = [
    "OnnxRuntimeSession",
    "fp16_quantize_truncates",
    "round_fp16_quantize",
    "session_source",
]

CPU = "CPUExecutionProvider"


@functools.cache
def fp16_quantize_truncates() -> bool:
    """Whether this onnxruntime's CPU ``QuantizeLinear`` truncates float16 inputs toward zero
    instead of rounding them to nearest even (releases before 1.30; module docstring). Measured
    once per process on a one-node graph: ``[0.75, -0.75, 1.5, 2.5] / 1`` must give ``[1, -1, 2,
    2]``; truncation gives ``[0, 0, 1, 2]``."""
    x = np.array([0.75, -0.75, 1.5, 2.5], np.float16)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
        "fp16_quantize_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [4])],
        [
            numpy_helper.from_array(np.array(1.0, np.float16), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=[CPU])
    got = session.run(None, {"x": x})[0]
    return not np.array_equal(got, np.array([1, -1, 2, 2], np.int8))


def round_fp16_quantize(model: onnx.ModelProto) -> int:
    """Make every float16 ``QuantizeLinear`` of ``model``'s main graph, and the
    ``DequantizeLinear`` nodes reading it, compute in float32, in place; returns how many
    ``QuantizeLinear`` nodes were changed.

    The ``QuantizeLinear`` reads its input through a ``Cast`` to float32, its ``DequantizeLinear``
    writes through a ``Cast`` back to float16, and both take the scale (an initializer or
    ``Constant``) stored again as float32; zero points, ``axis`` and the int8 tensor between them
    stay. Exact: float16 → float32 loses nothing, ONNX's ``QuantizeLinear`` is ``round(x /
    scale)`` whatever the float type, and ``int8 x scale`` is exact in float32 (8 + 11 bits), so
    rounding it once to float16 is what a float16 ``DequantizeLinear`` gives; only a kernel that
    truncates (module docstring) computes anything different. The pair is changed together
    because onnxruntime 1.20's Q/DQ-pair checks (``DoubleQDQPairsRemover``) read both scales
    as one dtype: a float32 Q beside a float16 DQ fails the session at load.
    """
    g = model.graph
    scales = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            scales.setdefault(n.output[0], n.attribute[0].t)
    fp32_scales: dict[str, str] = {}

    def fp32_scale(node: onnx.NodeProto) -> bool:
        """Point ``node``'s scale at a float32 copy; False where it is not a float16 constant."""
        name = node.input[1]
        scale = scales.get(name)
        if scale is None or scale.data_type != TensorProto.FLOAT16:
            return False
        if name not in fp32_scales:
            fp32_scales[name] = f"{name}/fp32"
            value = numpy_helper.to_array(scale).astype(np.float32)
            g.initializer.append(numpy_helper.from_array(value, fp32_scales[name]))
        node.input[1] = fp32_scales[name]
        return True

    out: list[onnx.NodeProto] = []
    quantized: set[str] = set()
    for node in g.node:
        # x and y_scale share one float type (T1), so the scale's dtype is the input's.
        if node.op_type == "QuantizeLinear" and fp32_scale(node):
            cast = f"{node.name or node.output[0]}/fp32_input"
            out.append(helper.make_node("Cast", [node.input[0]], [cast], name=cast, to=1))
            node.input[0] = cast
            quantized.add(node.output[0])
            out.append(node)
        elif node.op_type == "DequantizeLinear" and node.input[0] in quantized and fp32_scale(node):
            wide = f"{node.output[0]}/fp32"
            fp16 = helper.make_node(
                "Cast", [wide], [node.output[0]], name=f"{node.name or wide}/fp16_output", to=10
            )
            node.output[0] = wide
            out += [node, fp16]
        else:
            out.append(node)
    if quantized:
        del g.node[:]
        g.node.extend(out)
    return len(quantized)


def session_source(model: str | Path | bytes) -> str | bytes:
    """What to hand ``onnxruntime.InferenceSession`` for ``model`` (a path or serialized bytes)
    so that it computes the same on every supported onnxruntime: the model itself, or, where the
    graph has a float16 ``QuantizeLinear``, the bytes of a copy with :func:`round_fp16_quantize`
    applied (module docstring)."""
    src = model if isinstance(model, bytes) else str(model)
    blob = src if isinstance(src, bytes) else Path(src).read_bytes()
    if b"QuantizeLinear" not in blob:  # op types are plain strings in the protobuf: no parse
        return src
    proto = onnx.load_from_string(blob) if isinstance(src, bytes) else onnx.load(src)
    if not round_fp16_quantize(proto):
        return src
    return proto.SerializeToString()


class OnnxRuntimeSession:
    """``with OnnxRuntimeSession(path) as s: outputs = s.run(images)``.

    Args:
        model: path of an ONNX file, or the serialized bytes of one.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores). Pin it when
            timing next to PyTorch in one process; they fight over cores otherwise.
        providers: execution providers, default ``["CPUExecutionProvider"]``.
        name: what error messages call the model (default: its path, or ``<bytes>``); give the
            file's path when ``model`` holds bytes derived from it.

    Raises:
        ModelFileError: (on entering) the file is missing, or ONNX Runtime cannot load it.
        RuntimeBackendError: (from :meth:`run`) ONNX Runtime failed on the given images.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str | None = None,
    ) -> None:
        self.model = model
        if name is None:
            name = "<bytes>" if isinstance(model, bytes) else str(model)
        self.name = name
        self.threads = threads
        self.providers = list(providers)
        self._session = None

    def __enter__(self) -> OnnxRuntimeSession:

        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        name = self.name
        if not isinstance(self.model, bytes) and not Path(self.model).is_file():
            raise ModelFileError(f"{name}: no such ONNX file; run `edgeyolo export` first")
        try:
            src = session_source(self.model)
            self._session = ort.InferenceSession(src, opts, providers=self.providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise ModelFileError(
                f"{name}: ONNX Runtime cannot load this graph ({_first_line(e)}); the file is "
                "damaged or not an ONNX model: copy it again, or export it again with "
                "`edgeyolo export`"
            ) from e
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._session = None

    @property
    def session(self):  # -> onnxruntime.InferenceSession
        if self._session is None:
            raise RuntimeError("use OnnxRuntimeSession as a context manager (with ... as s)")
        return self._session

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run on ``images`` (``float32[B, 3, H, W]``); returns every output by name.

        Raises:
            RuntimeBackendError: ONNX Runtime failed (e.g. a shape the graph does not take).
        """
        x = np.ascontiguousarray(images, np.float32)
        session = self.session
        try:
            outs = session.run(None, {self.input_name: x})
        except Exception as e:  # ORT's Fail/InvalidArgument/RuntimeException types
            want = session.get_inputs()[0].shape
            raise RuntimeBackendError(
                f"{self.name}: ONNX Runtime failed on images of shape {list(x.shape)} (the graph "
                f"takes {want}): {_first_line(e)}"
            ) from e
        return dict(zip(self.output_names, outs, strict=True))


def _first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message, or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
