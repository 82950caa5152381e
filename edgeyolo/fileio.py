"""Atomic file writes: every file edgeyolo writes appears whole or not at all.

A crash (or SIGKILL) at any moment leaves the previous file or the new one, never a partial one:
the bytes go to ``.<name>.<pid>.<random>.tmp`` in the same folder, are fsync'ed, then renamed
over ``path`` (``os.replace`` is atomic within one file system).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "remove_stale_temps", "write_bytes_atomic", "write_text_atomic"]


@contextmanager
def atomic_write(path: str | Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` is replaced when the block ends
    without an exception; on one, the temporary file is removed and ``path`` is untouched.

    ``mode``: the file's permissions (``mkstemp`` alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: Any) -> Path:
    """Write a buffer (``bytes``, or anything with the buffer protocol, such as TensorRT's
    ``IHostMemory``) to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as f:
        f.write(memoryview(data))
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files of writers of ``path`` that were killed mid-write (their pid
    no longer runs); a live writer's file, and this process's, are left alone. Returns the
    files removed."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2 : -len(".tmp")].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
            removed.append(stale)
        except PermissionError:  # a live process of another user
            pass
    return removed
