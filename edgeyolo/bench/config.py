"""Settings of one ``edgeyolo bench`` run (:class:`BenchConfig`), checked in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeyolo.errors import ConfigError

__all__ = ["BenchConfig"]


@dataclass(frozen=True)
class BenchConfig:
    """What :func:`edgeyolo.bench.runner.run_bench` benches, and how.

    Paths and sequences are normalised on construction (``weights``, ``models`` and ``data`` to
    :class:`~pathlib.Path`, ``models`` and ``batch_sizes`` to tuples), so a config built from
    strings and lists equals one built from paths and tuples.

    Args:
        weights: the ``.pt`` checkpoint the exports were made from (the reference, benched too);
            ``None`` (the deploy side, no torch): parity is against the detections each export
            folder stores (``references.npz``), and speed ratios are against the first model.
        models: ``.onnx`` / ``.engine`` files, or export folders (their ``manifest.json``).
        data: a ``data.yaml``; its ``split`` is scored (the first ``max_images`` images).
            ``None`` (only without ``weights``): no mAP; the models are timed on the stored
            reference images.
        split: the split scored: ``val``, ``test`` or ``train``.
        batch_sizes: batch sizes to time; batch 1 is always timed (it is ``latency_ms``). Kept
            sorted, without repeats, with 1 added.
        warmup: untimed calls of ``infer`` per batch size.
        runs: timed calls of ``infer`` per batch size.
        threads: intra-op threads of torch and ONNX Runtime (``None``: their defaults).
        isolate: time each backend in its own spawned process.
        max_images: score the first ``max_images`` images only (``None``: all).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``auto`` runs ONNX Runtime on CPU).
        torch_half: also bench the checkpoint in fp16 (``model.half()``), with parity against
            its fp32 self. ``None``: where it runs on CUDA (on a CPU the report says it was
            not benched); ``True``: on a CPU too; ``False``: never.
        img_size: the checkpoint's input size (``None``: its own); an export's size is the
            one in its manifest.

    Raises:
        ConfigError: ``weights`` is not an existing ``.pt`` file (or is missing with no
            ``models``), ``weights`` without ``data``, or a number is out of range.
    """

    weights: Path | None
    models: tuple[Path, ...]
    data: Path | None
    split: str = "val"
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 10
    runs: int = 100
    threads: int | None = None
    isolate: bool = True
    max_images: int | None = None
    device: str = "auto"
    torch_half: bool | None = None
    img_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("weights", "data"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else Path(value))
        object.__setattr__(self, "models", tuple(Path(m) for m in self.models))
        object.__setattr__(self, "batch_sizes", tuple(sorted({1, *self.batch_sizes})))
        self._check_inputs()
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"--split must be train, val or test, got {self.split!r}")
        if self.batch_sizes[0] < 1 or self.warmup < 0 or self.runs < 1:
            raise ConfigError(
                "need batches >= 1, warmup >= 0, runs >= 1; "
                f"got {list(self.batch_sizes)}/{self.warmup}/{self.runs}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1 (or left out), got {self.threads}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"--max-images must be >= 1 (or left out), got {self.max_images}")
        if self.img_size is not None and (self.img_size < 32 or self.img_size % 32):
            raise ConfigError(f"img_size must be a positive multiple of 32, got {self.img_size}")

    def _check_inputs(self) -> None:
        if self.weights is None:
            if not self.models:
                raise ConfigError(
                    "nothing to bench: give --models (export folders or .onnx/.engine files), "
                    "and --weights to compare with their checkpoint"
                )
            return
        if self.weights.suffix != ".pt" or not self.weights.is_file():
            raise ConfigError(f"{self.weights}: no such checkpoint (--weights takes the .pt file)")
        if self.data is None:
            raise ConfigError("--weights needs --data: the checkpoint is compared on its images")

    @property
    def isolation(self) -> str:
        """How the timing was isolated, in words (the report's ``settings.isolation``)."""
        where = "each backend timed in its own process (spawn)" if self.isolate else "one process"
        if self.threads:
            return f"{where}; torch and ONNX Runtime intra-op threads pinned to {self.threads}"
        return f"{where}; thread counts at torch's and ONNX Runtime's defaults" + (
            "" if self.isolate else " (they may contend for cores)"
        )
