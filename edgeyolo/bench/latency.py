"""Latency statistics and the timing loop used by ``edgeyolo bench``, in the manner of trtexec.

A run is: ``warmup`` untimed calls, then ``runs`` calls each timed on its own with a monotonic
clock (``time.perf_counter`` by default; injectable so that tests use a fake clock). Statistics
are over those per-call durations in milliseconds. Percentiles are ``numpy.percentile`` with its
default ``"linear"`` method: the p-th percentile of ``n`` sorted durations sits at position
``p / 100 * (n - 1)``, interpolated linearly between the two nearest order statistics (so p50 of
an even count is the mean of the two middle values).

Stage times (host→device copy, compute, device→host copy, postprocess) come from the backend
itself (``backend.last_times`` after each ``infer``: CUDA events on a GPU, perf_counter on a
CPU); they are averaged over the timed runs. Preprocessing (letterbox of one camera frame) is
timed here, on the CPU, because it is the same code for every backend.

A latency measured while other work held the cores is not the model's latency: on a busy machine
the bench once put a checkpoint at 691 ms that takes 39 ms on a quiet one. :func:`judge_stability`
decides, from three signals with the thresholds below, whether a run was *disturbed*; the report
then says so instead of quoting ratios as if clean.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeyolo.data.letterbox import letterbox, to_input
from edgeyolo.errors import EngineMismatchError, TensorRTNotAvailableError
from edgeyolo.lazy import CV2 as cv2
from edgeyolo.lazy import TORCH
from edgeyolo.runtime.backends import open_backend

__all__ = [
    "LOAD_PER_CORE_MAX",
    "ROOF_DRIFT_MAX",
    "SPREAD_MAX",
    "SPREAD_MIN_MS",
    "BackendTiming",
    "LatencyStats",
    "TimedBackend",
    "CpuSnapshot",
    "available_cores",
    "cpu_snapshot",
    "judge_stability",
    "load_average",
    "noisy_series",
    "others_share",
    "preprocess_frame",
    "time_backend",
    "time_model",
    "time_model_isolated",
    "time_preprocess",
    "time_runs",
]

Timer = Callable[[], float]
"""A clock in seconds (``time.perf_counter``)."""

#: Largest change of the fp32 matmul roof between the measurement before the timed runs and the
#: one after, relative to the larger of the two, for a quiet run. The roof is the fastest of 5
#: short calls per size, and it is noisy by itself: the demo's bench on a quiet machine
#: (2026-11-26, other processes 0.8 % of the CPU) read 199 then 161 GFLOP/s, a 19 % drift; beside
#: CPU hogs it fell 90 % (182 → 17). 40 % sits between the two; the direct signal for other work
#: is :data:`OTHERS_MAX`.
ROOF_DRIFT_MAX = 0.40
#: Largest p99 / p50 of one latency series (one artifact, one batch size) for a quiet run. Quiet
#: CPU series keep their p99 within 1.03-1.32× of p50 (bench/results/bench_cpu, 100 runs each); a
#: call that lost its core to another process for a scheduler slice or more takes a multiple of
#: its median, so 2× leaves room for the quiet tail and still catches a preempted one.
SPREAD_MAX = 2.0
#: ...and the p99 must also exceed p50 by this many ms: below it, a sub-millisecond (GPU) series
#: is spread by Python and timer jitter, which no other process causes.
SPREAD_MIN_MS = 1.0
#: Largest share of the machine's CPU time that *other* processes used while the timed runs went
#: on: ``/proc/stat``'s busy time of all CPUs, less this process's and its children's own CPU
#: time, over wall time × CPUs. It is read at the start and end of the timing, so unlike the load
#: average (a one-minute mean) it sees a job that starts mid-bench; a quiet machine's daemons use
#: a few percent; a quarter of the machine means another job held a core for much of the timing.
OTHERS_MAX = 0.25
#: Largest 1-minute load average per core available to the bench, read before and after the
#: timed runs. Above 1.0, runnable threads outnumber the cores, so some wait for one. The bench's
#: own intra-op threads count in the reading after the runs, but there are at most as many as
#: cores, so a reading above the core count still means other work competed.
LOAD_PER_CORE_MAX = 1.0


class TimedBackend(Protocol):
    """What :func:`time_backend` needs of a backend (``edgeyolo.runtime.backends.Backend``)."""

    last_times: Mapping[str, float]

    def infer(self, images: np.ndarray) -> Sequence[Any]: ...


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of ``n`` per-call durations, in milliseconds.

    ``throughput_ips`` is images per second at ``batch`` images per call, from the mean:
    ``batch * 1000 / mean`` (calls run back to back, so this is also the sustained rate).
    """

    n: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    batch: int = 1
    throughput_ips: float = field(default=0.0)

    @classmethod
    def from_durations(cls, durations_ms: Sequence[float], *, batch: int = 1) -> LatencyStats:
        """Statistics of ``durations_ms`` (``float[n]``, n >= 1) for calls of ``batch`` images."""
        d = np.asarray(durations_ms, dtype=np.float64)
        if d.ndim != 1 or d.size == 0:
            raise ValueError(f"need a non-empty list of durations, got shape {d.shape}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        p50, p90, p95, p99 = (float(v) for v in np.percentile(d, [50, 90, 95, 99]))
        mean = float(d.mean())
        return cls(
            n=int(d.size),
            min=float(d.min()),
            mean=mean,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            max=float(d.max()),
            batch=batch,
            throughput_ips=batch * 1000.0 / mean if mean > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def time_runs(
    fn: Callable[[], object], *, warmup: int, runs: int, timer: Timer = time.perf_counter
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times; returns each timed call's
    duration in milliseconds (``float[runs]``)."""
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    for _ in range(warmup):
        fn()
    out: list[float] = []
    for _ in range(runs):
        t0 = timer()
        fn()
        out.append((timer() - t0) * 1000.0)
    return out


@dataclass(frozen=True)
class BackendTiming:
    """End-to-end ``infer`` latency and the backend's own stage split (means over the timed runs).

    ``stages_ms`` holds every millisecond key the backend reported in ``last_times`` (e.g.
    ``h2d``, ``compute``, ``d2h``, ``postprocess``), averaged over the runs that reported it;
    ``bytes_d2h`` is the device→host bytes of one call (``None`` when not reported).
    """

    stats: LatencyStats
    stages_ms: dict[str, float]
    bytes_d2h: int | None


def time_backend(
    backend: TimedBackend,
    images: np.ndarray,
    *,
    warmup: int,
    runs: int,
    timer: Timer = time.perf_counter,
) -> BackendTiming:
    """Time ``backend.infer(images)`` (``images`` float32[B, 3, S, S]) and average its stages."""
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    bytes_d2h: list[float] = []

    for _ in range(warmup):
        backend.infer(images)
    durations: list[float] = []
    for _ in range(runs):  # the stage bookkeeping stays outside the timed call
        t0 = timer()
        backend.infer(images)
        durations.append((timer() - t0) * 1000.0)
        for key, value in dict(backend.last_times).items():
            if key == "bytes_d2h":
                bytes_d2h.append(float(value))
            elif not key.startswith("bytes_"):
                sums[key] = sums.get(key, 0.0) + float(value)
                counts[key] = counts.get(key, 0) + 1
    return BackendTiming(
        stats=LatencyStats.from_durations(durations, batch=int(images.shape[0])),
        stages_ms={k: sums[k] / counts[k] for k in sums},
        bytes_d2h=int(round(np.mean(bytes_d2h))) if bytes_d2h else None,
    )


def preprocess_frame(frame_bgr: np.ndarray, img_size: int) -> np.ndarray:
    """What a camera loop does to each frame before ``infer``: BGR→RGB, the shared letterbox,
    HWC→CHW, 0..1. ``uint8[H, W, 3]`` → ``float32[1, 3, S, S]``."""

    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    boxed, _ = letterbox(rgb, img_size)
    return to_input(boxed[None])


def time_preprocess(
    frame_bgr: np.ndarray,
    img_size: int,
    *,
    warmup: int,
    runs: int,
    timer: Timer = time.perf_counter,
) -> LatencyStats:
    """Latency of :func:`preprocess_frame` on one frame (CPU, single image)."""
    durations = time_runs(
        lambda: preprocess_frame(frame_bgr, img_size), warmup=warmup, runs=runs, timer=timer
    )
    return LatencyStats.from_durations(durations)


def time_model(
    path: str | Path,
    *,
    images: np.ndarray,
    frame: np.ndarray,
    batch_sizes: Sequence[int],
    warmup: int,
    runs: int,
    device: str = "auto",
    threads: int | None = None,
    nms: Mapping[str, float | int] | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """Open the model's backend and time ``infer`` at each batch size (``images[:b]``).

    A top-level function of plain arguments, so that :func:`time_model_isolated` can run it in a
    spawned process. ``images`` is float32[B_max, 3, S, S] (real letterboxed frames); ``frame``
    uint8[H, W, 3] BGR for the preprocessing time; ``nms`` holds the thresholds of a ``.pt``, and
    ``half`` runs it in fp16 (CUDA only).

    Returns:
        ``{"ok": True, "backend", "precision", "device", "threads", "skipped": [str], "batches":
        {"1": {LatencyStats fields, "stages_ms": {...}, "bytes_d2h"}, ...}}``, where ``stages_ms``
        includes ``preprocess`` (``b`` frames, one after the other); or ``{"ok": False,
        "error": str, "unavailable": bool}`` (``unavailable``: TensorRT/pycuda missing or an
        engine built elsewhere). A batch size other than 1 that fails is listed in ``skipped``.
    """
    kw: dict[str, Any] = {**(nms or {}), "half": half} if Path(path).suffix == ".pt" else {}
    try:
        with open_backend(path, device=device, threads=threads, **kw) as b:
            pre = time_preprocess(frame, images.shape[-1], warmup=min(warmup, 2), runs=runs)
            out: dict[str, Any] = {"ok": True, "backend": b.name, "precision": b.precision}
            out["device"] = b.where
            torch_threads = TORCH.get_num_threads() if TORCH.available() else None
            out["threads"] = {"torch": torch_threads, "onnxruntime": threads}
            out.update(batches={}, skipped=[])
            for bs in sorted(batch_sizes):
                if b.name == "tensorrt" and bs > b.max_batch:
                    out["skipped"].append(f"batch {bs}: over the engine's max batch {b.max_batch}")
                    continue
                try:
                    t = time_backend(b, np.ascontiguousarray(images[:bs]), warmup=warmup, runs=runs)
                except Exception as e:
                    if bs == 1:
                        raise
                    out["skipped"].append(f"batch {bs}: {one_line(e)}")
                    continue
                out["batches"][str(bs)] = {
                    **t.stats.to_dict(),
                    "stages_ms": {"preprocess": pre.mean * bs, **t.stages_ms},
                    "bytes_d2h": t.bytes_d2h,
                }
            return out
    except Exception as e:  # reported per model; the caller decides what is fatal
        unavailable = (TensorRTNotAvailableError, EngineMismatchError, ImportError)
        return {"ok": False, "error": one_line(e), "unavailable": isinstance(e, unavailable)}


def time_model_isolated(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`time_model` in a fresh spawned process (nothing else loaded there competes for
    cores); a child that dies is reported as ``{"ok": False, ...}``."""

    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(time_model, path, **kwargs).result()
    except Exception as e:  # BrokenProcessPool: a crash inside a runtime
        return {
            "ok": False,
            "error": f"timing process failed: {one_line(e)}",
            "unavailable": False,
        }


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (``os.getloadavg()[0]``), ``None`` where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class CpuSnapshot:
    """Counters to tell this process's CPU use from the rest of the machine's (Linux only)."""

    wall_s: float  #: time.monotonic()
    busy_s: float  #: all CPUs' non-idle time from /proc/stat, in seconds
    own_s: float  #: this process's and its reaped children's user + system time
    cpus: int  #: CPUs counted in /proc/stat


def cpu_snapshot(stat: str | Path = "/proc/stat") -> CpuSnapshot | None:
    """Read the counters now; ``None`` where ``/proc/stat`` is absent (not Linux)."""
    try:
        lines = Path(stat).read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    fields = [
        int(v) for v in lines[0].split()[1:]
    ]  # user nice system idle iowait irq softirq steal
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    cpus = sum(1 for x in lines if x.startswith("cpu") and x[3:4].isdigit())
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    busy = (sum(fields[:8]) - idle) / ticks
    return CpuSnapshot(time.monotonic(), busy, own, max(cpus, 1))


def others_share(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """The share of the machine's CPU time other processes used between two snapshots (0..1;
    ``None`` when either is missing or no time passed)."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return min(max(others / ((after.wall_s - before.wall_s) * after.cpus), 0.0), 1.0)


def noisy_series(batches: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Why each of an artifact's latency series is too spread to trust (empty when none is).

    Args:
        batches: batch size (``"1"``, ``"8"``, ...) → statistics holding at least ``p50`` and
            ``p99`` in ms (:class:`LatencyStats` fields).

    A series is noisy when ``p99 > SPREAD_MAX * p50`` and ``p99 - p50 > SPREAD_MIN_MS``.
    """
    out = []
    for b, s in sorted(batches.items(), key=lambda kv: int(kv[0])):
        p50, p99 = float(s["p50"]), float(s["p99"])
        if p50 > 0 and p99 > SPREAD_MAX * p50 and p99 - p50 > SPREAD_MIN_MS:
            out.append(
                f"batch {b}: p99 {p99:.1f} ms is {p99 / p50:.1f}× its p50 {p50:.1f} ms "
                f"(> {SPREAD_MAX:g}×)"
            )
    return out


def judge_stability(
    *,
    roof_before: float | None,
    roof_after: float | None,
    load_before: float | None,
    load_after: float | None,
    cores: int,
    noisy: Mapping[str, Sequence[str]],
    others: float | None = None,
) -> dict[str, Any]:
    """Whether a bench run was disturbed by other work on the machine, and why (pure).

    Args:
        roof_before, roof_after: the CPU's fp32 matmul roof in GFLOP/s measured just before the
            first and just after the last timed run (``None``: not measured).
        load_before, load_after: the 1-minute load average at the same moments (``None``:
            unknown on this OS).
        cores: the CPUs available to the bench.
        noisy: artifact → its :func:`noisy_series` reasons.
        others: :func:`others_share` over the timed runs (``None``: not measured).

    Returns:
        JSON-ready ``{"disturbed", "machine_busy", "reasons": [str], "roof_before_gflops",
        "roof_after_gflops", "roof_drift", "loadavg_before", "loadavg_after", "cores",
        "thresholds"}``. ``disturbed``: any signal crossed its threshold (:data:`ROOF_DRIFT_MAX`,
        :data:`LOAD_PER_CORE_MAX`, :data:`SPREAD_MAX`); ``machine_busy``: the roof or the load
        did, so every timing of the run is suspect, not only the noisy series. A signal not
        measured is not judged.
    """
    if cores < 1:
        raise ValueError(f"need cores >= 1, got {cores}")
    reasons: list[str] = []
    drift = None
    if (
        roof_before is not None
        and roof_after is not None
        and (0 < min(roof_before, roof_after) <= max(roof_before, roof_after) < float("inf"))
    ):
        drift = abs(roof_after - roof_before) / max(roof_before, roof_after)
        if drift > ROOF_DRIFT_MAX:
            moved = "fell" if roof_after < roof_before else "rose"
            reasons.append(
                f"the fp32 roof {moved} {drift:.0%} between before and after the timed runs "
                f"({roof_before:.0f} → {roof_after:.0f} GFLOP/s; > {ROOF_DRIFT_MAX:.0%})"
            )
    for when, load in (("before", load_before), ("after", load_after)):
        if load is not None and load > LOAD_PER_CORE_MAX * cores:
            reasons.append(
                f"1-minute load average {load:.1f} {when} the timed runs, over the {cores} "
                "cores the bench can use"
            )
    if others is not None and others > OTHERS_MAX:
        reasons.append(
            f"other processes used {others:.0%} of the machine's CPU time during the timed runs "
            f"(> {OTHERS_MAX:.0%})"
        )
    machine_reasons = len(reasons)
    reasons += [f"{key}: {why}" for key, whys in noisy.items() for why in whys]
    return {
        "disturbed": bool(reasons),
        "machine_busy": machine_reasons > 0,
        "reasons": reasons,
        "roof_before_gflops": roof_before,
        "roof_after_gflops": roof_after,
        "roof_drift": drift,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cores": cores,
        "others_cpu_share": others,
        "thresholds": {
            "others_cpu_share": OTHERS_MAX,
            "roof_drift": ROOF_DRIFT_MAX,
            "p99_over_p50": SPREAD_MAX,
            "p99_minus_p50_ms": SPREAD_MIN_MS,
            "loadavg_per_core": LOAD_PER_CORE_MAX,
        },
    }


def one_line(e: BaseException) -> str:
    """``Type: message`` of an exception on one line, at most 500 characters."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__
