"""The build options shared by ``edgeyolo build`` and ``edgeyolo export --engine``.

One frozen dataclass, :class:`BuildOptions`, with the units and names of ``export``'s options
(``--workspace`` in GiB, ``--timing-cache``, ``--typing``, ``--tf32``, ``--verbose``; ``--batch``
is export's name for :attr:`BuildOptions.max_batch`): :meth:`BuildOptions.from_export` reads them
from an :class:`~edgeyolo.config.ExportConfig`, so the two commands cannot drift apart.

Each option and the ``trtexec`` flag it corresponds to:

==================  ====================================================================
``workspace_gib``   ``--memPoolSize=workspace:<MiB>`` (trtexec takes MiB; 8.6: ``--workspace``)
``timing_cache``    ``--timingCacheFile=<file>``
``max_batch``       ``--minShapes/--optShapes/--maxShapes=images:Bx3xSxS`` (1 / max/2 / max;
                    with DLA all three are ``max``: DLA has no dynamic shapes)
``typing``          ``--stronglyTyped`` (strong); weak: ``--fp16`` / ``--int8 --fp16``
``tf32``            default on in trtexec; off here unless asked (``--noTF32`` when off)
``verbose``         ``--verbose`` and ``--profilingVerbosity=detailed``
``dla_core``        ``--useDLACore=<N>``
``gpu_fallback``    ``--allowGPUFallback``
==================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeyolo.config import ENGINE_TYPINGS, ExportConfig
from edgeyolo.errors import ConfigError

__all__ = ["BuildOptions", "DEFAULT_WORKSPACE_GIB"]

#: TensorRT's workspace limit when none is given, as ``edgeyolo export --workspace``'s default.
DEFAULT_WORKSPACE_GIB = ExportConfig.workspace_gib


@dataclass(frozen=True)
class BuildOptions:
    """How TensorRT builds an engine from an exported graph.

    Attributes:
        workspace_gib: TensorRT's workspace memory pool limit, GiB (``--workspace``).
        timing_cache: read if present and written back after the build; ``None``:
            ``timing.cache`` in the graph's folder (``--timing-cache``).
        max_batch: the largest batch the engine takes (``--max-batch``; export's ``--batch``);
            ``None``: the manifest's ``input.max_batch``.
        typing: ``auto``, ``strong`` or ``weak`` (:func:`edgeyolo.build.tensorrt.choose_typing`).
        tf32: let TensorRT run fp32 layers in TF32 (on by default in TensorRT; cleared here).
        verbose: TensorRT's VERBOSE log into ``tensorrt_build.log`` beside the graph, with
            detailed layer information kept in the engine.
        dla_core: build for this DLA core (Jetson Xavier/Orin), fp16 and int8 graphs only;
            ``None``: the GPU.
        gpu_fallback: with ``dla_core``, let the layers DLA cannot run fall back to the GPU.

    Raises:
        ConfigError: a value out of range, an unknown typing, or ``gpu_fallback`` without
            ``dla_core``; the message names the flag.
    """

    workspace_gib: float = DEFAULT_WORKSPACE_GIB
    timing_cache: Path | None = None
    max_batch: int | None = None
    typing: str = "auto"
    tf32: bool = False
    verbose: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = False

    def __post_init__(self) -> None:
        if not self.workspace_gib > 0:
            raise ConfigError(
                f"--workspace must be a positive number of GiB, got {self.workspace_gib}"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.typing not in ENGINE_TYPINGS:
            raise ConfigError(f"unknown --typing {self.typing!r}; use {', '.join(ENGINE_TYPINGS)}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(
                f"--dla-core must be 0 or more (the DLA core's index), got {self.dla_core}"
            )
        if self.gpu_fallback and self.dla_core is None:
            raise ConfigError(
                "--gpu-fallback only applies to DLA builds (layers DLA cannot run go to the "
                "GPU); add --dla-core N, or drop --gpu-fallback"
            )
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))

    @classmethod
    def from_export(cls, cfg: ExportConfig) -> BuildOptions:
        """The build options of an ``edgeyolo export --engine`` run (``--batch`` is the largest
        batch; export builds for the GPU, never for DLA)."""
        return cls(
            workspace_gib=cfg.workspace_gib,
            timing_cache=None if cfg.timing_cache is None else Path(cfg.timing_cache),
            max_batch=cfg.batch,
            typing=cfg.engine_typing,
            tf32=cfg.tf32,
            verbose=cfg.trt_verbose,
        )

    def batches(self, max_batch: int) -> tuple[int, int, int]:
        """``(min, opt, max)`` of the optimization profile for a largest batch ``max_batch``:
        ``1``, half of it (from 3 on), itself; with DLA all ``max_batch`` (DLA runs no dynamic
        shapes: "the profile's min, max, and opt values must be equal", TensorRT's "DLA
        Supported Layers and Restrictions")."""
        if self.dla_core is not None:
            return (max_batch, max_batch, max_batch)
        return (1, max(1, max_batch // 2) if max_batch > 2 else max_batch, max_batch)
