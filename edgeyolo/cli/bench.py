"""`edgeyolo bench`: latency, mAP and box parity of exported models."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeyolo.cli.common import _cli_errors, console, err_console
from edgeyolo.lazy import lazy_import

_BENCH = lazy_import("edgeyolo.bench.runner")


def bench(
    models: Annotated[
        list[Path], typer.Option(help="Export folder(s) or .onnx/.engine file(s); repeatable.")
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            help="The checkpoint (reference, benched too). Without it (no torch needed): parity "
            "against the detections each export folder stores, ratios against the first model."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="data.yaml of the dataset scored (needed with --weights; else no mAP)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score: val, test or train.")] = "val",
    batch: Annotated[
        list[int] | None, typer.Option(help="Batch size to time; repeatable (default 1 and 8).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per batch size.")] = 10,
    threads: Annotated[
        int | None, typer.Option(help="Pin torch and ONNX Runtime intra-op threads.")
    ] = None,
    isolate: Annotated[
        bool, typer.Option(help="Time each backend in its own process (recommended).")
    ] = True,
    max_images: Annotated[int | None, typer.Option(help="Score the first N images only.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    torch_half: Annotated[
        bool | None,
        typer.Option(help="Also bench the checkpoint in fp16 (default: when it runs on CUDA)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON result here.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md and bench.png.")] = (
        Path("runs/bench")
    ),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Latency, mAP and box parity of exported models against their PyTorch checkpoint (or,
    without --weights, against the PyTorch detections stored in each export folder)."""
    with _cli_errors():
        config = _BENCH.BenchConfig(
            weights=weights,
            models=tuple(models),
            data=data,
            split=split,
            batch_sizes=tuple(batch or (1, 8)),
            warmup=warmup,
            runs=runs,
            threads=threads,
            isolate=isolate,
            max_images=max_images,
            device=device,
            torch_half=torch_half,
        )
        result = _BENCH.run_bench(
            config,
            progress=progress,
            command=shlex.join(["edgeyolo", *sys.argv[1:]]),
            log=lambda s: err_console.print(f"[yellow]note:[/] {s}", highlight=False),
        )
        paths = _BENCH.write_report(result, out, log=lambda s: err_console.print(f"note: {s}"))
    _BENCH.print_report(result, console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(paths["json"].read_text())
        paths["json_copy"] = json_out
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result.failed:
        err_console.print(f"[bold red]error:[/] {len(result.failed)} model(s) failed to run")
        raise typer.Exit(1)
