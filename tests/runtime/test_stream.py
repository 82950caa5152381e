"""edgeyolo.stream: several sources, one batched model call per tick."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeyolo
from edgeyolo.errors import ConfigError, DataError
from edgeyolo.runtime.capture import Capture
from edgeyolo.runtime.detector import Detector, FrameDetections
from edgeyolo.runtime.stream import Sources, StopSignals, Stream, source_names


def _clip(path: Path, frames: int, value: int, fps: float = 10.0) -> Path:
    """An MJPG clip whose frame i is grey ``value + 10 * i`` (so a frame tells its index)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), value + 10 * i, np.uint8))
    writer.release()
    return path


class Recorder:
    """A model that records the size of every call and 'detects' the frame's grey level."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.calls: list[int] = []
        self.last_times: Mapping[str, float] = {}

    def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]:
        self.calls.append(len(frames))
        self.last_times = {"pre": 1.0, "infer": 4.0 * len(frames), "post": 0.5}
        return [
            FrameDetections(
                np.zeros((1, 4), np.float32),
                np.array([f.mean() / 255], np.float32),
                np.zeros(1, np.int64),
                ("grey",),
            )
            for f in frames
        ]


def test_one_call_per_tick_over_every_source_and_numbering_per_source(tmp_path: Path) -> None:
    clips = [_clip(tmp_path / f"{n}.avi", 4, v) for n, v in (("a", 20), ("b", 120))]
    model = Recorder(max_batch=8)
    results = list(edgeyolo.stream(clips, model, live=False))
    assert model.calls == [2, 2, 2, 2]  # one call per tick, both sources in it
    by_source = {s: [r.frame for r in results if r.source == s] for s in (0, 1)}
    assert by_source == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}
    assert [r.name for r in results[:2]] == ["a.avi", "b.avi"]
    for r in results:  # the frame a result carries is the one that was detected on
        grey = (20, 120)[r.source] + 10 * r.frame
        assert r.detections.scores[0] * 255 == pytest.approx(grey, abs=3)
        assert r.batch == 2 and r.times["infer"] == 8.0 and r.age_ms >= 0


def test_batch_1_calls_once_per_frame_with_the_same_results(tmp_path: Path) -> None:
    clips = [_clip(tmp_path / f"{n}.avi", 3, v) for n, v in (("a", 20), ("b", 120))]
    batched, single = Recorder(8), Recorder(8)
    got = [(r.source, r.frame) for r in edgeyolo.stream(clips, batched, live=False)]
    again = [(r.source, r.frame) for r in edgeyolo.stream(clips, single, live=False, batch=1)]
    assert got == again and single.calls == [1] * 6 and batched.calls == [2] * 3


def test_more_sources_than_the_batch_take_turns(tmp_path: Path) -> None:
    clips = [_clip(tmp_path / f"{i}.avi", 4, 20 * i) for i in range(3)]
    model = Recorder(max_batch=2)
    results = list(edgeyolo.stream(clips, model, live=False))
    assert set(model.calls) == {2} or model.calls[-1] < 2
    order = [r.source for r in results]
    assert order[:6] == [0, 1, 2, 0, 1, 2]  # no source waits two ticks in a row
    assert sorted(order) == [0] * 4 + [1] * 4 + [2] * 4


def test_max_frames_and_stop_end_the_stream(tmp_path: Path) -> None:
    clips = [_clip(tmp_path / f"{n}.avi", 5, 30) for n in "ab"]
    assert len(list(edgeyolo.stream(clips, Recorder(8), live=False, max_frames=3))) == 3
    with Stream(clips, Recorder(8), live=False) as s:
        for n, _ in enumerate(s, 1):
            if n == 2:
                s.stop()  # the tick's frames are given, then it ends
        assert n == 2
    with pytest.raises(ConfigError, match="--frames must be 1 or more"):
        Stream(clips, Recorder(8), max_frames=0)
    with pytest.raises(ConfigError, match="no source given"):
        Sources([])


def test_live_sources_each_keep_their_newest_frame(tmp_path: Path) -> None:
    """Two files read live (paced at 25 FPS) through a model 3 frame periods slow: both drop
    frames, frame numbers rise per source, and a frame's age is under two periods."""
    import time

    clips = [_clip(tmp_path / f"{n}.avi", 25, 0, fps=25.0) for n in "ab"]

    class Slow(Recorder):
        def batch(self, frames: list[np.ndarray]) -> list[FrameDetections]:
            time.sleep(3 / 25)
            return super().batch(frames)

    with Stream(clips, Slow(8), live=True) as s:
        results = list(s)
        lines = s.summary_lines()
    for src in (0, 1):
        frames = [r.frame for r in results if r.source == src]
        assert frames == sorted(set(frames)) and len(frames) < 25
    assert max(r.age_ms for r in results) < 2 * 1000 / 25 + 40
    assert len(lines) == 2 and "dropped" in lines[0] and "age at inference" in lines[1]


def test_a_source_that_fails_is_named_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = [_clip(tmp_path / f"{n}.avi", 4, 30) for n in "ab"]
    said: list[str] = []
    real_poll = Capture.poll

    def poll(self: Capture) -> object:
        if self.source.name.endswith("a.avi") and self.delivered == 2:
            raise DataError("lost and not back after 30.0 s", file=self.source.name)
        return real_poll(self)

    monkeypatch.setattr(Capture, "poll", poll)
    results = list(edgeyolo.stream(clips, Recorder(8), live=False, on_status=said.append))
    assert [r.frame for r in results if r.source == 0] == [0, 1]
    assert [r.frame for r in results if r.source == 1] == [0, 1, 2, 3]
    assert any(
        "a.avi stopped: lost and not back" in s and "1 other source(s) go on" in s for s in said
    )
    with pytest.raises(DataError, match="lost and not back"):  # the last one's error is raised
        list(edgeyolo.stream(clips[0], Recorder(8), live=False))


def test_names_are_unique() -> None:
    caps = [Capture("rtsp://u:secret@cam/x"), Capture("rtsp://u:secret@cam/x"), Capture(0)]
    assert source_names(caps) == ["stream_0", "stream_1", "camera0"]
    assert source_names([Capture("a/clip.mp4"), Capture("b/clip.mp4")]) == [
        "clip_0.mp4",
        "clip_1.mp4",
    ]


def test_onnx_batched_equals_one_call_per_frame(tmp_path: Path, exported: Path) -> None:
    """A real ONNX Runtime session with a dynamic batch: four sources in one call give the
    boxes each frame gets alone."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(4):
        path = tmp_path / f"{i}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 80))
        for _ in range(2):
            writer.write(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
        writer.release()
        clips.append(path)
    with Detector(exported / "model_fp32.onnx", threads=1) as det:
        assert det.max_batch > 8  # the graph's batch axis is dynamic
        batched = list(edgeyolo.stream(clips, det, live=False))
        single = list(edgeyolo.stream(clips, det, live=False, batch=1))
    assert {r.batch for r in batched} == {4} and {r.batch for r in single} == {1}
    assert [(r.source, r.frame) for r in batched] == [(r.source, r.frame) for r in single]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=1e-3)
        assert a.detections.labels == b.detections.labels


def test_stop_signals_finish_cleanly_then_hard_stop() -> None:
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(2) and stop.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(2)  # the handler runs here
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_stop_signals_leave_an_ignored_sigint_ignored() -> None:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, old)
