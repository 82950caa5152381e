"""TensorRT engine build from our ONNX variants, for TensorRT 8.6, 10.x and 11.x.

``tensorrt`` is imported on first use (:data:`edgeyolo.runtime.gpu.TENSORRT`, which refuses
anything older than 8.6), so this module imports on any machine.

Typing (:func:`choose_typing`): our graphs carry their own precision (fp16 by casts, int8 by Q/DQ
nodes). TensorRT 11 builds strongly typed networks only (``BuilderFlag.FP16/INT8`` are gone);
NVIDIA documents strong typing as complete from 10.12 (weak typing is deprecated there), and
strongly typed int8 builds are reported failing on 10.3 (JetPack 6; issue 12, not reproduced here:
no TensorRT runs on these machines). So ``typing="auto"`` builds
strongly typed from 10.12 on and weakly typed before (8.6 has no strong typing at all), where
``BuilderFlag.FP16`` is set for fp16 and ``INT8`` *with* ``FP16`` for int8, so that the layers
outside the Q/DQ pairs may run fp16 rather than fp32. ``"strong"`` / ``"weak"`` override it where
that TensorRT offers the mode, and are refused, with the reason, where it does not.

Graphs not meant for TensorRT get no engine (:func:`tensorrt_refusal`: ``--raw``, the int8 graph
of the onnxruntime placement, anything held to ONNX Runtime), nor do graphs whose conformance
check did not cover the TensorRT at hand (:func:`uncovered_reason`).

TF32: ``BuilderFlag.TF32`` is on by default, so an "fp32" engine would round convolution inputs
to 10-bit mantissas on Ampere, Hopper and Orin; it is cleared unless ``tf32=True``.

Every version difference is decided by ``hasattr``/``getattr`` on the module (and the version
for the 10.12 line), which ``tests/export/test_tensorrt_api.py`` checks against the compiled
bindings of 10.3 and 11.4 and a list of names read from 8.6's binding sources.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edgeyolo.config import ENGINE_TYPINGS
from edgeyolo.errors import EngineBuildError, ExportError
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.lazy import version_tuple
from edgeyolo.runtime.conformance import ORT_ONLY_REASON, cpu_only_reason, tensorrt_targets
from edgeyolo.runtime.gpu import gpu_identity, import_tensorrt
from edgeyolo.runtime.trt_support import TARGETS

__all__ = [
    "STRONG_TYPING_COMPLETE",
    "EngineInfo",
    "build_engine",
    "choose_typing",
    "tensorrt_refusal",
    "uncovered_reason",
]

PRECISIONS = ("fp32", "fp16", "int8")
#: The first TensorRT whose strong typing NVIDIA documents as complete (weak typing deprecated).
STRONG_TYPING_COMPLETE = (10, 12)


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built from and for; stored in manifest.json via :meth:`to_dict`.

    ``builder_flags`` are the precision flags set (``TF32``, ``FP16``, ``INT8``); ``log_file`` is
    where TensorRT's log went (None: the console).
    """

    path: Path
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    strongly_typed: bool
    build_s: float
    tf32: bool = False
    builder_flags: tuple[str, ...] = ()
    typing_reason: str = ""
    log_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as str, the log file by name, compute capability as a 2-list)."""
        return {
            "path": str(self.path),
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "typing": "strong" if self.strongly_typed else "weak",
            "typing_reason": self.typing_reason,
            "tf32": self.tf32,
            "builder_flags": list(self.builder_flags),
            "build_log": None if self.log_file is None else Path(self.log_file).name,
            "build_s": round(self.build_s, 3),
        }


def tensorrt_refusal(artifact: Mapping[str, Any]) -> str | None:
    """Why TensorRT must not build an engine from the manifest entry ``artifact``; None if it may.

    Refused: anything but an ONNX graph, a ``--raw`` graph, and a graph held to ONNX Runtime only:
    the int8 graph of the onnxruntime placement (:data:`ORT_ONLY_REASON`; also in manifests
    older than the conformance check's ``targets``) or any entry whose ``targets`` name no
    TensorRT (:func:`~edgeyolo.runtime.conformance.cpu_only_reason`).
    """
    kind = artifact.get("kind", "onnx")
    if kind != "onnx":
        return f"it is a {kind} file, not an ONNX graph"
    if artifact.get("raw"):
        return "it is a --raw graph (no decode + NMS, so no num_dets/boxes/scores/classes)"
    if artifact.get("placement") == "onnxruntime":
        return f"it is the {ORT_ONLY_REASON}"
    return cpu_only_reason(artifact)


def uncovered_reason(artifact: Mapping[str, Any], version: str) -> str | None:
    """Why the graph of ``artifact`` was not checked for TensorRT ``version``, or None.

    A ``--trt`` target covers the versions of its major from its own on (``10.3`` covers 10.3 to
    10.x; ``10`` only the newest 10.x); a major newer than every target edgeyolo knows (12 on)
    is let through (not checked, not known to fail). Entries without ``targets`` predate the
    check: None.
    """
    keys = tensorrt_targets(artifact)
    if not keys:
        return None
    here = version_tuple(version)[:2]
    checked = [TARGETS[k].version[:2] for k in keys if k in TARGETS]
    if not checked or any(t[0] == here[0] and t <= here for t in checked):
        return None
    if here[0] > max(t.version[0] for t in TARGETS.values()):
        return None
    why = artifact.get("targets_reason")
    return (
        f"it was checked for TensorRT {', '.join(keys)} only, which does not cover {version}"
        + (f" ({why})" if why else "")
        + "; re-export with --trt naming this version's line (8.6, 10.3, 10 or 11)"
    )


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
    typing: str = "auto",
    tf32: bool = False,
    verbose: bool = False,
    log_file: Path | None = None,
    outputs: Sequence[str] | None = None,
    artifact: Mapping[str, Any] | None = None,
    log: Callable[[str], object] = print,
) -> EngineInfo:
    """Build ``engine_path`` from the ``precision`` ONNX variant at ``onnx_path``.

    Args:
        typing: ``auto``, ``strong`` or ``weak`` (module docstring; :func:`choose_typing`).
        tf32: leave TensorRT's TF32 on (it is cleared otherwise).
        verbose: TensorRT's log from VERBOSE (else from WARNING, or INFO into ``log_file``),
            with detailed layer information kept in the engine (``ProfilingVerbosity.DETAILED``).
        log_file: append TensorRT's log here (warnings and errors also go to ``log``); None:
            TensorRT's own console logger.
        outputs: output names the graph must have (the export's ``num_dets``, ...).
        artifact: the graph's manifest entry; one :func:`tensorrt_refusal` refuses, or whose
            ``targets`` do not cover this TensorRT (:func:`uncovered_reason`), is not built.
        timing_cache: read if present and written back after the build.

    The engine file is written atomically; nothing is written when a check or the build fails.
    """
    batches = (min_batch, opt_batch, max_batch)
    _check_args(precision, img_size, batches, workspace_gib, typing)
    if artifact is not None and (reason := tensorrt_refusal(artifact)) is not None:
        raise EngineBuildError(f"no TensorRT engine is built from {onnx_path}: {reason}")
    trt = import_tensorrt()
    version = str(trt.__version__)
    if artifact is not None and (reason := uncovered_reason(artifact, version)) is not None:
        raise EngineBuildError(f"no TensorRT {version} engine is built from {onnx_path}: {reason}")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file; run `edgeyolo export` to write it")
    gpu_name, cc = gpu_identity()
    typed, why = choose_typing(trt, version, typing, log)
    log(
        f"TensorRT {version}: building {precision} engine from {onnx_path} for {gpu_name} "
        f"(sm_{cc[0]}{cc[1]}), {'strongly' if typed else 'weakly'} typed ({why}), "
        f"TF32 {'on' if tf32 else 'off'}"
    )
    header = f"{engine_path.name} from {onnx_path.name}, TensorRT {version}"
    with _trt_logger(trt, verbose, log_file, log, header) as logger:
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt, version, typed))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            raise EngineBuildError(_parser_report(parser, onnx_path))
        _check_outputs(network, outputs, onnx_path)
        config, flags = _configure(trt, builder, precision, typed, tf32, verbose, workspace_gib)
        _add_profile(builder, config, network, input_name, img_size, batches)
        cache = _attach_timing_cache(config, timing_cache, log)  # must outlive the build
        start = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - start
    if plan is None:
        where = "its log above" if log_file is None else f"its log, {log_file},"
        raise EngineBuildError(
            f"TensorRT {version} could not build an engine from {onnx_path} ({where} says why); "
            "give it more workspace (workspace_gib), try the other typing (--typing weak or "
            "strong, where this version has it), or build the fp32 variant to see whether the "
            "precision is the cause"
        )
    write_bytes_atomic(engine_path, plan)
    if timing_cache is not None and cache is not None:
        write_bytes_atomic(Path(timing_cache), config.get_timing_cache().serialize())
    log(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {build_s:.1f} s")
    extra = {"tf32": tf32, "builder_flags": flags, "typing_reason": why, "log_file": log_file}
    return EngineInfo(engine_path, version, gpu_name, cc, precision, typed, build_s, **extra)


def choose_typing(
    trt: Any, version: str, asked: str, log: Callable[[str], object] = print
) -> tuple[bool, str]:
    """Whether the network is strongly typed, and why, for ``asked`` (``auto|strong|weak``).

    Raises:
        ExportError: ``strong`` where this TensorRT has no strong typing (8.6), ``weak`` where it
            has no weak typing (11.x).
    """
    has_strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    has_weak = hasattr(trt.BuilderFlag, "FP16")  # with INT8, gone in TensorRT 11
    complete = version_tuple(version)[:2] >= STRONG_TYPING_COMPLETE
    if asked == "strong" and not has_strong:
        raise ExportError(
            f"--typing strong: TensorRT {version} has no strongly typed networks (they came in "
            "10.0, complete from 10.12); use --typing auto or weak"
        )
    if asked == "weak" and not has_weak:
        raise ExportError(
            f"--typing weak: TensorRT {version} builds strongly typed networks only (11.0 "
            "removed weak typing: BuilderFlag.FP16/INT8 are gone), so precision comes from the "
            "graph itself; use --typing auto or strong"
        )
    if asked == "strong":
        if not complete:
            log(
                f"note: --typing strong on TensorRT {version}: NVIDIA documents strong typing as "
                "complete from 10.12, and int8 builds are reported to fail strongly typed on "
                "10.3; if this build fails, use --typing auto (weak before 10.12)"
            )
        return True, "--typing strong"
    if asked == "weak":
        return False, "--typing weak"
    if not has_weak:
        return True, f"TensorRT {version} has strong typing only"
    if has_strong and complete:
        return True, "auto: strong typing is complete from TensorRT 10.12"
    return False, "auto: strong typing is incomplete before TensorRT 10.12"


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _check_args(
    precision: str,
    img_size: int,
    batches: tuple[int, int, int],
    workspace_gib: float,
    typing: str,
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
    if typing not in ENGINE_TYPINGS:
        raise ExportError(f"typing {typing!r} is not one of {', '.join(ENGINE_TYPINGS)}")


def _network_flags(trt: Any, version: str, typed: bool) -> int:
    """Creation flags: STRONGLY_TYPED where chosen (ignored, yet accepted, by 11.x);
    EXPLICIT_BATCH before 10 (deprecated in 10, removed in 11)."""
    kinds = trt.NetworkDefinitionCreationFlag
    flags = 0
    strong = getattr(kinds, "STRONGLY_TYPED", None)
    if typed and strong is not None:
        flags |= 1 << int(strong)
    explicit = getattr(kinds, "EXPLICIT_BATCH", None)
    if explicit is not None and _major(version) < 10:
        flags |= 1 << int(explicit)
    return flags


def _configure(
    trt: Any,
    builder: Any,
    precision: str,
    typed: bool,
    tf32: bool,
    verbose: bool,
    workspace_gib: float,
) -> tuple[Any, tuple[str, ...]]:
    """The builder config (workspace, precision flags, profiling detail) and the flags set."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    flags = _set_builder_flags(trt, config, precision, typed, tf32)
    if verbose:  # layer names and parameters kept in the plan, for the engine inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return config, flags


def _set_builder_flags(
    trt: Any, config: Any, precision: str, typed: bool, tf32: bool
) -> tuple[str, ...]:
    """TF32 cleared unless asked (on by default); weak typing: FP16 for fp16, INT8 and FP16 for
    int8 (so that the layers outside the Q/DQ pairs may run fp16 rather than fp32)."""
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    names: list[str] = ["TF32"] if tf32 else []
    if typed or precision == "fp32":
        return tuple(names)
    fp16 = getattr(trt.BuilderFlag, "FP16", None)
    int8 = getattr(trt.BuilderFlag, "INT8", None)
    wanted = [("FP16", fp16)] if precision == "fp16" else [("INT8", int8), ("FP16", fp16)]
    for name, flag in wanted:
        if flag is None:
            raise ExportError(
                f"this TensorRT has no BuilderFlag.{name} (11.0 removed weak typing); build "
                "strongly typed (--typing auto or strong)"
            )
        config.set_flag(flag)
        names.append(name)
    return tuple(names)


@contextlib.contextmanager
def _trt_logger(
    trt: Any, verbose: bool, log_file: Path | None, echo: Callable[[str], object], header: str
) -> Iterator[Any]:
    """TensorRT's logger for one build: its own console Logger, or one appending to
    ``log_file`` under a ``header`` line (closed when the block ends) that also echoes
    warnings and errors."""
    if log_file is None:
        yield trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        return
    with Path(log_file).open("a", encoding="utf-8") as sink:
        sink.write(f"=== {header} ===\n")
        yield _file_logger(trt, sink, verbose, echo)


def _file_logger(trt: Any, sink: TextIO, verbose: bool, echo: Callable[[str], object]) -> Any:
    """An ``ILogger`` subclass (TensorRT's way to route its log in Python): messages from
    VERBOSE (``verbose``) or INFO into ``sink``; WARNING and worse also to ``echo``."""
    lowest = int(trt.ILogger.VERBOSE) if verbose else int(trt.ILogger.INFO)
    loud = int(trt.ILogger.WARNING)  # severities count down: INTERNAL_ERROR is 0

    class FileLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = str(severity).rsplit(".", 1)[-1]
            if int(severity) <= lowest and not sink.closed:
                sink.write(f"[{level}] {msg}\n")
            if int(severity) <= loud:
                echo(f"TensorRT {level}: {msg}")

    return FileLogger()


def _check_outputs(network: Any, outputs: Sequence[str] | None, onnx_path: Path) -> None:
    """The parsed graph has every output name in ``outputs`` (None: no check)."""
    if outputs is None:
        return
    names = [network.get_output(i).name for i in range(network.num_outputs)]
    missing = [n for n in outputs if n not in names]
    if missing:
        raise EngineBuildError(
            f"{onnx_path} has outputs {names}, not {list(outputs)} (missing {missing}): a --raw "
            "graph, or not an edgeyolo export; re-export without --raw to build an engine"
        )


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
