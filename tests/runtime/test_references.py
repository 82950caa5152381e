"""edgeyolo.runtime.references: the stored reference detections round-trip, and every kind of
damage is refused with the file and what is wrong."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeyolo.data.letterbox import to_input
from edgeyolo.detections import Detections
from edgeyolo.errors import ExportError, ModelFileError
from edgeyolo.runtime.manifest import sha256_file
from edgeyolo.runtime.references import (
    NMS_KEYS,
    REFERENCES_NAME,
    image_digests,
    load_references,
    write_references,
)

NMS = {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100, "max_candidates": 3840}
NMS |= {"multi_label": False}


def frames(n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def dets(n: int) -> Detections:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 20, (n, 2)).astype(np.float32)
    return Detections(
        boxes=np.concatenate([xy, xy + 8], 1),
        scores=np.sort(rng.uniform(0.3, 1, n).astype(np.float32))[::-1].copy(),
        labels=rng.integers(0, 5, n).astype(np.int64),
    )


def make_folder(folder: Path, images: np.ndarray, detections: list[Detections]) -> Path:
    """An export folder holding only what the reader needs: manifest + references.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = write_references(folder / REFERENCES_NAME, images, detections)
    manifest = {
        "schema": "edgeyolo.export/1",
        "input": {"name": "images", "shape": ["batch", 3, images.shape[-1], images.shape[-1]]},
        "outputs": ["num_dets", "boxes", "scores", "classes"],
        "classes": [str(i) for i in range(5)],
        "nms": {**NMS, "op": "onnx::NonMaxSuppression"},
        "artifacts": [],
        "references": {**entry, "source_sha256": "ab" * 32, "nms": dict(NMS)},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def rewrite(folder: Path, **arrays: Any) -> None:
    """Replace arrays of the references file (``None`` drops one), keeping the manifest's
    sha256 in step so that only the content is wrong."""
    path = folder / REFERENCES_NAME
    with np.load(path) as data:
        content = {k: data[k] for k in data.files}
    for key, value in arrays.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **content)
    path.write_bytes(buffer.getvalue())
    set_manifest(folder, sha256=sha256_file(path))


def set_manifest(folder: Path, **fields: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["references"].update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "export", frames(), [dets(4), dets(0), dets(7)])


def test_round_trip(folder: Path) -> None:
    images = frames()
    refs = load_references(folder)
    assert len(refs) == 3 and refs.img_size == 32 and refs.path == folder / REFERENCES_NAME
    np.testing.assert_array_equal(refs.images, images)
    inputs = refs.inputs()
    assert inputs.dtype == np.float32 and inputs.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(inputs, images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(inputs, to_input(images.transpose(0, 2, 3, 1)))
    assert refs.image_sha256 == tuple(image_digests(images))
    for got, want in zip(refs.detections, [dets(4), dets(0), dets(7)], strict=True):
        for a, b in zip(got.numpy(), want.numpy(), strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    assert refs.nms == NMS and set(refs.nms) == set(NMS_KEYS)
    assert refs.source_sha256 == "ab" * 32


def test_the_reader_imports_no_torch() -> None:
    code = (
        "import sys; import edgeyolo.runtime.references; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_writer_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"must be uint8\[N, 3, S, S\], got float32"):
        write_references(tmp_path / "r.npz", frames().astype(np.float32), [dets(1)] * 3)
    with pytest.raises(ExportError, match="2 detection lists for 3 reference images"):
        write_references(tmp_path / "r.npz", frames(), [dets(1)] * 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("missing", r"references\.npz: missing; the manifest lists it"),
        ("no_entry", r"records no reference detections .*export the model again"),
        ("no_manifest", r"no manifest here"),
        ("changed", r"references\.npz: not the file the manifest describes \(sha256 differs\)"),
        ("garbage", r"references\.npz: corrupt, cannot be read"),
        ("no_array", r"references\.npz: corrupt: no scores array"),
        ("image", r"references\.npz: image 2 is not the image stored"),
        ("counts", r"counts add up to 12 detections, arrays hold"),
        ("digests", r"3 images but 3 counts and 2 digests"),
        ("format", r"corrupt: format 2, this edgeyolo reads 1"),
        ("dtype", r"images are float32\[3, 3, 32, 32\], not uint8"),
        ("count", r"holds 3 images, the manifest says 4"),
        ("nms", r"made at NMS settings .*'conf_thres': 0\.5.* the graph's are"),
        ("size", r"images of 32 px, the graph takes 64 px"),
    ],
)
def test_damage_is_refused_naming_the_file(folder: Path, damage: str, match: str) -> None:
    path = folder / REFERENCES_NAME
    manifest = json.loads((folder / "manifest.json").read_text())
    if damage == "missing":
        path.unlink()
    elif damage == "no_entry":
        del manifest["references"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "no_manifest":
        (folder / "manifest.json").unlink()
    elif damage == "changed":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
        set_manifest(folder, sha256=sha256_file(path))
    elif damage == "no_array":
        rewrite(folder, scores=None)
    elif damage == "image":
        images = frames()
        images[2, 0, 5, 5] ^= 1  # one bit of one pixel of the third image
        rewrite(folder, images=images)
    elif damage == "counts":
        rewrite(folder, counts=np.array([4, 1, 7], np.int64))
    elif damage == "digests":
        rewrite(folder, image_sha256=np.array(image_digests(frames())[:2], dtype="<U64"))
    elif damage == "format":
        rewrite(folder, format=np.asarray(2, np.int64))
    elif damage == "dtype":
        rewrite(folder, images=frames().astype(np.float32))
    elif damage == "count":
        set_manifest(folder, count=4)
    elif damage == "nms":
        set_manifest(folder, nms={**NMS, "conf_thres": 0.5})
    else:
        manifest["input"]["shape"] = ["batch", 3, 64, 64]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=match) as info:
        load_references(folder)
    if damage not in ("no_entry", "no_manifest"):
        assert str(path) in str(info.value)


def test_a_copied_folder_reads_the_same(folder: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    a, b = load_references(folder), load_references(copy)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.image_sha256 == b.image_sha256 and b.path.parent == copy
