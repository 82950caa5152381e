"""The ``tensorrt`` module as a type, for the type checker only (scripts/typecheck_trt.sh).

The code receives TensorRT as a value (``import_tensorrt()``, passed down as ``trt``), which a type
checker cannot type as a module. :class:`TensorRT` is a Protocol naming the module attributes used
without a ``hasattr``/``getattr`` gate, each typed by TensorRT's own stubs; the module-level
assignment below makes mypy prove that the real module (each stub set: 8.6, 10.3, 10.13, 11.4)
has them with those types. Version-gated names are not here: they stay ``getattr`` reads.

Nothing is imported at run time (annotations are strings): this module imports on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import tensorrt

__all__ = ["TensorRT"]


class _Members(Protocol):
    """The attributes of ``tensorrt`` that edgeyolo reads un-gated (see the module docstring)."""

    Builder: type[tensorrt.Builder]
    BuilderFlag: type[tensorrt.BuilderFlag]
    DeviceType: type[tensorrt.DeviceType]
    ILogger: type[tensorrt.ILogger]
    Logger: type[tensorrt.Logger]
    MemoryPoolType: type[tensorrt.MemoryPoolType]
    NetworkDefinitionCreationFlag: type[tensorrt.NetworkDefinitionCreationFlag]
    OnnxParser: type[tensorrt.OnnxParser]
    ProfilingVerbosity: type[tensorrt.ProfilingVerbosity]
    Runtime: type[tensorrt.Runtime]
    TensorIOMode: type[tensorrt.TensorIOMode]

    def nptype(self, trt_type: tensorrt.DataType) -> type: ...


class TensorRT(_Members, Protocol):
    """:class:`_Members` and the version string (mypy matches no dunder of a module to a
    Protocol, so ``__version__`` is checked on its own below)."""

    __version__: str


if TYPE_CHECKING:
    _CONFORMS: _Members = tensorrt  # mypy: the stubs' module has every member, with its type
    _VERSION: str = tensorrt.__version__
