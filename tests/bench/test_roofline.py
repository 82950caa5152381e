"""The fp32 matmul roof on a fake clock (exact) and on this machine (sane), and its floor."""

from __future__ import annotations

import pytest
import torch

from edgeyolo.bench.roofline import Roof, matmul_roof


class StepClock:
    """Every read moves the clock on by ``step`` seconds, so each timed call lasts ``step``."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_roof_on_a_fake_clock_is_the_largest_products_rate():
    # Every call "takes" 1 ms, so the n = 32 product (2 * 32**3 FLOP) is the fastest per FLOP.
    roof = matmul_roof(sizes=(8, 32, 16), warmup=0, runs=3, timer=StepClock(1e-3))
    assert roof.size == 32
    assert roof.gflops_per_s == pytest.approx(2 * 32**3 / 1e-3 / 1e9)
    assert roof.device == "cpu" and "n in [8, 32, 16]" in roof.method
    # 65.536 MFLOP/s: 1 GFLOP takes 1000 / 0.065536 ms at that rate.
    assert roof.floor_ms(1.0) == pytest.approx(1000.0 / roof.gflops_per_s)


def test_roof_on_this_cpu_is_positive_and_restores_the_thread_count():
    before = torch.get_num_threads()
    roof = matmul_roof(sizes=(64, 128), threads=1, warmup=1, runs=2)
    assert roof.gflops_per_s > 0.01 and roof.threads == 1 and roof.size in (64, 128)
    assert torch.get_num_threads() == before
    assert Roof(**roof.to_dict()) == roof


def test_roof_rejects_no_sizes():
    with pytest.raises(ValueError, match="sizes"):
        matmul_roof(sizes=())


def test_sizes_after_a_call_over_the_limit_are_not_tried():
    """A slow BLAS (Debian's reference one ran 2048 at 4 s a call) stops at the size that took
    too long: the roof comes from the sizes tried, and the method says which were skipped."""
    roof = matmul_roof(sizes=(8, 16, 32), warmup=0, runs=2, timer=StepClock(0.5), max_call_s=0.25)
    assert roof.size == 8 and "n in [8] (16, 32 not tried" in roof.method
    roof = matmul_roof(sizes=(8, 16), warmup=0, runs=2, timer=StepClock(0.1), max_call_s=0.25)
    assert roof.size == 16 and "n in [8, 16]," in roof.method
