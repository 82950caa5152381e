"""The deploy side's TensorRT checks: an engine runs only where it was built."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from edgeyolo.errors import ConfigError, EngineMismatchError, TensorRTNotAvailableError
from edgeyolo.runtime import gpu

#: An engine's manifest entry, as ``edgeyolo.build.tensorrt.EngineInfo.to_dict`` writes it.
META = {
    "path": "m.engine",
    "trt_version": "10.3.0",
    "gpu_name": "Orin",
    "compute_capability": [8, 7],
    "precision": "int8",
    "strongly_typed": True,
    "build_s": 12.5,
}


def test_too_old_tensorrt_is_named_with_the_version_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    old = type(sys)("tensorrt")
    old.__version__ = "8.5.3.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(
        TensorRTNotAvailableError, match=r"tensorrt >= 8\.6 .* this machine has 8\.5\.3\.1"
    ):
        gpu.import_tensorrt()
    assert gpu.tensorrt_version() is None


def test_compat_accepts_the_machine_it_was_built_for() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpu.check_engine_compat(
            META, trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7)
        )


@pytest.mark.parametrize(
    ("here", "both_sides"),
    [
        ({"trt_version": "10.3.1"}, ("10.3.0", "10.3.1")),
        ({"trt_version": "11.4.0.106"}, ("10.3.0", "11.4.0.106")),
        ({"compute_capability": (8, 6), "gpu_name": "RTX 3090"}, ("8.7", "Orin", "8.6", "3090")),
    ],
)
def test_compat_rejects_another_version_or_gpu(here: dict, both_sides: tuple[str, ...]) -> None:
    kw = {"trt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": (8, 7)} | here
    with pytest.raises(EngineMismatchError) as info:
        gpu.check_engine_compat(META, **kw)
    message = str(info.value)
    assert all(side in message for side in both_sides), message
    assert "edgeyolo build GRAPH.onnx" in message


def test_compat_warns_on_another_card_of_the_same_architecture() -> None:
    with pytest.warns(RuntimeWarning, match="Orin.*Jetson AGX Orin"):
        gpu.check_engine_compat(
            META, trt_version="10.3.0", gpu_name="Jetson AGX Orin", compute_capability=(8, 7)
        )
    with pytest.raises(EngineMismatchError, match="trt_version"):
        gpu.check_engine_compat(
            {"path": "m.engine"}, trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7)
        )


# ------------------------------------------------------------------- gpu_identity(device)


class FakeTorch:
    """``edgeyolo.lazy.TORCH`` stand-in with two CUDA devices (or none)."""

    def __init__(self, cuda: bool) -> None:
        cards = [("Card Zero", (8, 6)), ("Card One", (8, 9))]
        self.cuda = types.SimpleNamespace(
            is_available=lambda: cuda,
            device_count=lambda: len(cards) if cuda else 0,
            get_device_name=lambda i: cards[i][0],
            get_device_capability=lambda i: cards[i][1],
        )

    def available(self) -> bool:
        return True


class FakePycuda:
    """``PYCUDA`` stand-in: ``load()`` gives a driver module with ``count`` devices."""

    def __init__(self, count: int) -> None:
        class Error(Exception):
            pass

        class Device:
            def __init__(self, index: int) -> None:
                assert 0 <= index < count, "the fake was asked for a device it does not have"
                self.index = index

            @staticmethod
            def count() -> int:
                return count

            def name(self) -> str:
                return f"Jetson {self.index}"

            def compute_capability(self) -> tuple[int, int]:
                return (8, 7) if self.index == 0 else (7, 2)

        self.driver = types.SimpleNamespace(init=lambda: None, Device=Device, Error=Error)

    def load(self) -> types.SimpleNamespace:
        return self.driver


def test_gpu_identity_reports_the_device_asked_for_through_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu, "TORCH", FakeTorch(cuda=True))
    assert gpu.gpu_identity() == ("Card Zero", (8, 6))
    assert gpu.gpu_identity(1) == ("Card One", (8, 9))
    with pytest.raises(ConfigError, match=r"CUDA device 2 does not exist: .* shows 2 \(0\.\.1\)"):
        gpu.gpu_identity(2)
    with pytest.raises(ConfigError, match="negative"):
        gpu.gpu_identity(-1)


def test_gpu_identity_reports_the_device_asked_for_through_pycuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu, "TORCH", FakeTorch(cuda=False))  # CPU torch: pycuda answers
    monkeypatch.setattr(gpu, "PYCUDA", FakePycuda(count=2))
    assert gpu.gpu_identity(0) == ("Jetson 0", (8, 7))
    assert gpu.gpu_identity(1) == ("Jetson 1", (7, 2))
    with pytest.raises(ConfigError, match=r"CUDA device 5 does not exist: .* shows 2"):
        gpu.gpu_identity(5)
    monkeypatch.setattr(gpu, "PYCUDA", FakePycuda(count=0))
    with pytest.raises(TensorRTNotAvailableError, match="pycuda sees no CUDA device"):
        gpu.gpu_identity(0)
