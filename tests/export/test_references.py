"""edgeyolo.export.references: every export stores the PyTorch model's detections of its first
calibration frames, exactly as the model makes them, for parity on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeyolo.config import ExportConfig
from edgeyolo.errors import CalibrationError
from edgeyolo.export.calib import find_images, load_calibration
from edgeyolo.export.pipeline import torch_reference
from edgeyolo.export.references import COUNT, reference_frames
from edgeyolo.models.checkpoint import load_model
from edgeyolo.runtime.manifest import read_manifest, sha256_file
from edgeyolo.runtime.references import load_references
from tests.runtime.conftest import busy_checkpoint, calib_folder, exported  # noqa: F401


def test_an_export_stores_the_models_detections_of_its_calibration_frames(
    exported: Path,  # noqa: F811
    busy_checkpoint: Path,  # noqa: F811
    calib_folder: Path,  # noqa: F811
) -> None:
    manifest = read_manifest(exported)
    entry = manifest["references"]
    refs = load_references(exported)
    files = find_images(calib_folder)[:COUNT]
    assert len(refs) == entry["count"] == len(files) > 0
    assert entry["source_sha256"] == sha256_file(busy_checkpoint) == manifest["source"]["sha256"]
    assert str(calib_folder) in entry["images_from"] and files[0].name in entry["images_from"]
    # the frames are the calibration preprocessing, bit for bit
    calib = load_calibration(calib_folder, img_size=refs.img_size, max_images=COUNT, progress=False)
    np.testing.assert_array_equal(refs.inputs(), calib.images)
    # the detections are the model's at the graph's own NMS settings, exactly
    cfg = ExportConfig(weights=str(busy_checkpoint), conf_thres=0.3)
    assert refs.nms == {k: manifest["nms"][k] for k in refs.nms}
    assert refs.nms["conf_thres"] == cfg.conf_thres
    net, _ = load_model(busy_checkpoint, device=torch.device("cpu"))
    want = torch_reference(net, refs.inputs(), cfg=cfg)
    assert sum(len(d) for d in want) == entry["detections"] > 0
    for got, ref in zip(refs.detections, want, strict=True):
        for a, b in zip(got.numpy(), ref.numpy(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_without_calibration_images_the_frames_are_seeded_noise(tmp_path: Path) -> None:
    frames, where = reference_frames(tmp_path / "none", 64)
    again, _ = reference_frames(tmp_path / "none", 64)
    assert frames.shape == (COUNT, 3, 64, 64) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, again)
    assert where.startswith("random noise (seed 0): no images in") and "none" in where


def test_an_unreadable_calibration_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CalibrationError, match=r"calibration image .*a\.jpg cannot be read"):
        reference_frames(tmp_path, 64)
