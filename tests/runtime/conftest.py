"""One export shared by the runtime tests: fp32 + fp16 graphs of the busy random model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeyolo.config import ExportConfig
from edgeyolo.export.pipeline import export_model
from tests.export.conftest import busy_checkpoint, calib_folder, mnist_images  # noqa: F401

__all__ = ["busy_checkpoint", "calib_folder", "exported", "mnist_images"]


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    busy_checkpoint: Path,  # noqa: F811
    calib_folder: Path,  # noqa: F811
) -> Path:
    """Folder with ``model_fp32.onnx``, ``model_fp16.onnx`` and ``manifest.json``: max batch 4,
    deployment conf 0.3 (NMS IoU 0.45, 100 detections)."""
    out = tmp_path_factory.mktemp("runtime_export")
    cfg = ExportConfig(
        weights=str(busy_checkpoint),
        out=str(out),
        fp16=True,
        batch=4,
        calib=str(calib_folder),
        conf_thres=0.3,
    )
    export_model(cfg, progress=False, log=lambda _s: None)
    return out
