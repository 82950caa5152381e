"""What the commands share: the errors-to-one-line context, the consoles, the usage-line
command class, the typer options of more than one command."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
import typer.core
from rich.markup import escape

from edgeyolo.console import make_console
from edgeyolo.errors import EdgeYoloError

# Each command's library modules are imported when it runs (so `edgeyolo --help` starts at
# once, and a deploy install without torch says which extra the training commands need): each
# command's module holds its own `lazy_import` handles; this is the extra they name.
_TRAIN_EXTRA = {"install": "pip install torch torchvision (or `pip install edgeyolo[train]`)"}


#: TensorRT build options shared by `export --engine` and `build` (one wording, one default).
_TypingOption = Annotated[
    str,
    typer.Option(
        help="TensorRT network typing: auto (strong from TensorRT 10.12 on, weak before; "
        "11.x is strong only), strong, or weak (not on 11.x)."
    ),
]
_Tf32Option = Annotated[
    bool,
    typer.Option(
        "--tf32", help="Let TensorRT run fp32 layers in TF32 (Ampere and newer); default off."
    ),
]


class _Command(typer.core.TyperCommand):
    """Usage lines name positionals as ``SOURCE``, not typer's ``{SOURCE}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # typer's vendored click Context
        pieces = super().collect_usage_pieces(ctx)
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", p) for p in pieces]


console = make_console()
err_console = make_console(stderr=True)


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn our own errors into one readable line and exit code 1."""
    try:
        yield
    except EdgeYoloError as e:
        # escaped: messages hold brackets (`pip install edgeyolo[gpu]`, lists) that are not markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
