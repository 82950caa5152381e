"""The machine and package versions a measurement was made with (bench reports, manifests)."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgeyolo._version import __version__
from edgeyolo.cpuinfo import cpu_summary
from edgeyolo.lazy import TORCH
from edgeyolo.runtime.gpu import tensorrt_version

__all__ = ["environment"]


def environment() -> dict[str, Any]:
    """``{"machine": {cpu, cpu_flags, cores, gpu, platform}, "versions": {package: version or
    None}}``; ``cpu_flags`` names the vector extensions that change float results, int8 kernels
    and speed (:func:`edgeyolo.cpuinfo.cpu_summary`)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if TORCH.available() and TORCH.cuda.is_available():
        gpu = str(TORCH.cuda.get_device_name(0))
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "edgeyolo": __version__}
    for pkg in ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "pycuda"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    versions["tensorrt"] = tensorrt_version()
    machine = {"cpu": cpu, "cpu_flags": cpu_summary(), "cores": os.cpu_count(), "gpu": gpu}
    machine["platform"] = platform.platform()
    return {"machine": machine, "versions": versions}
