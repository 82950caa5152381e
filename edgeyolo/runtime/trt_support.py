"""What TensorRT's ONNX parser accepts, as data: per target version, op types, dtypes and limits.

TensorRT cannot be installed here, so this table is what stands in for its parser: every exported
graph is checked against it (:mod:`edgeyolo.runtime.conformance`). Each fact cites where it was
read; a fact that could not be confirmed for a version says so. The four targets:

=======  =====================================================================================
key      what it stands for
=======  =====================================================================================
``8.6``  TensorRT 8.6.1, the oldest version edgeyolo builds and runs engines with
``10.3`` TensorRT 10.3, the version JetPack 6.1 and 6.2 ship (Jetson Orin)
``10``   current TensorRT 10.x (10.15 / 10.16, the newest 10.x releases)
``11``   TensorRT 11.x (11.0 to 11.4; strongly typed networks only)
=======  =====================================================================================

The op tables are onnx-tensorrt's ``docs/operators.md`` transcribed for the ops edgeyolo's graphs
use and the common ones; columns: op, ``Y``/``N``, the dtypes of the op's data input, the inputs
that must be constants (initializers or ``Constant`` outputs), and the file's restriction text.
Where a restriction is only in the importer source (not in ``operators.md``), the ``const``
column cites it in :data:`EXTRA_NOTES`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from edgeyolo.config import TRT_TARGETS

__all__ = [
    "EXTRA_NOTES",
    "NMS_MAX_CANDIDATES",
    "NMS_MAX_CANDIDATES_SM53_62",
    "RESIZE_COORD_MODES",
    "RESIZE_MODES",
    "RESIZE_NEAREST_MODES",
    "RULES",
    "SOURCES",
    "TARGETS",
    "TOPK_MAX_K",
    "OpRow",
    "Rule",
    "Target",
    "op_table",
]

#: Where each fact was read. Branches and tags of github.com/onnx/onnx-tensorrt and
#: github.com/NVIDIA/TensorRT, commits abbreviated.
SOURCES: dict[str, str] = {
    "ops-8.6": "onnx/onnx-tensorrt docs/operators.md @ release/8.6-GA (6ba67d3)",
    "ops-10.1": (
        "onnx/onnx-tensorrt docs/operators.md @ release/10.1-GA (96e7811); 10.3's own copy was "
        "not available, the 10.2 and 10.3 entries of docs/Changelog.md are applied on top"
    ),
    "ops-10.15": (
        "onnx/onnx-tensorrt docs/operators.md of TensorRT 10.15 (2026-02); no 11.x copy was "
        "available: the 11 rows assume 10.15's table (NVIDIA/TensorRT CHANGELOG.md 11.0/11.1 "
        "list no ONNX op removed) -- not confirmed for 11.x"
    ),
    "importers-8.6": "onnx/onnx-tensorrt builtin_op_importers.cpp @ release/8.6-GA (6ba67d3)",
    "importers-10": (
        "onnx/onnx-tensorrt onnxOpImporters.cpp @ release/10.1-GA (96e7811) and the stored "
        "10.3+ copy (0137504e)"
    ),
    "utils-8.6": "onnx/onnx-tensorrt onnx2trt_utils.cpp @ release/8.6-GA (convertDtype)",
    "model-importer": "onnx/onnx-tensorrt ModelImporter.cpp @ release/8.6-GA, release/10.1-GA",
    "changelog": "onnx/onnx-tensorrt docs/Changelog.md (as of TensorRT 10.15, 2026-02-02)",
    "nvinfer": "NVIDIA/TensorRT include/NvInfer.h @ v8.6.1, v10.3.0, v10.16, v11.1",
    "trt-changelog": "NVIDIA/TensorRT CHANGELOG.md @ v11.1; GitHub release notes v11.5",
    "rn-11": (
        "TensorRT 11.0.0 release notes and the 10.x-to-11.x migration guide "
        "(docs.nvidia.com/deeplearning/tensorrt/11.0.0/getting-started/release-notes-11/"
        "11.0.0.html)"
    ),
    "int32-dq": (
        "https://github.com/onnx/onnx-tensorrt/issues/850, "
        "https://github.com/NVIDIA/TensorRT/issues/3360 ('only activation types allowed as "
        "input to this layer')"
    ),
    "jetpack4": (
        "JetPack 4.6.x (the last for Jetson Nano/TX2, SM 5.3/6.2) ships TensorRT 8.2.1: "
        "secondary sources only (JetPack version tables), not NVIDIA's own page"
    ),
}


@dataclass(frozen=True)
class Target:
    """One TensorRT version the graphs are checked for.

    Args:
        key: the name used by ``--trt`` (``8.6``, ``10.3``, ``10``, ``11``).
        label: what it stands for, for messages.
        version: a representative version; rules that a later release fixed compare with it.
        max_opset: the highest default-domain opset the version documents.
        opset_source: where :attr:`max_opset` was read.
        int64: INT64 tensors are native (else the parser casts them down to INT32).
        strongly_typed_only: weak typing (builder flags FP16/INT8) does not exist.
        table: which op table (:func:`op_table`) describes it.
    """

    key: str
    label: str
    version: tuple[int, ...]
    max_opset: int
    opset_source: str
    int64: bool
    strongly_typed_only: bool
    table: str


TARGETS: dict[str, Target] = {
    "8.6": Target(
        key="8.6",
        label="TensorRT 8.6",
        version=(8, 6, 1),
        max_opset=17,
        opset_source=f"'supports operators up to Opset 17': {SOURCES['ops-8.6']}",
        int64=False,
        strongly_typed_only=False,
        table="8.6",
    ),
    "10.3": Target(
        key="10.3",
        label="TensorRT 10.3 (JetPack 6.1/6.2)",
        version=(10, 3),
        max_opset=20,
        opset_source=(
            f"'opset 9 to opset 20': {SOURCES['ops-10.1']}; not confirmed for 10.3 itself (its "
            "operators.md was not available; no Changelog entry for 10.2/10.3 raises it)"
        ),
        int64=True,
        strongly_typed_only=False,
        table="10.3",
    ),
    "10": Target(
        key="10",
        label="TensorRT 10.x (10.15/10.16)",
        version=(10, 16),
        max_opset=24,
        opset_source=f"'opset 9 to opset 24': {SOURCES['ops-10.15']}",
        int64=True,
        strongly_typed_only=False,
        table="10",
    ),
    "11": Target(
        key="11",
        label="TensorRT 11.x",
        version=(11, 0),
        max_opset=24,
        opset_source=(
            f"24 as in 10.15 ({SOURCES['ops-10.15']}); TensorRT 11.5 'Added support for ONNX "
            f"opset 25' ({SOURCES['trt-changelog']}), so 11.0-11.4 stop at 24"
        ),
        int64=True,
        strongly_typed_only=True,
        table="11",
    ),
}

#: ``ITopKLayer``: "Currently only values of K up to 3840 are supported" and "Values larger than
#: 3840 will result in a runtime error" (NvInfer.h, every target). operators.md 10.x words it
#: "`K` input must be less than 3840"; the header, the layer's own contract, is followed here.
TOPK_MAX_K = 3840
#: ``INMSLayer``: "only the K highest scoring boxes in each batch item will be considered for
#: selection. The value of K is 2000 for SM 5.3 and 6.2 devices, and 5000 otherwise" (NvInfer.h).
NMS_MAX_CANDIDATES = 5000
#: SM 5.3 / 6.2 are the Jetson Nano and TX2, whose last JetPack (4.6) ships TensorRT 8.2: below
#: every target here, so the 5000 limit is the one that applies (see SOURCES["jetpack4"]).
NMS_MAX_CANDIDATES_SM53_62 = 2000
#: Resize as operators.md states it (8.6-GA, 10.1-GA, 10.15 alike).
RESIZE_MODES = ("nearest", "linear")
RESIZE_COORD_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
)
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


@dataclass(frozen=True)
class Rule:
    """One check of :mod:`edgeyolo.runtime.conformance`: what it enforces, for which targets,
    and where the fact comes from."""

    title: str
    targets: tuple[str, ...]
    source: str
    note: str = ""


_ALL = TRT_TARGETS
_SINCE_10 = ("10.3", "10", "11")

RULES: dict[str, Rule] = {
    "opset": Rule(
        "the default-domain opset is at most the target's documented maximum (the parser does "
        "not refuse a newer one: it imports it with the older opset's meaning; ModelImporter "
        "only rejects opset < 7)",
        _ALL,
        f"Target.opset_source; {SOURCES['model-importer']}",
    ),
    "domain": Rule(
        "every node is an ONNX op (default domain): another domain's op is imported as a plugin "
        "('No importer registered for op ... Attempting to import as plugin')",
        _ALL,
        SOURCES["model-importer"],
    ),
    "io-dtype": Rule(
        "graph inputs and outputs have types an engine binds as written: 8.6 turns INT64 into "
        "INT32 bindings and DOUBLE into FLOAT",
        _ALL,
        f"{SOURCES['utils-8.6']}; {SOURCES['changelog']} (9.0 EA: 'prior to this release, such "
        "models required INT32 bindings')",
    ),
    "op-support": Rule(
        "the op is in the target's table and marked Y",
        _ALL,
        "op tables (SOURCES ops-*)",
        "an op missing from edgeyolo's table is reported too: add its row from operators.md",
    ),
    "op-dtype": Rule(
        "the op's data input has a dtype its row lists (8.6: INT64 read as INT32, DOUBLE as "
        "FP32, as the parser casts them down)",
        _ALL,
        "op tables (SOURCES ops-*)",
    ),
    "const-input": Rule(
        "inputs the table says must be initializers (axes, K ...) are initializers or Constant "
        "outputs",
        _ALL,
        "op tables; importers-8.6 for Reduce* axes ('Axis input must be an initializer!')",
    ),
    "shape-start-end": Rule(
        "Shape has no start/end attributes: 8.6's Shape importer reads no attribute, so it "
        "returns the whole shape",
        ("8.6",),
        f"{SOURCES['importers-8.6']} (DEFINE_BUILTIN_OP_IMPORTER(Shape)); 10.x slices: "
        f"{SOURCES['importers-10']}",
    ),
    "topk-k": Rule(
        f"TopK's K is a constant, or bounded by one (Min with a constant), <= {TOPK_MAX_K}",
        _ALL,
        f"{SOURCES['nvinfer']} (ITopKLayer::setK, setInput); operators.md 10.x: 'K input must "
        "be less than 3840'",
    ),
    "topk-sorted": Rule(
        "TopK's sorted attribute is 1 (the default)",
        _SINCE_10,
        f"{SOURCES['ops-10.1']}; {SOURCES['ops-10.15']}",
    ),
    "nms-candidates": Rule(
        f"NonMaxSuppression gets at most {NMS_MAX_CANDIDATES} boxes per image (a static box "
        "dimension): TensorRT's NMS layer considers only that many of the highest-scoring ones "
        f"({NMS_MAX_CANDIDATES_SM53_62} on SM 5.3/6.2), ONNX Runtime all of them",
        _ALL,
        f"{SOURCES['nvinfer']} (INMSLayer); {SOURCES['jetpack4']}",
        "counted as boxes (dim 1 of `boxes`): NvInfer.h does not say whether a box of several "
        "classes counts once or per class -- not confirmed",
    ),
    "nms-rank": Rule(
        "NonMaxSuppression's boxes and scores are 3-D",
        _ALL,
        f"{SOURCES['importers-8.6']} ('The boxes tensor must be 3D'); {SOURCES['importers-10']}",
    ),
    "scatternd-reduction": Rule(
        "ScatterND has no reduction: 8.6 ignores the attribute (computes 'none' whatever it "
        "says), 10.0-10.8 reject it even when it is 'none', later 10.x/11 reject all but 'none'",
        _ALL,
        f"{SOURCES['importers-8.6']}; {SOURCES['importers-10']} ('Attribute reduction is not "
        f"supported.'); {SOURCES['ops-10.15']}",
    ),
    "scatternd-opset18": Rule(
        "ScatterND in a graph of opset 18 or newer needs TensorRT 10.9 ('Fixed support for "
        "opset 18+ ScatterND')",
        ("10.3",),
        f"{SOURCES['changelog']} (10.9 GA); what failed before 10.9 is not stated there",
    ),
    "qdq-zero-point": Rule(
        "Q/DQ zero points are initializers of INT8 zeros (symmetric quantization only)",
        _ALL,
        f"{SOURCES['importers-8.6']} ('TensorRT only supports symmetric quantization'); "
        f"operators.md (all): 'x_zero_point must be zero'; {SOURCES['importers-10']} (UINT8 "
        "zero points are read as INT8)",
    ),
    "qdq-scale": Rule(
        "Q/DQ scales are positive",
        _ALL,
        f"{SOURCES['importers-8.6']}; {SOURCES['importers-10']} ('Scale coefficients must all "
        "be positive')",
    ),
    "qdq-scale-dtype": Rule(
        "8.6 reads Q/DQ scales as FP32 (its importer casts the scale weights to float*): an "
        "FP16 scale, as a graph dequantizing to fp16 has, is misread",
        ("8.6",),
        f"{SOURCES['importers-8.6']} (QuantDequantLinearHelper: 'static_cast<float const*>"
        f"(scale.values)'); 10.x reads FP32, FP16 and BF16 scales: {SOURCES['importers-10']}",
    ),
    "qdq-inputs": Rule(
        "8.6's INT8 QuantizeLinear/DequantizeLinear need all 3 inputs (zero point included)",
        ("8.6",),
        f"{SOURCES['importers-8.6']} ('This version of TensorRT requires 3 inputs for the INT8 "
        "QuantizeLinear/DequantizeLinear operator')",
    ),
    "resize": Rule(
        "Resize uses a supported mode, coordinate transformation and nearest mode; no "
        "antialias; keep_aspect_ratio_policy stretch",
        _ALL,
        f"{SOURCES['ops-8.6']}; {SOURCES['ops-10.1']}; {SOURCES['ops-10.15']}",
    ),
    "pool": Rule(
        "MaxPool has no Indices output; pooling dilations are empty or all ones (10.x)",
        _ALL,
        f"{SOURCES['ops-8.6']}; {SOURCES['ops-10.1']}; {SOURCES['ops-10.15']}",
        "dilations: documented from 10.x only, not checked for 8.6",
    ),
    "cast-chain": Rule(
        "no float-to-float Cast of another float-to-float Cast's output: a strongly typed "
        "network runs every Cast as written",
        ("11",),
        SOURCES["rn-11"],
    ),
    "cast-constant": Rule(
        "no float-to-float Cast of a constant: store it in the dtype it is used in",
        ("11",),
        SOURCES["rn-11"],
    ),
    "qdq-high-precision": Rule(
        "an int8 (Q/DQ) graph dequantizes to fp16 (ModelOpt's high_precision_dtype=fp16): "
        "strongly typed, every layer outside the Q/DQ pairs runs in the dtype the graph gives it",
        ("11",),
        SOURCES["rn-11"],
    ),
}


@dataclass(frozen=True)
class OpRow:
    """One row of an op table: ``supported`` (``Y``), the data input's ``types``, the ``const``
    input indices that must be constants, the restriction ``note`` and the row's ``source``."""

    op: str
    supported: bool
    types: frozenset[str] = field(default_factory=frozenset)
    const: tuple[int, ...] = ()
    note: str = ""
    source: str = ""


