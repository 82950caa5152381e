"""Exception classes. Each message says what is wrong, where, and what to do about it.

The CLI turns any :class:`EdgeYoloError` into one readable line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class EdgeYoloError(Exception):
    """Base class of every error edgeyolo raises on purpose."""


class DataError(EdgeYoloError):
    """Bad input data: a malformed annotation line, an unknown class, a missing or corrupt image.

    ``file`` and ``line`` (1-based) name the place; either may be ``None`` when it does not apply.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None):
        self.file = None if file is None else str(file)
        self.line = line
        self.reason = message
        where = ""
        if self.file is not None:
            where = f"{self.file}:{line}: " if line is not None else f"{self.file}: "
        super().__init__(f"{where}{message}")


class ConfigError(EdgeYoloError):
    """An impossible or inconsistent setting (unknown model name, bad anchors, bad data.yaml)."""


class CheckpointError(EdgeYoloError):
    """A checkpoint that is not ours, is truncated, or does not fit the model it is loaded into."""


class TrainingDivergedError(EdgeYoloError):
    """The loss became NaN or infinite."""

    def __init__(self, *, epoch: int, step: int, components: dict[str, float]):
        self.epoch = epoch
        self.step = step
        self.components = components
        parts = ", ".join(f"{k}={v:.4g}" for k, v in components.items())
        super().__init__(
            f"loss is not finite at epoch {epoch}, step {step} ({parts}); "
            "lower --lr, raise --warmup-epochs, or check the labels of this batch"
        )


class ExportError(EdgeYoloError):
    """An export step failed: tracing, onnxsim, a precision variant, or an accuracy budget."""


class CalibrationError(ExportError):
    """The INT8 calibration set is missing, empty or holds unreadable images."""


class AccuracyBudgetError(ExportError):
    """INT8 stays beyond ``--int8-max-drop`` of fp32; the message lists what was tried."""


class TensorRTNotAvailableError(ExportError):
    """TensorRT's Python bindings (or its libraries) cannot be imported on this machine."""


class EngineBuildError(ExportError):
    """TensorRT's ONNX parser or builder rejected the graph; the message names the nodes."""


class EngineMismatchError(EdgeYoloError):
    """An engine built for another TensorRT version or GPU than the one running it."""


class ModelFileError(ExportError):
    """A model file (``.pt``, ``.onnx``, ``.engine``) that is missing, damaged or not ours.

    A subclass of :class:`ExportError` because exported graphs and engines are what
    ``edgeyolo export`` writes: code that caught ``ExportError`` for a missing or unreadable ONNX
    file still catches this.
    """


class RuntimeBackendError(EdgeYoloError):
    """A backend (ONNX Runtime, TensorRT, CUDA) failed to open or run a model that loaded.

    The message names the model, the backend and the batch it was given, and what to try.
    """


class MissingDependencyError(EdgeYoloError):
    """An optional package (matplotlib, torch on the deploy side) is absent or too old.

    TensorRT and pycuda raise :class:`TensorRTNotAvailableError` instead (an :class:`ExportError`,
    as before); both messages name the package, the version needed and how to install it.
    """
