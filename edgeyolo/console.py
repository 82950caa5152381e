"""The one way edgeyolo makes a rich console: messages never wrap, tables still fit.

A message that names a file (``labels/train/000002.txt:6``) must stay copyable at any terminal
width, so consoles are made with ``soft_wrap=True``: ``print`` of text never inserts line breaks,
while tables and progress bars are still laid out to the terminal's width (they may fold).
"""

from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = False) -> Console:
    """A :class:`rich.console.Console` whose messages are never wrapped (``soft_wrap=True``)."""
    return Console(stderr=stderr, soft_wrap=True)