#: Extra text for an op's dtype violation, for every target.
EXTRA_NOTES: dict[str, str] = {
    "DequantizeLinear": (
        "an INT32 input (ONNX Runtime's quantized conv bias) is rejected: 'only activation "
        f"types allowed as input to this layer' ({SOURCES['int32-dq']})"
    ),
}

# Columns: op | Y/N | data-input dtypes | const input indices | restriction (operators.md).
# 8.6: "INT64 ... cast down to INT32" (limited support), so the INT32 rows cover int64 tensors.
_TABLE_86 = """
Abs | Y | FP32 FP16 INT32 | |
Add | Y | FP32 FP16 INT32 | |
And | Y | BOOL | |
ArgMax | Y | FP32 FP16 INT32 | |
AveragePool | Y | FP32 FP16 INT8 INT32 | | 2D or 3D Pooling only
BatchNormalization | Y | FP32 FP16 | |
Cast | Y | FP32 FP16 INT32 INT8 UINT8 BOOL | |
Ceil | Y | FP32 FP16 | |
Clip | Y | FP32 FP16 INT8 | |
Concat | Y | FP32 FP16 INT32 INT8 BOOL | |
Constant | Y | FP32 FP16 INT32 INT8 BOOL | |
ConstantOfShape | Y | FP32 | |
Conv | Y | FP32 FP16 INT8 | |
ConvTranspose | Y | FP32 FP16 INT8 | |
CumSum | Y | FP32 FP16 | 1 | `axis` must be an initializer
DequantizeLinear | Y | INT8 | | `x_zero_point` must be zero
Div | Y | FP32 FP16 INT32 | |
Dropout | Y | FP32 FP16 | |
Einsum | Y | FP32 FP16 | | Ellipsis and diagonal operations are not supported
Equal | Y | FP32 FP16 INT32 | |
Erf | Y | FP32 FP16 | |
Exp | Y | FP32 FP16 | |
Expand | Y | FP32 FP16 INT32 BOOL | |
Flatten | Y | FP32 FP16 INT32 BOOL | |
Floor | Y | FP32 FP16 | |
Gather | Y | FP32 FP16 INT8 INT32 BOOL | |
GatherElements | Y | FP32 FP16 INT8 INT32 BOOL | |
GatherND | Y | FP32 FP16 INT8 INT32 BOOL | |
Gemm | Y | FP32 FP16 INT8 | |
GlobalAveragePool | Y | FP32 FP16 INT8 | |
GlobalMaxPool | Y | FP32 FP16 INT8 | |
Greater | Y | FP32 FP16 INT32 | |
GreaterOrEqual | Y | FP32 FP16 INT32 | |
HardSigmoid | Y | FP32 FP16 INT8 | |
HardSwish | Y | FP32 FP16 INT8 | |
Identity | Y | FP32 FP16 INT32 INT8 BOOL | |
If | Y | FP32 FP16 INT32 BOOL | |
InstanceNormalization | Y | FP32 FP16 | |
LayerNormalization | Y | FP32 FP16 | |
LeakyRelu | Y | FP32 FP16 INT8 | |
Less | Y | FP32 FP16 INT32 | |
LessOrEqual | Y | FP32 FP16 INT32 | |
Log | Y | FP32 FP16 | |
Loop | Y | FP32 FP16 INT32 BOOL | |
MatMul | Y | FP32 FP16 | |
Max | Y | FP32 FP16 INT32 | |
MaxPool | Y | FP32 FP16 INT8 | | 2D or 3D pooling only. `Indices` output tensor unsupported
Min | Y | FP32 FP16 INT32 | |
Mod | Y | FP32 FP16 INT32 | |
Mul | Y | FP32 FP16 INT32 | |
Neg | Y | FP32 FP16 INT32 | |
NonMaxSuppression | Y | FP32 FP16 | |
NonZero | Y | FP32 FP16 | |
Not | Y | BOOL | |
Or | Y | BOOL | |
Pad | Y | FP32 FP16 INT8 INT32 | |
Pow | Y | FP32 FP16 | |
PRelu | Y | FP32 FP16 INT8 | |
QuantizeLinear | Y | FP32 FP16 | | `y_zero_point` must be 0
Range | Y | FP32 FP16 INT32 | |
Reciprocal | Y | FP32 FP16 | |
ReduceMax | Y | FP32 FP16 | 1 | axes input: initializer (importer)
ReduceMean | Y | FP32 FP16 | 1 | axes input: initializer (importer)
ReduceMin | Y | FP32 FP16 | 1 | axes input: initializer (importer)
ReduceSum | Y | FP32 FP16 | 1 | axes input: initializer (importer)
Relu | Y | FP32 FP16 INT8 | |
Reshape | Y | FP32 FP16 INT32 INT8 BOOL | |
Resize | Y | FP32 FP16 | | nearest/linear; see RESIZE_*
Round | Y | FP32 FP16 INT8 | |
ScatterElements | Y | FP32 FP16 INT8 INT32 | |
ScatterND | Y | FP32 FP16 INT8 INT32 | |
Shape | Y | FP32 FP16 INT32 INT8 BOOL | |
Sigmoid | Y | FP32 FP16 INT8 | |
Sign | Y | FP32 FP16 INT8 INT32 | |
Slice | Y | FP32 FP16 INT32 INT8 BOOL | 3 | `axes` must be an initializer
Softmax | Y | FP32 FP16 | |
Softplus | Y | FP32 FP16 INT8 | |
Split | Y | FP32 FP16 INT32 BOOL | |
Sqrt | Y | FP32 FP16 | |
Squeeze | Y | FP32 FP16 INT32 INT8 BOOL | 1 | `axes` must be an initializer
Sub | Y | FP32 FP16 INT32 | |
Sum | Y | FP32 FP16 INT32 | |
Tanh | Y | FP32 FP16 INT8 | |
Tile | Y | FP32 FP16 INT32 BOOL | |
TopK | Y | FP32 FP16 INT32 | |
Transpose | Y | FP32 FP16 INT32 INT8 BOOL | |
Unsqueeze | Y | FP32 FP16 INT32 INT8 BOOL | 1 | `axes` must be a constant tensor
Upsample | Y | FP32 FP16 | |
Where | Y | FP32 FP16 INT32 BOOL | |
ConvInteger | N | | |
MatMulInteger | N | | |
QLinearConv | N | | |
QLinearMatMul | N | | |
DynamicQuantizeLinear | N | | |
Unique | N | | |
"""

