"""TensorRT engine build from our ONNX variants, for TensorRT 8.6, 10.x and 11.x.

``tensorrt`` is imported on first use (:data:`edgeyolo.runtime.gpu.TENSORRT`), so this module
imports on any machine.

Typing: our graphs carry their own precision (fp16 by casts, int8 by Q/DQ nodes), so where the
network can be *strongly typed* (TensorRT >= 10) it is, and the builder runs the graph in exactly
the types it holds; TensorRT 11 knows nothing else (``BuilderFlag.FP16/INT8`` are gone). On
TensorRT 8.6 (no strong typing) or when ``strongly_typed=False`` is asked for on 10.x, the network
is weakly typed and ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` are set for the fp16 / int8
variants; int8 gets no FP16 flag, so layers outside the Q/DQ pairs stay fp32 as in the graph.
Every version difference is decided by ``hasattr``/``getattr`` on the module, which
``tests/export/test_tensorrt_api.py`` checks against both versions' compiled bindings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeyolo.errors import EngineBuildError, ExportError
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.runtime.gpu import gpu_identity, import_tensorrt

__all__ = ["EngineInfo", "build_engine"]

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built from and for; stored in manifest.json via :meth:`to_dict`."""

    path: Path
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    strongly_typed: bool
    build_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (path as str, compute capability as a 2-list)."""
        return {
            "path": str(self.path),
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "build_s": round(self.build_s, 3),
        }


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    input_name: str = "images",
    img_size: int,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 1,
    workspace_gib: float = 2.0,
    timing_cache: Path | None = None,
    strongly_typed: bool | None = None,
    log: Callable[[str], object] = print,
) -> EngineInfo:
    """Build ``engine_path`` from the ``precision`` ONNX variant at ``onnx_path``.

    ``strongly_typed=None`` picks strong typing wherever TensorRT offers it (>= 10); False asks
    for a weakly typed network with builder precision flags (8.6/10.x only; TensorRT 11 builds
    strongly typed regardless, and the result says so). ``timing_cache`` is read if present and
    written back after the build. The engine file is written atomically.
    """
    _check_args(precision, img_size, (min_batch, opt_batch, max_batch), workspace_gib)
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file; run `edgeyolo export` to write it")
    gpu_name, cc = gpu_identity()
    version = str(trt.__version__)
    typed = _choose_typing(trt, version, strongly_typed, log)
    log(
        f"TensorRT {version}: building {precision} engine from {onnx_path} for {gpu_name} "
        f"(sm_{cc[0]}{cc[1]}), {'strongly' if typed else 'weakly'} typed"
    )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, version, typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(_parser_report(parser, onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not typed:
        _set_precision_flags(trt, config, precision, version)
    _add_profile(builder, config, network, input_name, img_size, (min_batch, opt_batch, max_batch))
    cache = _attach_timing_cache(config, timing_cache, log)  # must outlive the build
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if plan is None:
        raise EngineBuildError(
            f"TensorRT {version} could not build an engine from {onnx_path} (its log above "
            "says why); give it more workspace (workspace_gib), or build the fp32 variant to "
            "see whether the precision is the cause"
        )
    write_bytes_atomic(engine_path, plan)
    if timing_cache is not None and cache is not None:
        write_bytes_atomic(Path(timing_cache), config.get_timing_cache().serialize())
    log(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {build_s:.1f} s")
    return EngineInfo(engine_path, version, gpu_name, cc, precision, typed, build_s)


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _check_args(
    precision: str, img_size: int, batches: tuple[int, int, int], workspace_gib: float
) -> None:
    """Reject impossible settings before anything is imported or touched."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if img_size <= 0 or img_size % 32:
        raise ExportError(f"img_size {img_size} must be a positive multiple of 32")
    lo, opt, hi = batches
    if not 1 <= lo <= opt <= hi:
        raise ExportError(
            f"batch range min={lo}, opt={opt}, max={hi} must satisfy 1 <= min <= opt <= max"
        )
    if workspace_gib <= 0:
        raise ExportError(f"workspace {workspace_gib} GiB must be positive")


