"""`edgeyolo eval`: COCO mAP of a checkpoint over a data split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeyolo.cli.common import _TRAIN_EXTRA, _cli_errors, console
from edgeyolo.config import EVAL_CONF_THRES, EVAL_IOU_THRES
from edgeyolo.lazy import lazy_import

_EVALUATOR = lazy_import("edgeyolo.evaluate.evaluator", **_TRAIN_EXTRA, needed_for="edgeyolo val")
_COCO_MAP = lazy_import("edgeyolo.metrics.coco_map")


def eval_(
    weights: Annotated[
        Path,
        typer.Option(help="A checkpoint written by `edgeyolo train`, or a darknet .weights."),
    ],
    data: Annotated[Path, typer.Option(help="data.yaml of the dataset.")],
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg", help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: val, test or train.")] = "val",
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    conf: Annotated[float, typer.Option(help="Score threshold.")] = EVAL_CONF_THRES,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold.")] = EVAL_IOU_THRES,
    skip_bad: Annotated[bool, typer.Option(help="Skip and report bad labels/images.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON.")
    ] = None,
) -> None:
    """COCO mAP@0.5 and mAP@0.5:0.95 with a per-class table."""
    with _cli_errors():
        result = _EVALUATOR.evaluate_checkpoint(
            weights,
            data,
            cfg=darknet_cfg,
            split=split,
            img_size=img_size,
            batch=batch,
            device=device,
            conf_thres=conf,
            iou_thres=iou,
            skip_bad=skip_bad,
        )
    _COCO_MAP.print_map_table(result, console=console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"wrote {json_out}")
