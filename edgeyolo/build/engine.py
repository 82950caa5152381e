"""``edgeyolo build``: a TensorRT engine from an exported graph and the manifest beside it.

``build_from_manifest("export/tiny/model_int8.onnx", BuildOptions(dla_core=0, gpu_fallback=True))``
is the one road to an engine: ``edgeyolo build`` calls it on the device, ``edgeyolo export
--engine`` on each graph in its staging folder. It needs no checkpoint and no torch:

1. TensorRT's bindings, pycuda and a CUDA GPU are checked before anything else; without
   TensorRT it stops in one line saying what to install (:func:`preflight`).
2. The graph's manifest entry must describe the file (sha256), be meant for TensorRT
   (:func:`~edgeyolo.build.tensorrt.tensorrt_refusal`), and have been checked for this TensorRT
   at export (its ``targets``; :func:`~edgeyolo.build.tensorrt.uncovered_reason`); the graph is
   held again to this version's row of the parser table
   (:func:`edgeyolo.runtime.conformance.check_graph`).
3. Precision comes from the graph (fp16 casts, int8 Q/DQ scales: nothing is recalibrated here);
   weakly typed builds get the matching builder flags from the entry's ``precision``.
4. The engine is built beside the graph under a temporary name, run on the stored reference
   frames and held to its precision's parity floor (:mod:`edgeyolo.build.references`); only then
   is its entry written into the manifest (atomically: TensorRT version, GPU name, compute
   capability, DLA core, sha256 of engine and graph, the parity record) and the engine renamed
   into place. A failure at any step leaves the folder as it was (the timing cache aside, which
   only speeds up builds); a crash between the two renames leaves an engine whose sha256 its
   entry does not match, which the runtime refuses with the advice to rebuild.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeyolo.build.options import BuildOptions
from edgeyolo.build.references import (
    ParityResult,
    check_parity,
    references_parity,
    run_engine,
)
from edgeyolo.build.tensorrt import (
    EngineInfo,
    build_engine,
    local_target,
    tensorrt_refusal,
    uncovered_reason,
)
from edgeyolo.errors import (
    ConfigError,
    EngineBuildError,
    ExportError,
    ModelFileError,
    TensorRTNotAvailableError,
)
from edgeyolo.lazy import lazy_import
from edgeyolo.runtime.conformance import check_graph, format_violations
from edgeyolo.runtime.gpu import gpu_identity, import_pycuda
from edgeyolo.runtime.manifest import (
    MANIFEST_NAME,
    check_file,
    read_manifest,
    sha256_file,
    write_manifest,
)
from edgeyolo.runtime.references import References, load_references
from edgeyolo.runtime.thresholds import read_graph

__all__ = [
    "BUILD_LOG",
    "INSTALL_TENSORRT",
    "TIMING_CACHE",
    "BuildResult",
    "build_from_manifest",
    "preflight",
]

#: The timing cache kept in the export folder (``--timing-cache`` gives another).
TIMING_CACHE = "timing.cache"
#: TensorRT's build log with ``--verbose`` (in the export folder).
BUILD_LOG = "tensorrt_build.log"
#: Where TensorRT's Python bindings come from.
INSTALL_TENSORRT = (
    "on a Jetson, JetPack's `sudo apt install python3-libnvinfer` (a venv needs "
    "--system-site-packages to see it); elsewhere NVIDIA's pip index: `pip install tensorrt "
    "--extra-index-url https://pypi.nvidia.com`"
)
#: TensorRT's bindings, for the build's own message (the runtime's says how to run engines).
_TENSORRT = lazy_import(
    "tensorrt",
    min_version="8.6",
    install=INSTALL_TENSORRT,
    error=TensorRTNotAvailableError,
    needed_for="building a TensorRT engine on the machine that will run it",
)


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_from_manifest` made.

    Attributes:
        engine: the engine file, in the export folder.
        entry: its manifest entry, as written.
        info: the build's :class:`~edgeyolo.build.tensorrt.EngineInfo`.
        parity: its check against the stored references (``None``: the export has none).
    """

    engine: Path
    entry: dict[str, Any]
    info: EngineInfo
    parity: ParityResult | None


