"""``manifest.json``: what each exported file is, what it was made from, and what it expects.

A runtime reads the manifest, not the checkpoint: input name, shape, dtype and normalisation;
output names; class names, anchors, strides and NMS thresholds; then one entry per artifact with
its precision, sha256, calibration provenance (int8) and, for engines, the TensorRT version and
GPU it was built for, so that an engine from elsewhere is refused with a message saying how to
rebuild it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgeyolo.errors import ExportError, ModelFileError
from edgeyolo.fileio import write_text_atomic

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA",
    "artifact",
    "check_file",
    "find_entry",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
SCHEMA = "edgeyolo.export/1"
_REQUIRED = ("schema", "input", "outputs", "classes", "artifacts")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: str | Path, entry: dict[str, Any] | None) -> None:
    """Check that ``path`` is the file its manifest ``entry`` describes: the one check every
    reader of an export folder (ONNX Runtime backend, bench, detect, build) makes before use.

    An entry without a ``sha256`` (or no entry) passes: there is nothing to compare against.

    Raises:
        ModelFileError: the file's sha256 differs from the entry's.
    """
    digest = (entry or {}).get("sha256")
    if digest and sha256_file(path) != digest:
        raise ModelFileError(
            f"{path} is not the file its manifest entry describes (sha256 differs): changed "
            "after export or damaged in the copy; copy the export folder again, or export again"
        )


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically; returns its path."""
    path = Path(folder) / MANIFEST_NAME
    return write_text_atomic(path, json.dumps({"schema": SCHEMA, **manifest}, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest (``path`` is the file or its folder) and check that it is one of ours."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{path}: no manifest here; export with `edgeyolo export` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    missing = [k for k in _REQUIRED if k not in data] if isinstance(data, dict) else list(_REQUIRED)
    if missing:
        raise ExportError(f"{path}: not an edgeyolo export manifest (missing {', '.join(missing)})")
    if data["schema"] != SCHEMA:
        raise ExportError(
            f"{path}: manifest schema {data['schema']!r}, this edgeyolo reads {SCHEMA!r}; "
            "export again with this version"
        )
    return data


def find_entry(
    manifest: dict[str, Any] | None,
    *,
    file: str | None = None,
    precision: str | None = None,
    kind: str | None = None,
) -> dict[str, Any] | None:
    """The first entry of ``manifest["artifacts"]`` with the given file name, precision and kind
    (``onnx``, ``engine``, ``darknet``; ``None``: any), or ``None``. The one lookup of entries."""
    want = {"file": file, "precision": precision, "kind": kind}
    for a in (manifest or {}).get("artifacts", []):
        if all(v is None or a.get(k) == v for k, v in want.items()):
            return a
    return None


def artifact(manifest: dict[str, Any], precision: str, kind: str = "onnx") -> dict[str, Any]:
    """The manifest entry of the ``kind`` (``onnx`` or ``engine``) file of ``precision``.

    Raises:
        ExportError: there is none; the message lists what the export has.
    """
    found = find_entry(manifest, precision=precision, kind=kind)
    if found is not None:
        return found
    have = ", ".join(f"{a['precision']} {a['kind']}" for a in manifest["artifacts"])
    raise ExportError(
        f"this export has no {precision} {kind} (it has: {have}); "
        f"export again with --{precision}" + (" --engine" if kind == "engine" else "")
    )
