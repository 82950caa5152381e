"""Messages are never wrapped: one console factory, used everywhere."""

import re
from pathlib import Path

import edgeyolo
from edgeyolo.console import make_console


def test_a_long_message_stays_on_one_line_while_a_table_fits():
    from rich.table import Table

    console = make_console()
    console.width = 30
    path = "/data/set/labels/train/000002.txt:6"
    with console.capture() as cap:
        console.print(f"error: {path}: bad box, and more words after it")
        table = Table("file", "why")
        table.add_row(path, "a long reason that must fold")
        console.print(table)
    lines = cap.get().splitlines()
    assert lines[0] == f"error: {path}: bad box, and more words after it"
    assert all(len(x) <= 30 for x in lines[1:])  # tables still fit the terminal


def test_every_console_in_the_package_comes_from_make_console():
    root = Path(edgeyolo.__file__).parent
    direct = [
        f"{p.relative_to(root)}:{i}"
        for p in root.rglob("*.py")
        if p.name != "console.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bConsole\(", line)
    ]
    assert not direct, f"use edgeyolo.console.make_console() instead of Console(): {direct}"
