"""Ages at inference from a sender's frame counter: the definition on synthetic runs (newest
frame capture with a slow model, a reader of every frame that falls behind), the trend, the
counter's wrap, and the one-line report a frame loop prints."""

from __future__ import annotations

import numpy as np
import pytest

from edgeyolo.runtime.framecounter import encode_counter
from edgeyolo.runtime.latency import (
    AgeMeter,
    age_summary_line,
    ages_in_frames,
    estimate_fps,
    segments,
    summarize_ages,
    trend_per_minute,
    unwrap_indices,
)

FPS = 30.0


def _newest_frame_run(k: float, seconds: float, fps: float = FPS, delay: float = 0.02):
    """A model ``k`` periods slow that always takes the newest frame: frame ``s`` arrives at
    ``delay + s / fps``; returns (indices, inference start times)."""
    t, out_s, out_t = 0.1, [], []
    while t < seconds:
        s = int(np.floor((t - delay) * fps))
        out_s.append(s)
        out_t.append(t)
        t += k / fps + 0.0003  # a little over k periods: the phase drifts
    return np.array(out_s), np.array(out_t)


def _every_frame_run(k: float, seconds: float, fps: float = FPS):
    """A model ``k`` periods slow that takes every frame in order."""
    n = int(seconds * fps / k)
    return np.arange(n), 0.1 + np.arange(n) * k / fps


def test_newest_frame_capture_ages_stay_within_one_frame() -> None:
    s, t = _newest_frame_run(3, 60)
    summary = summarize_ages(s, t, FPS)
    assert summary is not None
    assert 0 <= summary.median <= 1 and summary.max <= 1.0 + 1e-9
    assert abs(summary.rise) < 1.0 and summary.frames > 500
    assert summary.fps == FPS and not summary.fps_estimated


def test_every_frame_reader_grows_by_k_minus_one_frames_per_frame() -> None:
    k, seconds = 3.0, 30.0
    s, t = _every_frame_run(k, seconds)
    ages = ages_in_frames(s, t, FPS)
    assert ages[0] == 0 and np.allclose(np.diff(ages), k - 1)
    summary = summarize_ages(s, t, FPS, warmup_s=0)
    assert summary is not None
    assert summary.trend == pytest.approx(60 * FPS * (k - 1) / k)  # 1200 frames/min
    assert summary.max == pytest.approx((k - 1) * (len(s) - 1))


def test_age_is_relative_to_the_fastest_frame() -> None:
    ages = ages_in_frames([10, 11, 12], [1.0, 1.0 + 1 / FPS, 1.0 + 3 / FPS], FPS)
    assert ages == pytest.approx([0, 0, 1])
    ages = ages_in_frames([5, 6], [0.0, 0.0], FPS)  # the later one reached us sooner
    assert ages == pytest.approx([1, 0])


def test_warmup_frames_count_for_the_minimum_only() -> None:
    s, t = _newest_frame_run(3, 20)
    s[0] -= 26  # the first frame came 26 frames late (stream start-up)
    summary = summarize_ages(s, t, FPS, warmup_s=2.0)
    assert summary is not None and summary.max <= 1.0 + 1e-9
    assert summarize_ages(s, t, FPS, warmup_s=0).max > 25  # type: ignore[union-attr]
    assert summarize_ages(s[:3], t[:3], FPS) is None  # nothing after the warm-up
    assert summarize_ages([1], [0.0], FPS) is None


def test_trend_per_minute() -> None:
    t = np.linspace(0, 120, 50)
    assert trend_per_minute(0.5 * t / 60 + 3, t) == pytest.approx(0.5)
    assert trend_per_minute(np.ones(3), np.zeros(3)) == 0.0
    assert trend_per_minute(np.ones(1), np.zeros(1)) == 0.0


def test_counter_wrap_is_undone() -> None:
    wrap = 2**32
    assert unwrap_indices([wrap - 2, wrap - 1, 0, 1]).tolist() == [
        wrap - 2,
        wrap - 1,
        wrap,
        wrap + 1,
    ]
    ages = ages_in_frames([wrap - 3, 0, 3], [0.0, 0.1, 0.2], FPS)
    assert ages == pytest.approx([0, 0, 0])


def test_fps_estimated_from_the_counter() -> None:
    s, t = _newest_frame_run(3, 30, fps=25.0)
    assert estimate_fps(s, t) == pytest.approx(25.0, rel=0.01)
    summary = summarize_ages(s, t, None)
    assert summary is not None and summary.fps_estimated
    assert summary.fps == pytest.approx(25.0, rel=0.01) and summary.max < 1.5
    with pytest.raises(ValueError):
        estimate_fps([3], [0.0])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="indices but"):
        ages_in_frames([1, 2], [0.0], FPS)
    with pytest.raises(ValueError, match="fps"):
        ages_in_frames([1], [0.0], 0.0)
    assert ages_in_frames([], [], FPS).size == 0


def test_meter_reads_frames_and_reports_one_line() -> None:
    meter = AgeMeter(FPS, warmup_s=0.0)
    s, t = _newest_frame_run(3, 5)
    image = np.full((48, 320, 3), 100, np.uint8)
    for index, when in zip(s, t, strict=True):
        encode_counter(image, int(index))
        assert meter.add(image, when) == index
    assert meter.add(np.zeros((48, 320, 3), np.uint8), 9.0) is None
    summary = meter.summary()
    assert summary is not None and summary.frames == len(s) and summary.unreadable == 1
    line = meter.line()
    assert line.startswith("frame age at inference: median ")
    assert "frames/min" in line and "at 30 fps" in line and "1 without a readable counter" in line
    assert summary.to_dict()["rise"] == summary.rise


def test_meter_stays_quiet_without_a_counter() -> None:
    meter = AgeMeter(FPS)
    rng = np.random.default_rng(0)
    for i in range(20):
        meter.add(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), float(i))
    assert meter.summary() is None and meter.line() == "" and age_summary_line(None) == ""


def test_a_sender_restart_starts_a_new_segment() -> None:
    s1, t1 = _newest_frame_run(3, 20)
    s2, t2 = _newest_frame_run(3, 20)
    s = np.concatenate([s1 + 5000, s2])  # the sender came back counting from 0
    t = np.concatenate([t1, t2 + 25.0])
    assert segments(s).tolist() == [0] * len(s1) + [1] * len(s2)
    ages = ages_in_frames(s, t, FPS)
    assert ages.max() <= 1.0 + 1e-9 and ages[len(s1)] == pytest.approx(ages[0])
    summary = summarize_ages(s, t, FPS)
    assert summary is not None and summary.max <= 1.0 + 1e-9
    assert summary.frames < len(s) - 2 * 6  # a warm-up left out of each segment
    estimated = summarize_ages(s, t, None)
    assert estimated is not None and estimated.fps == pytest.approx(FPS, rel=0.01)