# 10.1-GA (for 10.3): ConstantOfShape's row reads "INF64" there, a typo for INT64. Slice's
# "axes must be an initializer" is lifted by 10.3 ("Added support for tensor `axes` inputs for
# `Slice` nodes", Changelog 10.3 GA), so no const column for it.
_TABLE_103 = """
Abs | Y | FP32 FP16 BF16 INT32 INT64 | |
Add | Y | FP32 FP16 BF16 INT32 INT64 | |
And | Y | BOOL | |
ArgMax | Y | FP32 FP16 BF16 INT32 INT64 | |
AveragePool | Y | FP32 FP16 BF16 | | 2D or 3D Pooling only. `dilations` must be empty or all ones
BatchNormalization | Y | FP32 FP16 BF16 | |
Cast | Y | FP32 FP16 BF16 INT32 INT64 UINT8 BOOL | |
Ceil | Y | FP32 FP16 BF16 | |
Clip | Y | FP32 FP16 BF16 | |
Concat | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Constant | Y | FP32 FP16 BF16 INT32 INT64 BOOL | | no sparse_value / value_string(s)
ConstantOfShape | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Conv | Y | FP32 FP16 BF16 | |
ConvTranspose | Y | FP32 FP16 BF16 | |
CumSum | Y | FP32 FP16 BF16 | 1 | `axis` must be an initializer
DequantizeLinear | Y | INT8 FP8 INT4 | | `x_zero_point` must be zero
Div | Y | FP32 FP16 BF16 INT32 INT64 | |
Dropout | Y | FP32 FP16 BF16 | | `is_training` must be an initializer and evaluate to False
Einsum | Y | FP32 FP16 BF16 | |
Equal | Y | FP32 FP16 BF16 INT32 INT64 | |
Erf | Y | FP32 FP16 BF16 | |
Exp | Y | FP32 FP16 BF16 | |
Expand | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Flatten | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Floor | Y | FP32 FP16 BF16 | |
Gather | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
GatherElements | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
GatherND | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Gemm | Y | FP32 FP16 BF16 | |
GlobalAveragePool | Y | FP32 FP16 BF16 | |
GlobalMaxPool | Y | FP32 FP16 BF16 | |
Greater | Y | FP32 FP16 BF16 INT32 INT64 | |
GreaterOrEqual | Y | FP32 FP16 BF16 INT32 INT64 | |
HardSigmoid | Y | FP32 FP16 BF16 | |
HardSwish | Y | FP32 FP16 BF16 | |
Identity | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
If | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
InstanceNormalization | Y | FP32 FP16 BF16 | |
LayerNormalization | Y | FP32 FP16 BF16 | | Only the first output `Y` is supported
LeakyRelu | Y | FP32 FP16 BF16 | |
Less | Y | FP32 FP16 BF16 INT32 INT64 | |
LessOrEqual | Y | FP32 FP16 BF16 INT32 INT64 | |
Log | Y | FP32 FP16 BF16 | |
Loop | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
MatMul | Y | FP32 FP16 BF16 | |
Max | Y | FP32 FP16 BF16 INT32 INT64 | |
MaxPool | Y | FP32 FP16 BF16 | | `Indices` output unsupported. `dilations` must be empty or all ones
Min | Y | FP32 FP16 BF16 INT32 INT64 | |
Mish | Y | FP32 FP16 | |
Mod | Y | FP32 FP16 BF16 INT32 INT64 | |
Mul | Y | FP32 FP16 BF16 INT32 INT64 | |
Neg | Y | FP32 FP16 BF16 INT32 INT64 | |
NonMaxSuppression | Y | FP32 FP16 | |
NonZero | Y | FP32 FP16 | |
Not | Y | BOOL | |
Or | Y | BOOL | |
Pad | Y | FP32 FP16 BF16 INT32 INT64 | 3 | `axes` must be an initializer
Pow | Y | FP32 FP16 BF16 | |
PRelu | Y | FP32 FP16 BF16 | |
QuantizeLinear | Y | FP32 FP16 BF16 | | `y_zero_point` must be 0
Range | Y | FP32 FP16 BF16 INT32 INT64 | |
Reciprocal | Y | FP32 FP16 BF16 | |
ReduceMax | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceMean | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceMin | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceSum | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
Relu | Y | FP32 FP16 BF16 INT32 INT64 | |
Reshape | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Resize | Y | FP32 FP16 BF16 | | see RESIZE_*; antialiasing is not supported
Round | Y | FP32 FP16 BF16 | |
ScatterElements | Y | FP32 FP16 BF16 INT32 INT64 | |
ScatterND | Y | FP32 FP16 BF16 INT32 INT64 | | `reduction` is not supported
Shape | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Sigmoid | Y | FP32 FP16 BF16 | |
Sign | Y | FP32 FP16 BF16 INT32 INT64 | |
Slice | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Softmax | Y | FP32 FP16 BF16 | |
Softplus | Y | FP32 FP16 BF16 | |
Split | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Sqrt | Y | FP32 FP16 BF16 | |
Squeeze | Y | FP32 FP16 BF16 INT32 INT64 BOOL | 1 | `axes` must be an initializer
Sub | Y | FP32 FP16 BF16 INT32 INT64 | |
Sum | Y | FP32 FP16 BF16 INT32 INT64 | |
Tanh | Y | FP32 FP16 BF16 | |
Tile | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
TopK | Y | FP32 FP16 BF16 INT32 INT64 | | `sorted` must be 1. `K` input must be less than 3840
Transpose | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Unsqueeze | Y | FP32 FP16 BF16 INT32 INT64 BOOL | 1 | `axes` must be a constant tensor
Upsample | Y | FP32 FP16 BF16 | |
Where | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
ConvInteger | N | | |
MatMulInteger | N | | |
QLinearConv | N | | |
QLinearMatMul | N | | |
DynamicQuantizeLinear | N | | |
Unique | N | | |
"""

