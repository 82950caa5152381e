"""The bench tests run on the runtime tests' export (fp32 + fp16 graphs of the busy model)."""

from __future__ import annotations

from tests.runtime.conftest import busy_checkpoint, calib_folder, exported, mnist_images  # noqa: F401

__all__ = ["busy_checkpoint", "calib_folder", "exported", "mnist_images"]
