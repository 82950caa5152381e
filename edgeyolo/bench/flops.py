"""FLOPs of an exported graph, counted from the ONNX file (no torch: the deploy side has none).

Counted as :func:`edgeyolo.models.info.count_flops` counts the PyTorch model (convolutions and
matrix products, a multiply-add as 2 FLOPs, no bias, no activation), from the shapes ONNX's shape
inference gives at batch 1: a ``Conv`` with output ``[1, C_out, H, W]`` and weight
``[C_out, C_in / groups, k_h, k_w]`` costs ``2 · C_out · H · W · C_in / groups · k_h · k_w``.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx

from edgeyolo.errors import ModelFileError

__all__ = ["graph_flops"]


def _dims(value: onnx.ValueInfoProto) -> list[int] | None:
    dims = value.type.tensor_type.shape.dim
    out = [d.dim_value for d in dims]
    return out if dims and all(v > 0 for v in out) else None


def graph_flops(path: str | Path) -> int:
    """FLOPs of one image through the ONNX graph at ``path`` (batch 1).

    Raises:
        ModelFileError: the file cannot be read, or a convolution's shapes cannot be inferred.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{path}: cannot read the ONNX graph: {e}") from e
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].dim_value <= 0:
            dims[0].Clear()
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: _dims(v) for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    shapes |= {t.name: list(t.dims) for t in inferred.initializer}
    total = 0
    for node in inferred.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
        if out is None or w is None:
            raise ModelFileError(
                f"cannot infer the shapes of {node.op_type} node {node.name!r} to count its FLOPs",
                file=path,
            )
        if node.op_type == "Conv":
            total += 2 * math.prod(out) * math.prod(w[1:])
        else:  # [.., M, K] x [K, N]: 2·M·K·N per output row block
            total += 2 * math.prod(out) * w[0]
    return total