_TABLE_1015 = """
Abs | Y | FP32 FP16 BF16 INT32 INT64 | |
Add | Y | FP32 FP16 BF16 INT32 INT64 | |
And | Y | BOOL | |
ArgMax | Y | FP32 FP16 BF16 INT32 INT64 | |
AveragePool | Y | FP32 FP16 BF16 | | 2D or 3D Pooling only. `dilations` must be empty or all ones
BatchNormalization | Y | FP32 FP16 BF16 | |
Cast | Y | FP32 FP16 BF16 INT32 INT64 UINT8 BOOL | |
Ceil | Y | FP32 FP16 BF16 | |
Clip | Y | FP32 FP16 BF16 | |
Concat | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Constant | Y | FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL | | no sparse_value / value_string(s)
ConstantOfShape | Y | FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL | |
Conv | Y | FP32 FP16 BF16 | |
ConvTranspose | Y | FP32 FP16 BF16 | |
CumSum | Y | FP32 FP16 BF16 | 1 | `axis` must be a build-time constant
DequantizeLinear | Y | INT8 FP8 FP4 INT4 | | `x_zero_point` must be zero
Div | Y | FP32 FP16 BF16 INT32 INT64 | |
Dropout | Y | FP32 FP16 BF16 | | `is_training` must be an initializer and evaluate to False
Einsum | Y | FP32 FP16 BF16 | |
Equal | Y | FP32 FP16 BF16 INT32 INT64 | |
Erf | Y | FP32 FP16 BF16 | |
Exp | Y | FP32 FP16 BF16 | |
Expand | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Flatten | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Floor | Y | FP32 FP16 BF16 | |
Gather | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
GatherElements | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
GatherND | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Gemm | Y | FP32 FP16 BF16 | |
GlobalAveragePool | Y | FP32 FP16 BF16 | |
GlobalMaxPool | Y | FP32 FP16 BF16 | |
Greater | Y | FP32 FP16 BF16 INT32 INT64 | |
GreaterOrEqual | Y | FP32 FP16 BF16 INT32 INT64 | |
HardSigmoid | Y | FP32 FP16 BF16 | |
HardSwish | Y | FP32 FP16 BF16 | |
Identity | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
If | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
InstanceNormalization | Y | FP32 FP16 BF16 | |
LayerNormalization | Y | FP32 FP16 BF16 | | Only the first output `Y` is supported
LeakyRelu | Y | FP32 FP16 BF16 | |
Less | Y | FP32 FP16 BF16 INT32 INT64 | |
LessOrEqual | Y | FP32 FP16 BF16 INT32 INT64 | |
Log | Y | FP32 FP16 BF16 | |
Loop | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
MatMul | Y | FP32 FP16 BF16 | |
Max | Y | FP32 FP16 BF16 INT32 INT64 | |
MaxPool | Y | FP32 FP16 BF16 | | `Indices` output unsupported. `dilations` must be empty or all ones
Min | Y | FP32 FP16 BF16 INT32 INT64 | |
Mish | Y | FP32 FP16 | |
Mod | Y | FP32 FP16 BF16 INT32 INT64 | |
Mul | Y | FP32 FP16 BF16 INT32 INT64 | |
Neg | Y | FP32 FP16 BF16 INT32 INT64 | |
NonMaxSuppression | Y | FP32 FP16 | |
NonZero | Y | FP32 FP16 | |
Not | Y | BOOL | |
Or | Y | BOOL | |
Pad | Y | FP32 FP16 BF16 INT32 INT64 | |
Pow | Y | FP32 FP16 BF16 INT32 INT64 | |
PRelu | Y | FP32 FP16 BF16 | |
QuantizeLinear | Y | FP32 FP16 BF16 | | `y_zero_point` must be 0
Range | Y | FP32 FP16 BF16 INT32 INT64 | |
Reciprocal | Y | FP32 FP16 BF16 | |
ReduceMax | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceMean | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceMin | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
ReduceSum | Y | FP32 FP16 BF16 INT32 INT64 | 1 | `axes` must be an initializer
Relu | Y | FP32 FP16 BF16 INT32 INT64 | |
Reshape | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Resize | Y | FP32 FP16 BF16 | | see RESIZE_*; antialiasing is not supported
Round | Y | FP32 FP16 BF16 | |
ScatterElements | Y | FP32 FP16 BF16 INT32 INT64 | |
ScatterND | Y | FP32 FP16 BF16 INT32 INT64 | | `reduction` other than `none` is not supported
Shape | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Sigmoid | Y | FP32 FP16 BF16 | |
Sign | Y | FP32 FP16 BF16 INT32 INT64 | |
Slice | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Softmax | Y | FP32 FP16 BF16 | |
Softplus | Y | FP32 FP16 BF16 | |
Split | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Sqrt | Y | FP32 FP16 BF16 | |
Squeeze | Y | FP32 FP16 BF16 INT32 INT64 BOOL | 1 | `axes` must be resolvable to a constant
Sub | Y | FP32 FP16 BF16 INT32 INT64 | |
Sum | Y | FP32 FP16 BF16 INT32 INT64 | |
Tanh | Y | FP32 FP16 BF16 | |
Tile | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
TopK | Y | FP32 FP16 BF16 INT32 INT64 | | `sorted` must be 1. `K` input must be less than 3840
Transpose | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
Unsqueeze | Y | FP32 FP16 BF16 INT32 INT64 BOOL | 1 | `axes` must be resolvable to a constant
Upsample | Y | FP32 FP16 BF16 | |
Where | Y | FP32 FP16 BF16 INT32 INT64 BOOL | |
ConvInteger | N | | |
MatMulInteger | N | | |
QLinearConv | N | | |
QLinearMatMul | N | | |
DynamicQuantizeLinear | N | | | TensorRT's IDynamicQuantize can be composed as a local function
Unique | N | | |
"""

_TABLES = {
    "8.6": (_TABLE_86, SOURCES["ops-8.6"]),
    "10.3": (_TABLE_103, SOURCES["ops-10.1"]),
    "10": (_TABLE_1015, SOURCES["ops-10.15"]),
    "11": (_TABLE_1015, SOURCES["ops-10.15"]),
}


def _parse_table(text: str, source: str) -> dict[str, OpRow]:
    rows: dict[str, OpRow] = {}
    for line in text.strip().splitlines():
        op, yes, types, const, note = (part.strip() for part in line.split("|"))
        rows[op] = OpRow(
            op=op,
            supported=yes == "Y",
            types=frozenset(types.split()),
            const=tuple(int(i) for i in const.split()),
            note=note,
            source=source,
        )
    return rows


@functools.cache
def op_table(target: str) -> dict[str, OpRow]:
    """The op table of ``target`` (a key of :data:`TARGETS`): op type → :class:`OpRow`.

    Raises:
        KeyError: ``target`` is not a key of :data:`TARGETS`.
    """
    text, source = _TABLES[TARGETS[target].table]
    return _parse_table(text, source)
