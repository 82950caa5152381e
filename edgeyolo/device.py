"""Choosing the torch device from a user's ``--device`` string (torch is imported on first use)."""

from __future__ import annotations

from typing import Any

from edgeyolo.errors import ConfigError
from edgeyolo.lazy import TORCH


def select_device(spec: str = "auto") -> Any:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or an index ``N``.

    Returns:
        a ``torch.device``.
    """
    torch = TORCH.load()
    spec = spec.strip().lower()
    if spec in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.isdigit():
        spec = f"cuda:{spec}"
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(
            f"--device {spec!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec}: CUDA is not available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type != "cpu":
        raise ConfigError(f"--device {spec}: only cpu and cuda devices are supported")
    return device
