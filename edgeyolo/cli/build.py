"""`edgeyolo build`: a TensorRT engine from an exported graph, on the machine that runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeyolo.cli.common import _cli_errors, _Tf32Option, _TypingOption, console
from edgeyolo.lazy import lazy_import

_BUILD = lazy_import("edgeyolo.build.engine")
_BUILD_OPTIONS = lazy_import("edgeyolo.build.options")


def build_cmd(
    graph: Annotated[
        Path,
        typer.Argument(
            metavar="GRAPH", help="An exported .onnx graph; the manifest.json beside it is read."
        ),
    ],
    dla_core: Annotated[
        int | None,
        typer.Option(help="Build for this DLA core (Jetson Xavier/Orin); fp16/int8 graphs only."),
    ] = None,
    gpu_fallback: Annotated[
        bool,
        typer.Option("--gpu-fallback", help="With --dla-core: run what DLA cannot on the GPU."),
    ] = False,
    workspace: Annotated[float, typer.Option(help="TensorRT workspace limit, GiB.")] = 2.0,
    timing_cache: Annotated[
        Path | None,
        typer.Option(help="TensorRT timing cache (default: timing.cache beside the graph)."),
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Largest batch (default: the export's --batch).")
    ] = None,
    typing: _TypingOption = "auto",
    tf32: _Tf32Option = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Engine file, in the graph's folder (default: GRAPH with .engine)."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="TensorRT's VERBOSE build log into tensorrt_build.log."),
    ] = False,
) -> None:
    """Build a TensorRT engine on this machine from an exported graph, and check its boxes."""
    with _cli_errors():
        options = _BUILD_OPTIONS.BuildOptions(
            workspace_gib=workspace,
            timing_cache=timing_cache,
            max_batch=max_batch,
            typing=typing,
            tf32=tf32,
            verbose=verbose,
            dla_core=dla_core,
            gpu_fallback=gpu_fallback,
        )
        result = _BUILD.build_from_manifest(graph, options, out=out, log=console.print)
    info = result.info
    where = "GPU" if info.dla_core is None else f"DLA core {info.dla_core}"
    console.print(
        f"built {result.engine} ({result.entry['bytes'] / 1e6:.1f} MB): TensorRT "
        f"{info.trt_version}, {info.gpu_name} (sm_{info.compute_capability[0]}"
        f"{info.compute_capability[1]}), {where}, {info.precision}",
        highlight=False,
    )
    if info.gpu_layers:
        console.print(f"on the GPU (DLA fallback): {', '.join(info.gpu_layers)}", highlight=False)
    if result.parity is not None:
        console.print(
            f"parity vs the stored PyTorch detections: {result.parity.describe()} "
            f"({result.parity.floor.rule}: passed)",
            highlight=False,
        )
