"""The ``edgeyolo`` command line: parse, call the library, print. No logic lives here.

The app is built here; each command is a plain function in a module of its own (`data`,
`train`, `eval`, `detect`, `export`, `build`, `bench`, `info`), registered below.
"""

from __future__ import annotations

import typer

from edgeyolo.cli import bench, build, data, detect, eval, export, info, train
from edgeyolo.cli.common import _Command

app = typer.Typer(
    name="edgeyolo",
    help="YOLOv3 from labelled images to a TensorRT engine, with numbers that prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Build a data set: `edgeyolo data mnist` writes the MNIST-detection set.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")

data_app.command("mnist", cls=_Command)(data.data_mnist)
app.command(cls=_Command)(train.train)
app.command("eval", cls=_Command)(eval.eval_)
app.command(cls=_Command)(detect.detect)
app.command("export", cls=_Command)(export.export_cmd)
app.command("build", cls=_Command)(build.build_cmd)
app.command(cls=_Command)(bench.bench)
app.command(cls=_Command)(info.info)
