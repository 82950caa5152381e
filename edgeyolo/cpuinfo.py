"""The CPU's vector extensions, read from ``/proc/cpuinfo`` (no torch, no extra package).

Float results, ONNX Runtime's int8 kernels and speed differ between an AVX2-only CPU and one with
AVX-512 and VNNI, so reports name the flags beside every figure and int8 graphs record the CPU
they target.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

#: The extensions worth naming beside a figure, in the order they are printed: the vector width,
#: the int8 dot products ONNX Runtime's kernels use, and native bfloat16 (what decides
#: ``edgeyolo train --cpu-bf16 auto``).
REPORTED = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """All flags of the first processor in ``cpuinfo`` (empty where the file is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm64
            return frozenset(value.split())
    return frozenset()


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has an int8 dot-product instruction ONNX Runtime's u8s8 kernels use
    (AVX512-VNNI or AVX-VNNI): there, full-range int8 weights do not saturate."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_vnni", "avx_vnni"} & flags)


def cpu_summary(flags: frozenset[str] | None = None) -> str:
    """One line for a report, e.g. ``x86_64 avx2 avx512f avx512_vnni``."""
    flags = cpu_flags() if flags is None else flags
    named = [f for f in REPORTED if f in flags]
    if not flags:
        return f"{platform.machine()} (flags unknown)"
    return " ".join([platform.machine(), *named]) if named else f"{platform.machine()} (no AVX2)"
