"""Latency statistics on a fake clock, the timing loop, and the backend stage averaging."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgeyolo.bench.latency import (
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


QUIET = {
    "roof_before": 100.0,
    "roof_after": 95.0,  # 5 % lower: within ROOF_DRIFT_MAX
    "load_before": 1.5,
    "load_after": 2.0,  # = the cores: not above them
    "cores": 2,
    "noisy": {},
}


def test_a_run_within_every_threshold_is_not_disturbed():
    from edgeyolo.bench.latency import judge_stability

    v = judge_stability(**QUIET)
    assert (v["disturbed"], v["machine_busy"], v["reasons"]) == (False, False, [])
    assert v["roof_drift"] == pytest.approx(0.05)
    assert (v["roof_before_gflops"], v["roof_after_gflops"]) == (100.0, 95.0)
    assert (v["loadavg_before"], v["loadavg_after"], v["cores"]) == (1.5, 2.0, 2)
    assert v["thresholds"]["roof_drift"] == 0.40 and v["thresholds"]["p99_over_p50"] == 2.0
    # 19 %: a quiet machine's own roof noise (199 -> 161 GFLOP/s in the demo's bench)
    assert not judge_stability(**{**QUIET, "roof_before": 199.0, "roof_after": 161.0})["disturbed"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"roof_after": 55.0}, "the fp32 roof fell 45% between before and after"),
        ({"roof_before": 50.0}, "the fp32 roof rose 47% between before and after"),
        ({"load_before": 2.5}, "1-minute load average 2.5 before the timed runs, over the 2 cores"),
        ({"load_after": 6.0, "cores": 4}, "1-minute load average 6.0 after the timed runs, over"),
    ],
)
def test_a_busy_machine_is_disturbed_and_every_timing_suspect(change, says):
    from edgeyolo.bench.latency import judge_stability

    v = judge_stability(**{**QUIET, **change})
    assert v["disturbed"] and v["machine_busy"]
    assert len(v["reasons"]) == 1 and v["reasons"][0].startswith(says)


def test_a_noisy_series_disturbs_the_run_but_not_the_machine():
    from edgeyolo.bench.latency import judge_stability, noisy_series

    batches = {
        "1": {"p50": 10.0, "p99": 25.0},  # 2.5x, 15 ms over: a preempted call
        "8": {"p50": 80.0, "p99": 150.0},  # 1.9x: a quiet tail
        "2": {"p50": 0.2, "p99": 1.0},  # 5x but 0.8 ms over: sub-ms jitter, not other work
    }
    why = noisy_series(batches)
    assert why == ["batch 1: p99 25.0 ms is 2.5× its p50 10.0 ms (> 2×)"]
    assert noisy_series({"1": {"p50": 10.0, "p99": 20.0}}) == []  # exactly 2x is not beyond
    v = judge_stability(**{**QUIET, "noisy": {"model.onnx": why}})
    assert v["disturbed"] and not v["machine_busy"]
    assert v["reasons"] == [f"model.onnx: {why[0]}"]


def test_signals_not_measured_are_not_judged():
    from edgeyolo.bench.latency import judge_stability

    v = judge_stability(
        roof_before=None, roof_after=10.0, load_before=None, load_after=None, cores=1, noisy={}
    )
    assert not v["disturbed"] and v["roof_drift"] is None
    with pytest.raises(ValueError, match="cores >= 1"):
        judge_stability(**{**QUIET, "cores": 0})


def test_load_and_cores_are_read_from_the_os():
    from edgeyolo.bench.latency import available_cores, load_average

    assert available_cores() >= 1
    load = load_average()
    assert load is None or load >= 0.0


def test_others_share_counts_what_other_processes_used(tmp_path):
    from edgeyolo.bench.latency import CpuSnapshot, judge_stability, others_share

    a = CpuSnapshot(wall_s=100.0, busy_s=1000.0, own_s=50.0, cpus=2)
    # 10 s on 2 CPUs: 20 CPU-s; the machine was busy 18 of them, 8 of which were ours
    b = CpuSnapshot(wall_s=110.0, busy_s=1018.0, own_s=58.0, cpus=2)
    assert others_share(a, b) == pytest.approx(0.5)
    quiet = CpuSnapshot(wall_s=110.0, busy_s=1008.5, own_s=58.0, cpus=2)
    assert others_share(a, quiet) == pytest.approx(0.025)
    assert others_share(a, None) is None and others_share(b, a) is None
    v = judge_stability(**{**QUIET, "others": 0.5})
    assert v["disturbed"] and v["machine_busy"] and "other processes used 50%" in v["reasons"][0]
    assert not judge_stability(**{**QUIET, "others": 0.025})["disturbed"]


def test_cpu_snapshot_reads_proc_stat(tmp_path):
    from edgeyolo.bench.latency import cpu_snapshot

    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n"
        "cpu1 50 0 25 400 5 0 0 20 0 0\nintr 1\n"
    )
    snap = cpu_snapshot(stat)
    ticks = os.sysconf("SC_CLK_TCK")
    assert snap is not None and snap.cpus == 2
    assert snap.busy_s == pytest.approx((100 + 50 + 40) / ticks)  # user + system + steal
    assert cpu_snapshot(tmp_path / "absent") is None
