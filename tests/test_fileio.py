"""Atomic writes: the old file or the whole new one, never a part; temp files cleaned up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeyolo.fileio import atomic_write, remove_stale_temps, write_bytes_atomic, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "sub" / "a.json", "old")
    write_bytes_atomic(path, memoryview(b"new bytes"))
    assert path.read_bytes() == b"new bytes"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failure_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a.bin", "old")
    with pytest.raises(RuntimeError, match="disk"), atomic_write(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_temps_of_dead_writers_go_and_live_ones_stay(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(done.stdout)
    stale = tmp_path / f".x.pt.{dead}.abc123.tmp"
    old_style = tmp_path / f".x.pt.{dead}.tmp"
    live = tmp_path / f".x.pt.{os.getppid()}.def456.tmp"
    for p in (stale, old_style, live):
        p.write_bytes(b"partial")
    removed = remove_stale_temps(tmp_path / "x.pt")
    assert sorted(removed) == sorted([stale, old_style])
    assert live.exists() and not stale.exists() and not old_style.exists()
