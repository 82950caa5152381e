"""TensorRT engine build from our ONNX variants, for TensorRT 8.6, 10.x and 11.x, GPU or DLA.

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

DLA (``options.dla_core``; Jetson Xavier and Orin): the builder config's
``default_device_type = DeviceType.DLA`` and ``DLA_core``, with ``BuilderFlag.GPU_FALLBACK`` when
``options.gpu_fallback`` (trtexec ``--useDLACore=N --allowGPUFallback``). DLA runs fp16 and int8
only ("DLA support is currently limited to networks running in FP16 and INT8 mode", TensorRT's
"Working with DLA"), so an fp32 graph is refused; it has no dynamic shapes, so the profile is
fixed at the largest batch. Weakly typed builds get the FP16/INT8 flags as on the GPU; strongly
typed ones (TensorRT 11.4.1 on JetPack 7.2.2) take precision from the graph. The layers
``IBuilderConfig.can_run_on_DLA`` turns down are listed (:attr:`EngineInfo.gpu_layers`): they run
on the GPU with fallback, and without it the build is refused naming them. TensorRT 10.7 is the
last 10.x with DLA, 11.0-11.4.0 have none on Jetson (NVIDIA's "Working with DLA", 11.4.1).

Every version difference is decided by ``hasattr``/``getattr`` on the module (and the version
for the 10.12 line), which ``tests/build/test_tensorrt_api.py`` checks against the compiled
bindings of 10.3 and 11.4 and a list of names read from 8.6's binding sources.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edgeyolo.build.options import BuildOptions
from edgeyolo.errors import ConfigError, EngineBuildError, ExportError
from edgeyolo.fileio import write_bytes_atomic
from edgeyolo.lazy import version_tuple
from edgeyolo.runtime.conformance import ORT_ONLY_REASON, cpu_only_reason, tensorrt_targets
from edgeyolo.runtime.gpu import gpu_identity, import_tensorrt
from edgeyolo.runtime.trt_support import TARGETS

if TYPE_CHECKING:  # scripts/typecheck_trt.sh checks the calls against TensorRT's stubs
    import tensorrt

    from edgeyolo.runtime.trt_types import TensorRT

__all__ = [
    "STRONG_TYPING_COMPLETE",
    "EngineInfo",
    "build_engine",
    "choose_typing",
    "local_target",
    "tensorrt_refusal",
    "uncovered_reason",
]

PRECISIONS = ("fp32", "fp16", "int8")
#: The first TensorRT whose strong typing NVIDIA documents as complete (weak typing deprecated).
STRONG_TYPING_COMPLETE = (10, 12)
#: Layers listed by name in messages before "and N more".
_SHOWN = 12


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built from and for; stored in manifest.json via :meth:`to_dict`.

    ``builder_flags`` are the flags set (``TF32``, ``FP16``, ``INT8``, ``GPU_FALLBACK``);
    ``log_file`` is where TensorRT's log went (None: the console); ``dla_core`` the DLA core it
    was built for (None: the GPU), and ``gpu_layers`` the layers DLA cannot run, which run on
    the GPU (GPU fallback).
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
    dla_core: int | None = None
    gpu_fallback: bool = False
    gpu_layers: tuple[str, ...] = ()
    batches: tuple[int, int, int] = (1, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the log file by name, compute capability as a 2-list); the engine's
        file name is the manifest entry's ``file``."""
        return {
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "gpu_layers": list(self.gpu_layers),
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "typing": "strong" if self.strongly_typed else "weak",
            "typing_reason": self.typing_reason,
            "tf32": self.tf32,
            "builder_flags": list(self.builder_flags),
            "batches": {"min": self.batches[0], "opt": self.batches[1], "max": self.batches[2]},
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


def local_target(version: str) -> str:
    """The ``--trt`` target (a key of :data:`~edgeyolo.runtime.trt_support.TARGETS`) whose table
    describes TensorRT ``version``: the newest target not newer than it (``10.5`` → ``10.3``,
    ``10.16`` → ``10``, ``12.0`` → ``11``); the oldest for anything older than every target."""
    here = version_tuple(version)[:2]
    ranked = sorted((t.version, key) for key, t in TARGETS.items())
    fitting = [key for v, key in ranked if v[:2] <= here]
    return fitting[-1] if fitting else ranked[0][1]


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
        + "; re-export it for this TensorRT with `edgeyolo export ... --trt "
        + f"{local_target(version)}` (and an --opset that version parses)"
    )


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    img_size: int,
    options: BuildOptions | None = None,
    input_name: str = "images",
    log_file: Path | None = None,
    outputs: Sequence[str] | None = None,
    artifact: Mapping[str, Any] | None = None,
    log: Callable[[str], object] = print,
) -> EngineInfo:
    """Build ``engine_path`` from the ``precision`` ONNX variant at ``onnx_path``.

    Args:
        options: workspace, largest batch (``None``: 1), typing, TF32, verbosity, DLA, and the
            timing cache (read if present, written back after the build; ``None``: none); see
            :class:`~edgeyolo.build.options.BuildOptions`.
        log_file: append TensorRT's log here (warnings and errors also go to ``log``); None:
            TensorRT's own console logger. With ``options.verbose`` from VERBOSE (else from
            WARNING, or INFO into ``log_file``), with detailed layer information kept in the
            engine (``ProfilingVerbosity.DETAILED``).
        outputs: output names the graph must have (the export's ``num_dets``, ...).
        artifact: the graph's manifest entry; one :func:`tensorrt_refusal` refuses, or whose
            ``targets`` do not cover this TensorRT (:func:`uncovered_reason`), is not built.

    The engine file is written atomically; nothing is written when a check or the build fails.
    """
    options = options or BuildOptions()
    batches = options.batches(options.max_batch or 1)
    _check_args(precision, img_size, batches, options, onnx_path)
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
    typed, why = choose_typing(trt, version, options.typing, log)
    where = "GPU" if options.dla_core is None else f"DLA core {options.dla_core}"
    log(
        f"TensorRT {version}: building {precision} engine from {onnx_path} for {gpu_name} "
        f"(sm_{cc[0]}{cc[1]}, {where}), {'strongly' if typed else 'weakly'} typed ({why}), "
        f"TF32 {'on' if options.tf32 else 'off'}, batch {batches[0]}..{batches[2]}"
    )
    header = f"{engine_path.name} from {onnx_path.name}, TensorRT {version}"
    with _trt_logger(trt, options.verbose, log_file, log, header) as logger:
        plan, flags, gpu_layers, build_s = _build_plan(
            trt, logger, onnx_path, precision, typed, img_size, options, input_name, outputs, log
        )
    if plan is None:
        where = "its log above" if log_file is None else f"its log, {log_file},"
        raise EngineBuildError(
            f"TensorRT {version} could not build an engine from {onnx_path} ({where} says why); "
            "give it more workspace (--workspace), try the other typing (--typing weak or "
            "strong, where this version has it), or build the fp32 variant to see whether the "
            "precision is the cause"
        )
    write_bytes_atomic(engine_path, plan)
    log(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {build_s:.1f} s")
    return EngineInfo(
        engine_path, version, gpu_name, cc, precision, typed, build_s, options.tf32, flags, why,
        log_file, options.dla_core, options.gpu_fallback, gpu_layers, batches,
    )  # fmt: skip


def _build_plan(
    trt: TensorRT,
    logger: tensorrt.ILogger,
    onnx_path: Path,
    precision: str,
    typed: bool,
    img_size: int,
    options: BuildOptions,
    input_name: str,
    outputs: Sequence[str] | None,
    log: Callable[[str], object],
) -> tuple[tensorrt.IHostMemory | None, tuple[str, ...], tuple[str, ...], float]:
    """Parse, configure and build: ``(serialized plan or None, builder flags, GPU layers of a
    DLA build, build seconds)``; the timing cache is written back after a successful build."""
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, str(trt.__version__), typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(_parser_report(parser, onnx_path))
    _check_outputs(network, outputs, onnx_path)
    config, flags = _configure(trt, builder, precision, typed, options)
    gpu_layers: tuple[str, ...] = ()
    if options.dla_core is not None:
        gpu_layers = _configure_dla(trt, builder, config, network, options, onnx_path, log)
        flags += ("GPU_FALLBACK",) if options.gpu_fallback else ()
    batches = options.batches(options.max_batch or 1)
    _add_profile(builder, config, network, input_name, img_size, batches)
    cache = _attach_timing_cache(config, options.timing_cache, log)  # must outlive the build
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if plan is not None and options.timing_cache is not None and cache is not None:
        write_bytes_atomic(options.timing_cache, config.get_timing_cache().serialize())
    return plan, flags, gpu_layers, build_s


def _configure_dla(
    trt: TensorRT,
    builder: tensorrt.Builder,
    config: tensorrt.IBuilderConfig,
    network: tensorrt.INetworkDefinition,
    options: BuildOptions,
    onnx_path: Path,
    log: Callable[[str], object],
) -> tuple[str, ...]:
    """Send the network to DLA core ``options.dla_core`` (GPU fallback when asked); the names
    of the layers DLA cannot run (``config.can_run_on_DLA``), which then run on the GPU.

    Raises:
        EngineBuildError: this device has no such DLA core, or layers cannot run on DLA and
            GPU fallback is off (named, with what to do).
    """
    core = int(options.dla_core or 0)
    cores = int(builder.num_DLA_cores)
    if core >= cores:
        have = (
            "no DLA (desktop GPUs and Jetson Nano/TX2/Orin Nano have none)"
            if cores == 0
            else (f"DLA cores 0..{cores - 1}")
        )
        raise EngineBuildError(f"--dla-core {core}: this device has {have}; drop --dla-core")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if options.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    gpu = tuple(str(layer.name) for layer in layers if not config.can_run_on_DLA(layer))
    shown = ", ".join(gpu[:_SHOWN]) + (
        f" and {len(gpu) - _SHOWN} more" if len(gpu) > _SHOWN else ""
    )
    if gpu and not options.gpu_fallback:
        raise EngineBuildError(
            f"{len(gpu)} of {len(layers)} layers of {onnx_path.name} cannot run on DLA core "
            f"{core} ({shown}); add --gpu-fallback to run them on the GPU"
        )
    log(
        f"DLA core {core}: {len(layers) - len(gpu)} of {len(layers)} layers on DLA"
        + (f"; on the GPU (fallback): {shown}" if gpu else "")
    )
    return gpu


def choose_typing(
    trt: TensorRT, version: str, asked: str, log: Callable[[str], object] = print
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
    options: BuildOptions,
    onnx_path: Path,
) -> None:
    """Reject impossible settings before anything is imported or touched (the options checked
    their own ranges)."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if img_size <= 0 or img_size % 32:
        raise ExportError(f"img_size {img_size} must be a positive multiple of 32")
    lo, opt, hi = batches
    if not 1 <= lo <= opt <= hi:
        raise ExportError(
            f"batch range min={lo}, opt={opt}, max={hi} must satisfy 1 <= min <= opt <= max"
        )
    if options.dla_core is not None and precision == "fp32":
        raise ConfigError(
            f"--dla-core: DLA runs fp16 and int8 only, and {Path(onnx_path).name} is fp32; build "
            "the fp16 or int8 graph (`edgeyolo export --fp16` / `--int8` writes them), or drop "
            "--dla-core to build this one for the GPU"
        )


def _network_flags(trt: TensorRT, version: str, typed: bool) -> int:
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
    trt: TensorRT, builder: tensorrt.Builder, precision: str, typed: bool, options: BuildOptions
) -> tuple[tensorrt.IBuilderConfig, tuple[str, ...]]:
    """The builder config (workspace, precision flags, profiling detail) and the flags set."""
    config = builder.create_builder_config()
    workspace = int(options.workspace_gib * (1 << 30))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    flags = _set_builder_flags(trt, config, precision, typed, options.tf32)
    if options.verbose:  # layer names and parameters kept in the plan, for the engine inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return config, flags


def _set_builder_flags(
    trt: TensorRT, config: tensorrt.IBuilderConfig, precision: str, typed: bool, tf32: bool
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
    trt: TensorRT, verbose: bool, log_file: Path | None, echo: Callable[[str], object], header: str
) -> Iterator[tensorrt.ILogger]:
    """TensorRT's logger for one build: its own console Logger, or one appending to
    ``log_file`` under a ``header`` line (closed when the block ends) that also echoes
    warnings and errors."""
    if log_file is None:
        yield trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        return
    with Path(log_file).open("a", encoding="utf-8") as sink:
        sink.write(f"=== {header} ===\n")
        yield _file_logger(trt, sink, verbose, echo)


def _file_logger(
    trt: TensorRT, sink: TextIO, verbose: bool, echo: Callable[[str], object]
) -> tensorrt.ILogger:
    """An ``ILogger`` subclass (TensorRT's way to route its log in Python): messages from
    VERBOSE (``verbose``) or INFO into ``sink``; WARNING and worse also to ``echo``."""
    lowest = int(trt.ILogger.VERBOSE) if verbose else int(trt.ILogger.INFO)
    loud = int(trt.ILogger.WARNING)  # severities count down: INTERNAL_ERROR is 0

    class FileLogger(trt.ILogger):  # type: ignore[name-defined]  # a base read at run time
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = str(severity).rsplit(".", 1)[-1]
            if int(severity) <= lowest and not sink.closed:
                sink.write(f"[{level}] {msg}\n")
            if int(severity) <= loud:
                echo(f"TensorRT {level}: {msg}")

    return FileLogger()


def _check_outputs(
    network: tensorrt.INetworkDefinition, outputs: Sequence[str] | None, onnx_path: Path
) -> None:
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


def _parser_report(parser: tensorrt.OnnxParser, onnx_path: Path) -> str:
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
    builder: tensorrt.Builder,
    config: tensorrt.IBuilderConfig,
    network: tensorrt.INetworkDefinition,
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


def _attach_timing_cache(
    config: tensorrt.IBuilderConfig, path: Path | None, log: Callable[[str], object]
) -> tensorrt.ITimingCache | None:
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