def _choose_typing(
    trt: Any, version: str, asked: bool | None, log: Callable[[str], object]
) -> bool:
    """Whether the network is strongly typed, given what this TensorRT offers."""
    has_strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    has_weak = hasattr(trt.BuilderFlag, "FP16")  # gone in TensorRT 11
    if asked is None:
        return has_strong or not has_weak
    if asked and not has_strong:
        raise ExportError(
            f"TensorRT {version} has no strongly typed networks (they came in 10.0); leave "
            "strongly_typed unset or upgrade TensorRT"
        )
    if not asked and not has_weak:
        log(f"TensorRT {version} builds strongly typed networks only; building strongly typed")
        return True
    return asked


def _network_flags(trt: Any, version: str, typed: bool) -> int:
    """Creation flags: STRONGLY_TYPED where chosen; EXPLICIT_BATCH before 10 (removed in 11)."""
    kinds = trt.NetworkDefinitionCreationFlag
    flags = 0
    strong = getattr(kinds, "STRONGLY_TYPED", None)
    if typed and strong is not None:
        flags |= 1 << int(strong)
    explicit = getattr(kinds, "EXPLICIT_BATCH", None)
    if explicit is not None and _major(version) < 10:
        flags |= 1 << int(explicit)
    return flags


def _set_precision_flags(trt: Any, config: Any, precision: str, version: str) -> None:
    """Weak typing only: let the builder pick fp16 / int8 kernels for those variants."""
    if precision == "fp32":
        return
    if precision == "fp16":
        flag = getattr(trt.BuilderFlag, "FP16", None)
    else:
        flag = getattr(trt.BuilderFlag, "INT8", None)
    if flag is None:
        raise ExportError(
            f"TensorRT {version} has no {precision} builder flag; build strongly typed instead"
        )
    config.set_flag(flag)


def _parser_report(parser: Any, onnx_path: Path) -> str:
    """One line per ONNX parser error: node index, name, operator and description."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        name = error.node_name() if hasattr(error, "node_name") else ""
        op = error.node_operator() if hasattr(error, "node_operator") else ""
        index = int(error.node())
        where = f"node #{index}" if index >= 0 else "graph"
        where += (f" {name!r}" if name else "") + (f" ({op})" if op else "")
        lines.append(f"{where}: {error.desc()}")
    detail = "; ".join(lines) or "the parser gave no reason"
    return (
        f"TensorRT's ONNX parser rejected {onnx_path}: {detail}; check that this TensorRT "
        "supports those operators, or re-export the model with `edgeyolo export`"
    )


def _add_profile(
    builder: Any,
    config: Any,
    network: Any,
    input_name: str,
    img_size: int,
    batches: tuple[int, int, int],
) -> None:
    """Optimization profile over the batch range; shapes come from the graph's own input."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [tensor.name for tensor in inputs]
    if input_name not in names:
        raise EngineBuildError(f"the graph has no input {input_name!r}, only {names}")
    dims = tuple(int(d) for d in inputs[names.index(input_name)].shape)
    if len(dims) != 4 or dims[1] < 1:
        raise EngineBuildError(f"input {input_name!r} has shape {dims}, expected (N, C, H, W)")
    if any(d not in (-1, img_size) for d in dims[2:]):
        raise EngineBuildError(
            f"input {input_name!r} has shape {dims} but img_size is {img_size}; "
            "pass the size the ONNX file was exported at"
        )
    if dims[0] != -1 and set(batches) != {dims[0]}:
        raise EngineBuildError(
            f"input {input_name!r} has a fixed batch of {dims[0]}; re-export with a dynamic "
            f"batch to build for batches {batches[0]}..{batches[2]}"
        )
    if -1 not in dims:
        return
    shapes = [(b, dims[1], img_size, img_size) for b in batches]
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {shapes}")


def _attach_timing_cache(config: Any, path: Path | None, log: Callable[[str], object]) -> Any:
    """Load ``path`` (if any) into the config; a cache from another GPU/version is replaced."""
    if path is None:
        return None
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log(f"timing cache {path} is from another GPU or TensorRT version; starting a new one")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError(f"TensorRT could not start a timing cache; delete {path}")
    return cache
