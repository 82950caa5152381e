"""`edgeyolo info`: layers, parameters and GFLOPs of a model or checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeyolo.cli.common import _TRAIN_EXTRA, _cli_errors, console
from edgeyolo.config import ModelConfig
from edgeyolo.lazy import lazy_import

_MODELS = lazy_import("edgeyolo.models", **_TRAIN_EXTRA, needed_for="edgeyolo info")
_CHECKPOINT = lazy_import("edgeyolo.models.checkpoint", **_TRAIN_EXTRA, needed_for="edgeyolo info")


def info(
    model: Annotated[str, typer.Option(help="yolov3 or yolov3-tiny.")] = "yolov3",
    classes: Annotated[int, typer.Option(help="Number of classes.")] = 80,
    img_size: Annotated[int, typer.Option(help="Input size for the FLOP count.")] = 416,
    weights: Annotated[Path | None, typer.Option(help="Describe this checkpoint instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Layers, parameters, darknet float count and GFLOPs of a model."""
    with _cli_errors():
        if weights is not None:
            net, _ = _CHECKPOINT.load_model(weights)
        else:
            config = ModelConfig(arch=model, num_classes=classes, img_size=img_size)
            net = _MODELS.build_model(config)
        result = _MODELS.model_info(net, img_size=img_size)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['arch']} ({result['num_classes']} classes)")
    table.add_column("property")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
