import hashlib
import json

import pytest

from edgeyolo.errors import ExportError
from edgeyolo.runtime.manifest import (
    SCHEMA,
    artifact,
    read_manifest,
    sha256_file,
    write_manifest,
)

BODY = {
    "input": {"name": "images"},
    "outputs": ["num_dets"],
    "classes": ["0"],
    "artifacts": [{"kind": "onnx", "precision": "fp32", "file": "model_fp32.onnx"}],
}


def test_round_trip_and_lookup(tmp_path):
    path = write_manifest(tmp_path, BODY)
    assert path.name == "manifest.json" and not list(tmp_path.glob("*.tmp"))
    m = read_manifest(tmp_path)
    assert m["schema"] == SCHEMA and m["classes"] == ["0"]
    assert artifact(m, "fp32")["file"] == "model_fp32.onnx"
    with pytest.raises(ExportError, match=r"no int8 engine .*has: fp32 onnx.*--int8 --engine"):
        artifact(m, "int8", "engine")


def test_sha256_matches_hashlib(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1000)
    assert sha256_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_bad_manifests_are_named(tmp_path):
    with pytest.raises(ExportError, match="no manifest here"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"input": 1,\n oops}')
    with pytest.raises(ExportError, match=r"manifest.json:2: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"input": 1}))
    with pytest.raises(ExportError, match="not an edgeyolo export manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**BODY, "schema": "edgeyolo.export/0"}))
    with pytest.raises(ExportError, match="schema 'edgeyolo.export/0'.*export again"):
        read_manifest(tmp_path)
