"""The deploy side's TensorRT checks: an engine runs only where it was built."""

from __future__ import annotations

import sys
import warnings

import pytest

from edgeyolo.errors import EngineMismatchError, TensorRTNotAvailableError
from edgeyolo.runtime import gpu

#: An engine's manifest entry, as ``edgeyolo.export.tensorrt.EngineInfo.to_dict`` writes it.
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
    assert "edgeyolo export --weights ... --engine" in message


def test_compat_warns_on_another_card_of_the_same_architecture() -> None:
    with pytest.warns(RuntimeWarning, match="Orin.*Jetson AGX Orin"):
        gpu.check_engine_compat(
            META, trt_version="10.3.0", gpu_name="Jetson AGX Orin", compute_capability=(8, 7)
        )
    with pytest.raises(EngineMismatchError, match="trt_version"):
        gpu.check_engine_compat(
            {"path": "m.engine"}, trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7)
        )
