"""What this machine offers TensorRT: the bindings, the GPU, and whether an engine fits them.

The deploy side's checks, shared by engine building (:mod:`edgeyolo.build.tensorrt`) and
running (:mod:`edgeyolo.runtime.tensorrt`): an engine runs only on the TensorRT version and the
GPU architecture it was built for. tensorrt, pycuda and torch are imported on first use
(:mod:`edgeyolo.lazy`), so this module imports on any machine.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from edgeyolo.errors import ConfigError, EngineMismatchError, TensorRTNotAvailableError
from edgeyolo.lazy import TORCH, lazy_import

__all__ = [
    "PYCUDA",
    "TENSORRT",
    "check_engine_compat",
    "gpu_identity",
    "import_pycuda",
    "import_tensorrt",
    "tensorrt_version",
]

REBUILD = "rebuild it on this machine from its export folder: `edgeyolo build GRAPH.onnx`"

#: TensorRT's Python bindings: 8.6 is the oldest version the build and runtime code handle.
TENSORRT = lazy_import(
    "tensorrt",
    min_version="8.6",
    install="on a Jetson `sudo apt install python3-libnvinfer` (JetPack), on a desktop GPU "
    "machine `pip install tensorrt`",
    error=TensorRTNotAvailableError,
    needed_for="TensorRT engines",
)
#: CUDA buffers, streams and events for the TensorRT backend.
PYCUDA = lazy_import(
    "pycuda.driver",
    min_version="2022.1",
    install="`pip install pycuda` or `pip install edgeyolo[gpu]` (it compiles against the CUDA "
    "toolkit: nvcc must be on PATH)",
    error=TensorRTNotAvailableError,
    needed_for="the TensorRT backend's CUDA buffers and streams",
)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTNotAvailableError` saying what to install."""
    return TENSORRT.load()


def import_pycuda() -> ModuleType:
    """``pycuda.driver``, or :class:`TensorRTNotAvailableError` saying how to install it."""
    return PYCUDA.load()


def tensorrt_version() -> str | None:
    """``tensorrt.__version__``, or None where TensorRT cannot be imported."""
    return str(TENSORRT.load().__version__) if TENSORRT.available() else None


def gpu_identity(device: int = 0) -> tuple[str, tuple[int, int]]:
    """Name and compute capability of CUDA device ``device``, via torch.cuda, else pycuda.

    Args:
        device: CUDA device index, as CUDA numbers the visible devices (``CUDA_VISIBLE_DEVICES``).

    Raises:
        ConfigError: ``device`` is negative or beyond the devices this machine has.
        TensorRTNotAvailableError: no CUDA device can be seen (no CUDA torch, no pycuda, or
            CUDA fails to initialise).
    """
    if device < 0:
        raise ConfigError(f"CUDA device index {device} is negative; give 0 for the first GPU")
    if TORCH.available() and TORCH.cuda.is_available():
        _check_index(device, int(TORCH.cuda.device_count()))
        major, minor = TORCH.cuda.get_device_capability(device)
        return str(TORCH.cuda.get_device_name(device)), (int(major), int(minor))
    try:
        cuda = PYCUDA.load()
    except TensorRTNotAvailableError as exc:
        raise TensorRTNotAvailableError(
            "no CUDA GPU is visible (torch.cuda.is_available() is False and pycuda is not "
            "installed); run this on the GPU machine the engine is for, with a CUDA build of "
            "torch or `pip install pycuda`"
        ) from exc
    try:
        cuda.init()
        count = int(cuda.Device.count())
        if count < 1:
            raise TensorRTNotAvailableError(
                "pycuda sees no CUDA device; check the driver (`nvidia-smi`) and "
                "CUDA_VISIBLE_DEVICES, and run this on the GPU machine the engine is for"
            )
        _check_index(device, count)
        gpu = cuda.Device(device)
        major, minor = gpu.compute_capability()
        return str(gpu.name()), (int(major), int(minor))
    except cuda.Error as exc:
        raise TensorRTNotAvailableError(
            f"CUDA initialisation failed ({exc}); check the driver with `nvidia-smi`"
        ) from exc


def _check_index(device: int, count: int) -> None:
    """``device`` must name one of the ``count`` visible CUDA devices."""
    if device >= count:
        raise ConfigError(
            f"CUDA device {device} does not exist: this machine shows {count} "
            f"(0..{count - 1}); check the device index and CUDA_VISIBLE_DEVICES"
        )


def check_engine_compat(
    engine_meta: dict[str, Any],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
) -> None:
    """Raise :class:`EngineMismatchError` unless the engine in ``engine_meta`` can run here.

    The TensorRT version must match exactly: a serialized plan records the full library version
    and TensorRT refuses a plan from any other one (version-compatible plans are not built here).
    The compute capability must match: kernels are compiled per SM architecture. A different GPU
    name with the same compute capability (e.g. two sm_86 cards) is allowed, as TensorRT itself
    allows it, with a :class:`RuntimeWarning`, since tactics were timed on the other model.
    """
    try:
        built_version = str(engine_meta["trt_version"])
        built_cc = tuple(int(v) for v in engine_meta["compute_capability"])
        built_gpu = str(engine_meta.get("gpu_name", "?"))
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineMismatchError(
            f"the engine's manifest entry lacks a valid {exc} field, so its build target is "
            f"unknown; {REBUILD}"
        ) from exc
    here_cc = tuple(int(v) for v in compute_capability)
    if built_version != str(trt_version):
        raise EngineMismatchError(
            f"engine built with TensorRT {built_version}, but this machine runs TensorRT "
            f"{trt_version}; engines do not move between TensorRT versions: {REBUILD}"
        )
    if built_cc != here_cc:
        raise EngineMismatchError(
            f"engine built for {built_gpu} (compute capability {_cc(built_cc)}), but this "
            f"machine has {gpu_name} (compute capability {_cc(here_cc)}); {REBUILD}"
        )
    if built_gpu != gpu_name:
        warnings.warn(
            f"engine built on {built_gpu}, running on {gpu_name} (both compute capability "
            f"{_cc(here_cc)}): it runs, but its kernels were timed on the other card; for best "
            f"speed {REBUILD}",
            RuntimeWarning,
            stacklevel=2,
        )


def _cc(cc: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in cc)