def preflight() -> str:
    """TensorRT (>= 8.6), pycuda and a CUDA GPU, checked before any work; TensorRT's version.

    Raises:
        TensorRTNotAvailableError: one line naming what is missing and how to install it.
    """
    trt = _TENSORRT.load()
    import_pycuda()
    gpu_identity()
    return str(trt.__version__)


def build_from_manifest(
    onnx_path: str | Path,
    options: BuildOptions | None = None,
    *,
    out: str | Path | None = None,
    log: Callable[[str], object] = print,
) -> BuildResult:
    """Build the engine of the exported graph ``onnx_path`` (module docstring).

    Args:
        onnx_path: a graph of an export folder (its ``manifest.json`` beside it).
        options: :class:`~edgeyolo.build.options.BuildOptions`; ``max_batch`` ``None`` is the
            manifest's ``input.max_batch``, ``timing_cache`` ``None`` the folder's
            ``timing.cache``; ``verbose`` logs into the folder's ``tensorrt_build.log``.
        out: the engine file (default: the graph's name with ``.engine``); it must be in the
            export folder, whose manifest lists files by name.

    Raises:
        TensorRTNotAvailableError: no TensorRT, pycuda or GPU (checked first).
        ModelFileError: no manifest, no entry for the graph, a graph that is not the file its
            entry describes, damaged reference detections.
        EngineBuildError: a graph not meant for, checked for or parsed by this TensorRT; a
            failed build; an engine below its parity floor (not kept).
        ConfigError: ``--out`` outside the folder; DLA for an fp32 graph.
    """
    options = options or BuildOptions()
    version = preflight()
    onnx_path = Path(onnx_path)
    folder = onnx_path.parent
    manifest, entry = _graph_entry(onnx_path)
    engine_path = _engine_path(onnx_path, out)
    _check_graph_for(onnx_path, entry, version)
    refs = _references(folder, manifest, log)
    options = _resolved(options, manifest, folder)
    log_file = folder / BUILD_LOG if options.verbose else None
    # built under its own name in a hidden folder beside it (same file system: a rename)
    building = folder / f".building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    staged = building / engine_path.name
    try:
        info = build_engine(
            onnx_path,
            staged,
            precision=str(entry["precision"]),
            img_size=_img_size(manifest, folder),
            options=options,
            input_name=str(manifest["input"].get("name", "images")),
            log_file=log_file,
            outputs=[str(o) for o in manifest["outputs"]],
            artifact=entry,
            log=log,
        )
        parity = None
        if refs is not None:
            got = run_engine(staged, refs.inputs())
            parity = references_parity(refs, got, precision=info.precision, tf32=options.tf32)
            check_parity(parity, engine_path, log)
            log(f"{engine_path.name} against {refs.path.name}: {parity.describe()} (passed)")
        info = replace(info, path=engine_path)
        record = _engine_entry(staged, engine_path.name, entry, info, parity)
        _record(folder, record)  # the manifest first: if it cannot be written, nothing changed
        os.replace(staged, engine_path)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return BuildResult(engine_path, record, info, parity)


