"""The device's fp32 compute roof, and how close a model's latency comes to it.

A convolution network cannot run one image faster than ``GFLOP per image / peak GFLOP/s`` on a
device with direct or GEMM-based convolutions (Winograd and FFT convolutions do less
arithmetic; lower precisions have their own, higher roof). ``edgeyolo bench`` measures the peak
as the best rate of a square fp32 ``torch.matmul`` (MKL / oneDNN on a CPU, cuBLAS with TF32 off
on a GPU) at the same thread count as the backends it times, and reports each backend's achieved
GFLOP/s beside it. That tells a user whether a latency target is a matter of a better runtime or
beyond the machine: a backend already near the roof cannot get much faster in fp32.

The measured rate is a practical roof, not the vendor's peak: cores × clock × FMA width is
higher, and no real kernel reaches it.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeyolo.bench.latency import time_runs
from edgeyolo.lazy import TORCH

__all__ = ["Roof", "matmul_roof", "matmul_roof_isolated"]

Timer = Callable[[], float]


@dataclass(frozen=True)
class Roof:
    """The best fp32 rate measured on ``device`` and the ``n × n × n`` product that reached it."""

    gflops_per_s: float
    device: str
    threads: int | None
    size: int
    method: str

    def floor_ms(self, gflop: float) -> float:
        """Latency in ms of ``gflop`` GFLOP of work run at this roof (a lower bound)."""
        return 1000.0 * gflop / self.gflops_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_roof(
    *,
    device: str = "cpu",
    threads: int | None = None,
    sizes: Sequence[int] = (512, 1024, 2048),
    warmup: int = 2,
    runs: int = 5,
    timer: Timer = time.perf_counter,
    max_call_s: float = 0.25,
) -> Roof:
    """Best fp32 GFLOP/s of ``torch.matmul`` over square sizes ``sizes`` (``2·n³`` FLOP each).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``; on CUDA each call is synchronized and TF32 is
            off for the measurement (it is a lower precision with its own roof).
        threads: torch intra-op threads on the CPU (``None``: torch's default); restored after.
        sizes: the ``n`` tried, in order; the fastest call of any size is the roof.
        warmup, runs: untimed and timed calls per size.
        timer: a clock in seconds (tests pass a fake one).
        max_call_s: once a size's fastest call takes longer, the sizes after it are not tried
            (a slow BLAS, such as a distribution's reference one, would take minutes at 2048
            and reach no higher rate); the method string names the sizes tried.
    """

    if not sizes or min(sizes) < 1:
        raise ValueError(f"need matrix sizes >= 1, got {list(sizes)}")
    if device == "cpu" and not TORCH.available():  # the deploy install: numpy's BLAS instead
        return _numpy_roof(sizes, warmup=warmup, runs=runs, timer=timer, max_call_s=max_call_s)
    torch = TORCH.load()  # the module itself: no lazy lookup inside the timed calls
    dev = torch.device(device)
    old_threads, old_tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    best, best_n, tried = 0.0, sizes[0], []
    try:
        gen = torch.Generator(device=dev).manual_seed(0)
        for n in sizes:
            a = torch.rand(n, n, device=dev, generator=gen)
            b = torch.rand(n, n, device=dev, generator=gen)

            def call(a: torch.Tensor = a, b: torch.Tensor = b) -> None:
                torch.matmul(a, b)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)

            ms = min(time_runs(call, warmup=warmup, runs=runs, timer=timer))
            tried.append(n)
            rate = 2.0 * n**3 / (ms / 1000.0) / 1e9 if ms > 0 else float("inf")
            if rate > best:
                best, best_n = rate, n
            if ms / 1000.0 > max_call_s:
                break
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    how = f"best fp32 torch.matmul n×n×n, n in {_sizes_note(sizes, tried)}, {runs} timed calls each"
    return Roof(gflops_per_s=best, device=str(dev), threads=threads, size=best_n, method=how)


def _sizes_note(sizes: Sequence[int], tried: Sequence[int]) -> str:
    """``[512, 1024]`` (all tried) or ``[512, 1024] (2048 not tried: one call took over the
    limit)``."""
    skipped = list(sizes)[len(tried) :]
    if not skipped:
        return str(list(tried))
    return f"{list(tried)} ({', '.join(map(str, skipped))} not tried: a call took over the limit)"


def _numpy_roof(
    sizes: Sequence[int], *, warmup: int, runs: int, timer: Timer, max_call_s: float
) -> Roof:
    """:func:`matmul_roof` on the CPU through ``numpy.matmul`` (its BLAS, at its own thread
    count: numpy cannot be pinned at run time), where torch is not installed."""
    rng = np.random.default_rng(0)
    best, best_n, tried = 0.0, sizes[0], []
    for n in sizes:
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)

        def call(a: np.ndarray = a, b: np.ndarray = b) -> None:
            np.matmul(a, b)

        ms = min(time_runs(call, warmup=warmup, runs=runs, timer=timer))
        tried.append(n)
        rate = 2.0 * n**3 / (ms / 1000.0) / 1e9 if ms > 0 else float("inf")
        if rate > best:
            best, best_n = rate, n
        if ms / 1000.0 > max_call_s:
            break
    how = (
        f"best fp32 numpy.matmul n×n×n (torch not installed; numpy's BLAS at its own thread "
        f"count), n in {_sizes_note(sizes, tried)}, {runs} timed calls each"
    )
    return Roof(gflops_per_s=best, device="cpu", threads=None, size=best_n, method=how)


def _roof_dict(**kwargs: Any) -> dict[str, Any]:
    return matmul_roof(**kwargs).to_dict()


def matmul_roof_isolated(**kwargs: Any) -> Roof:
    """:func:`matmul_roof` in a fresh spawned process, like the backends' timing."""

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return Roof(**pool.submit(_roof_dict, **kwargs).result())
