"""Latency statistics on a fake clock, the timing loop, and the backend stage averaging."""

from __future__ import annotations

import numpy as np
import pytest

from edgeyolo.runtime.latency import (
    LatencyStats,
    preprocess_frame,
    time_backend,
    time_preprocess,
    time_runs,
)

# Ten calls lasting 1..10 ms, in a scrambled order.
DURATIONS_MS = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 9.0, 7.0, 8.0]


class FakeClock:
    """A clock that a call moves forward by the next scripted duration (seconds)."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.now = 100.0
        self.durations = iter(durations_ms)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def tick(self) -> None:
        self.now += next(self.durations) / 1000.0


def test_stats_of_a_known_sequence_are_exact():
    s = LatencyStats.from_durations(DURATIONS_MS, batch=4)
    assert (s.n, s.min, s.max, s.mean) == (10, 1.0, 10.0, 5.5)
    # numpy 'linear': position q * (n - 1) = 4.5, 8.1, 8.55, 8.91 in the sorted 1..10.
    assert s.p50 == pytest.approx(5.5)
    assert s.p90 == pytest.approx(9.1)
    assert s.p95 == pytest.approx(9.55)
    assert s.p99 == pytest.approx(9.91)
    assert s.throughput_ips == pytest.approx(4 * 1000 / 5.5)
    assert set(s.to_dict()) == {"n", "min", "mean", "p50", "p90", "p95", "p99", "max"} | {
        "batch",
        "throughput_ips",
    }


def test_stats_reject_nothing_to_measure():
    with pytest.raises(ValueError, match="non-empty"):
        LatencyStats.from_durations([])
    with pytest.raises(ValueError, match="batch"):
        LatencyStats.from_durations([1.0], batch=0)


def test_time_runs_times_only_the_timed_calls_on_the_injected_clock():
    clock = FakeClock([99.0, 99.0] + DURATIONS_MS)  # the two warm-up calls last 99 ms
    calls = []

    def fn() -> None:
        calls.append(1)
        clock.tick()

    got = time_runs(fn, warmup=2, runs=10, timer=clock)
    assert len(calls) == 12 and clock.reads == 20
    assert got == pytest.approx(DURATIONS_MS)
    s = LatencyStats.from_durations(got)
    assert (s.p50, s.p99) == (pytest.approx(5.5), pytest.approx(9.91))
    with pytest.raises(ValueError, match="runs >= 1"):
        time_runs(fn, warmup=0, runs=0)


class FakeBackend:
    """Follows the Backend contract; reports scripted stage times and moves the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.last_times: dict[str, float] = {}

    def infer(self, images: np.ndarray) -> list[object]:
        self.calls += 1
        self.clock.tick()
        self.last_times = {"compute": float(self.calls), "postprocess": 0.5, "bytes_d2h": 2404.0}
        return [object() for _ in range(len(images))]


def test_time_backend_averages_the_backends_own_stages():
    clock = FakeClock([50.0] + [2.0, 4.0, 6.0])
    b = FakeBackend(clock)
    t = time_backend(b, np.zeros((3, 3, 32, 32), np.float32), warmup=1, runs=3, timer=clock)
    assert t.stats.n == 3 and t.stats.mean == pytest.approx(4.0) and t.stats.batch == 3
    assert t.stages_ms == pytest.approx({"compute": 3.0, "postprocess": 0.5})  # calls 2, 3, 4
    assert t.bytes_d2h == 2404


def test_preprocess_is_the_shared_letterbox_in_chw_0_to_1():
    frame = np.zeros((60, 100, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    x = preprocess_frame(frame, 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert x[0, 2, 32, 32] == 1.0 and x[0, 0, 32, 32] == 0.0  # blue is channel 2 in RGB
    assert x[0, 0, 0, 0] == pytest.approx(114 / 255)  # the letterbox's padding row
    s = time_preprocess(frame, 64, warmup=1, runs=3)
    assert s.n == 3 and s.min > 0