def _graph_entry(onnx_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest beside ``onnx_path`` and the graph's entry, the file checked against it."""
    folder = onnx_path.parent
    if onnx_path.suffix.lower() != ".onnx":
        raise ConfigError(f"{onnx_path}: give an exported .onnx graph to build an engine from")
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: no such ONNX file; give a graph of an export folder")
    try:
        manifest = read_manifest(folder)
    except ExportError as exc:
        raise ModelFileError(
            f"{exc} (edgeyolo build reads the manifest.json `edgeyolo export` writes beside the "
            "graph: copy the whole export folder)"
        ) from exc
    onnx_entries = [a for a in manifest["artifacts"] if a.get("kind", "onnx") == "onnx"]
    entry = next((a for a in onnx_entries if a.get("file") == onnx_path.name), None)
    if entry is None:
        have = ", ".join(str(a.get("file")) for a in onnx_entries) or "none"
        raise ModelFileError(
            f"{folder / MANIFEST_NAME} lists no ONNX graph {onnx_path.name!r} (it lists: {have}); "
            "build one of those, or export again"
        )
    check_file(onnx_path, entry)
    return manifest, entry


def _engine_path(onnx_path: Path, out: str | Path | None) -> Path:
    """``out`` (in the graph's folder) or the graph's name with ``.engine``."""
    if out is None:
        return onnx_path.with_suffix(".engine")
    path = Path(out)
    if path.parent.resolve() != onnx_path.parent.resolve() or path.suffix.lower() not in (
        ".engine",
        ".plan",
    ):
        raise ConfigError(
            f"--out {path}: the engine goes into the export folder {onnx_path.parent} (its "
            "manifest lists files by name), with the suffix .engine or .plan"
        )
    return path


def _check_graph_for(onnx_path: Path, entry: Mapping[str, Any], version: str) -> None:
    """Meant for TensorRT, checked at export for ``version``, and conforming to its table."""
    reason = tensorrt_refusal(entry)
    if reason is not None:
        raise EngineBuildError(f"no TensorRT engine is built from {onnx_path}: {reason}")
    reason = uncovered_reason(entry, version)
    if reason is not None:
        raise EngineBuildError(f"no TensorRT {version} engine is built from {onnx_path}: {reason}")
    target = local_target(version)
    violations = check_graph(read_graph(onnx_path), (target,))
    if violations:
        raise EngineBuildError(
            format_violations(violations, name=onnx_path.name)
            + f"\n(checked as TensorRT {target}, the table for {version}; re-export with "
            f"`edgeyolo export ... --trt {target}` to have the export fix or report it)"
        )


def _references(
    folder: Path, manifest: Mapping[str, Any], log: Callable[[str], object]
) -> References | None:
    """The export's stored reference detections; None (with a note) for an older export."""
    if not manifest.get("references"):
        log(
            f"note: {folder / MANIFEST_NAME} records no reference detections (an export older "
            "than them), so the engine's boxes are not checked; export again to store them"
        )
        return None
    return load_references(folder)


def _img_size(manifest: Mapping[str, Any], folder: Path) -> int:
    try:
        return int(manifest["input"]["shape"][-1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{folder / MANIFEST_NAME}: no valid input.shape ({exc}); restore the manifest "
            "`edgeyolo export` wrote"
        ) from exc


def _resolved(options: BuildOptions, manifest: Mapping[str, Any], folder: Path) -> BuildOptions:
    """``options`` with the manifest's largest batch and the folder's timing cache filled in."""
    max_batch = options.max_batch or int(manifest["input"].get("max_batch", 1))
    cache = options.timing_cache or folder / TIMING_CACHE
    return replace(options, max_batch=max_batch, timing_cache=cache)


def _engine_entry(
    engine: Path,
    name: str,
    graph: Mapping[str, Any],
    info: EngineInfo,
    parity: ParityResult | None,
) -> dict[str, Any]:
    """The manifest entry of the engine at ``engine``, to be named ``name``."""
    return {
        "kind": "engine",
        "precision": info.precision,
        "file": name,
        "sha256": sha256_file(engine),
        "bytes": engine.stat().st_size,
        "onnx_file": graph["file"],
        "onnx_sha256": graph.get("sha256"),
        **info.to_dict(),
        "parity_vs_torch": None if parity is None else parity.to_dict(),
    }


def _record(folder: Path, entry: dict[str, Any]) -> None:
    """Put ``entry`` into the folder's manifest (replacing one for the same file), atomically."""
    manifest = read_manifest(folder)
    arts = [a for a in manifest["artifacts"] if a.get("file") != entry["file"]]
    manifest["artifacts"] = [*arts, entry]
    write_manifest(folder, manifest)
