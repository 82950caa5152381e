"""Build fixtures: a real export folder per test, and a "GPU" that builds with the fake TensorRT
module and runs each "engine" as the ONNX graph it was built from (ONNX Runtime)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeyolo.build import engine as build_engine_module
from edgeyolo.build import tensorrt as build_tensorrt
from edgeyolo.build.references import detect_in_batches
from edgeyolo.detections import Detections, from_outputs
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from tests.build.fake_tensorrt import FakeTensorRT
from tests.runtime.conftest import busy_checkpoint, calib_folder, exported  # noqa: F401

__all__ = ["FakeGpu", "busy_checkpoint", "calib_folder", "export_folder", "exported", "fake_gpu"]


class FakeGpu:
    """TensorRT (:class:`FakeTensorRT`), pycuda and a GPU "present" for :mod:`edgeyolo.build`.

    Attributes:
        trt: the fake ``tensorrt`` module of the last :meth:`use`.
        shift: added to every box the "engine" returns (an engine that does not reproduce).
        runs: the graphs run as engines, in order.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.shift = 0.0
        self.runs: list[Path] = []
        for module in (build_engine_module, build_tensorrt):
            monkeypatch.setattr(module, "gpu_identity", lambda: ("Fake GPU", (8, 7)))
        monkeypatch.setattr(build_engine_module, "import_pycuda", lambda: None)
        monkeypatch.setattr(build_engine_module, "run_engine", self.run_engine)
        self.trt = self.use()

    def use(self, version: str = "10.3.0", **behaviour: object) -> FakeTensorRT:
        """Install a fake TensorRT ``version`` (behaviour as :class:`FakeTensorRT` takes it)."""
        self.trt = FakeTensorRT(version, **behaviour)
        self.monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        return self.trt

    def run_engine(self, engine: Path, images: np.ndarray) -> list[Detections]:
        """The "engine" just built, run as the graph it was parsed from, 2 images at a time."""
        assert Path(engine).is_file(), "the engine is run after it was written"
        graph = Path(self.trt.recorded("parse_from_file")[-1][0])
        self.runs.append(graph)
        with OnnxRuntimeSession(graph, threads=1) as session:

            def run(batch: np.ndarray) -> list[Detections]:
                out = session.run(batch)
                return from_outputs({**out, "boxes": out["boxes"] + np.float32(self.shift)})

            return detect_in_batches(run, images, max_batch=2)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return FakeGpu(monkeypatch)


@pytest.fixture
def export_folder(tmp_path: Path, exported: Path) -> Path:  # noqa: F811
    """A copy of the shared export (fp32 + fp16 graphs, references, max batch 4, conf 0.3)."""
    return Path(shutil.copytree(exported, tmp_path / "export"))
