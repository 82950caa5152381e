"""Real live sources on loopback: an H.264 RTSP stream read through each OpenCV backend of this
interpreter, its frame counter read back after the codec, a server restarted on its port, and
``edgeyolo detect`` run on the stream and on a GStreamer pipeline until Ctrl+C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.live.rtsp import (
    BACKENDS,
    RtspServer,
    backend_problem,
    gstreamer_pipeline,
    load_frame_counter,
    open_capture,
    opencv_has_gstreamer,
    read_frames,
    skip_or_fail,
)

FRAMES = 30
READ_TIMEOUT = 15.0
#: Seconds for ``edgeyolo detect`` to start and write its first frame, and to stop on SIGINT.
DETECT_START, DETECT_STOP = 45.0, 30.0

MakeServer = Callable[..., RtspServer]


def _backend(name: str) -> str:
    problem = backend_problem(cv2, name)
    if problem is not None:
        skip_or_fail(problem)
    return name


def _read(url: str, backend: str, n: int = FRAMES) -> list[np.ndarray]:
    cap = open_capture(cv2, url, backend)
    try:
        assert cap.isOpened(), f"OpenCV ({backend}) cannot open {url}"
        return read_frames(cap, n, READ_TIMEOUT)
    finally:
        cap.release()


# ------------------------------------------------------------------------ the frame counter


def test_frame_counter_loads_by_path() -> None:
    """The server's python may lack edgeyolo: the codec loads from its file, numpy only (its
    own tests are tests/runtime/test_framecounter.py)."""
    fc = load_frame_counter()
    image = np.full((48, 320, 3), 128, np.uint8)
    fc.encode_counter(image, 65_537)
    assert fc.decode_counter(image) == 65_537
    assert fc.decode_counter(np.zeros((48, 320, 3), np.uint8)) is None


# -------------------------------------------------------------------- direct OpenCV reads


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_live_frames(rtsp_server: RtspServer, backend: str) -> None:
    frames = _read(rtsp_server.url, _backend(backend))
    assert len(frames) == FRAMES, f"{len(frames)} of {FRAMES} frames in {READ_TIMEOUT:g} s"
    for f in frames:
        assert f.shape == (rtsp_server.height, rtsp_server.width, 3) and f.dtype == np.uint8
    changed = sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:], strict=False))
    assert changed >= (FRAMES - 1) // 2, f"only {changed} of {FRAMES - 1} frames differ"


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_counter_survives_h264(rtsp_server_factory: MakeServer, backend: str) -> None:
    server = rtsp_server_factory(counter=True)
    frames = _read(server.url, _backend(backend), n=20)
    assert len(frames) == 20
    fc = load_frame_counter()
    indices = [fc.decode_counter(f) for f in frames]
    assert None not in indices, indices
    assert all(b > a for a, b in zip(indices, indices[1:], strict=False)), indices


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_on_the_same_port(rtsp_server: RtspServer, backend: str) -> None:
    _backend(backend)
    url = rtsp_server.url
    assert len(_read(url, backend, n=5)) == 5
    rtsp_server.stop()
    assert rtsp_server.returncode == 0, rtsp_server.log()
    assert "stdin closed" in rtsp_server.log()  # stopped by its parent's pipe, cleanly
    assert rtsp_server.restart() == url
    assert len(_read(url, backend, n=5)) == 5


def test_server_stops_on_sigterm_and_lifetime(rtsp_server_factory: MakeServer) -> None:
    server = rtsp_server_factory()
    assert server._proc is not None
    server._proc.send_signal(signal.SIGTERM)
    assert server._proc.wait(5) == 0
    brief = rtsp_server_factory(lifetime=0.5)
    assert brief._proc is not None
    assert brief._proc.wait(5) == 0
    assert "lifetime of 0.5 s over" in brief.log()


# ----------------------------------------------------------------------- edgeyolo detect


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _until_sigint(
    cmd: list[str],
    started: Callable[[], bool],
    log: Path,
    run_s: float,
    sig: signal.Signals = signal.SIGINT,
) -> str:
    """Run ``cmd``, interrupt it (``sig``: SIGINT) ``run_s`` s after ``started()`` first holds,
    and return its output. Asserts exit status 0.

    The child gets SIGINT's default action back before it starts, as a terminal's foreground
    program has it: a non-interactive shell starts background jobs (a CI runner's, say) with
    SIGINT ignored, the child inherits that, and Python then never raises KeyboardInterrupt."""
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
            preexec_fn=_sigint_default,
        )
        try:
            deadline = time.monotonic() + DETECT_START
            while proc.poll() is None and time.monotonic() < deadline:
                if started():  # the first frame is being written: in the loop
                    time.sleep(run_s)
                    proc.send_signal(sig)
                    break
                time.sleep(0.1)
            code = proc.wait(DETECT_STOP) if proc.poll() is None else proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert code == 0, f"{' '.join(cmd[:4])} exited with {code}:\n{text[-3000:]}"
    return text


def _detect_until_sigint(
    source: str | list[str],
    model: Path,
    out: Path,
    run_s: float = 2.0,
    *extra: str,
    sig: signal.Signals = signal.SIGINT,
) -> str:
    """``edgeyolo detect SOURCE...`` in a subprocess of this interpreter, stopped by ``sig``
    ``run_s`` s after it wrote its first frame; returns its output. Asserts exit status 0."""
    cmd = [
        sys.executable,
        "-m",
        "edgeyolo",
        "detect",
        *([source] if isinstance(source, str) else source),
    ]
    cmd += ["--model", str(model), "--out", str(out), "--json", *extra]
    log = out.with_name(out.name + ".log")
    return _until_sigint(cmd, lambda: any(out.glob("*.mp4")), log, run_s, sig)


def _playable_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    return frames


def _check_detect_output(out: Path, stem: str, text: str) -> None:
    records = json.loads((out / "detections.json").read_text())
    assert records, text
    assert all(r["image"] == stem and isinstance(r["frame"], int) for r in records)
    seqs = [r["frame"] for r in records]
    assert seqs == sorted(set(seqs)), seqs  # capture order, gaps only (dropped frames)
    assert (out / f"{stem}.mp4").stat().st_size > 0
    assert "stopped by SIGINT after" in text and f"{len(records)} frame(s)" in text
    assert _playable_frames(out / f"{stem}.mp4") == len(records), text  # finalised, complete


def test_detect_on_rtsp(rtsp_server: RtspServer, live_model: Path, tmp_path: Path) -> None:
    _backend("ffmpeg")  # a URL is opened with CAP_ANY: FFmpeg where OpenCV has it
    out = tmp_path / "out"
    text = _detect_until_sigint(rtsp_server.url, live_model, out)
    _check_detect_output(out, "stream", text)


@pytest.mark.parametrize("kind", ["videotestsrc", "rtspsrc"])
def test_detect_on_gstreamer_pipeline(
    kind: str, rtsp_server_factory: MakeServer, live_model: Path, tmp_path: Path
) -> None:
    if not opencv_has_gstreamer(cv2):
        skip_or_fail(backend_problem(cv2, "gstreamer") or "no GStreamer in this OpenCV")
    if kind == "videotestsrc":
        pipeline = (
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
            "framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true "
            "max-buffers=1"
        )
    else:
        pipeline = gstreamer_pipeline(rtsp_server_factory().url)
    out = tmp_path / "out"
    text = _detect_until_sigint(pipeline, live_model, out)
    _check_detect_output(out, "gstreamer", text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_camera_example_on_rtsp(
    backend: str, rtsp_server: RtspServer, live_model: Path, tmp_path: Path
) -> None:
    """examples/camera.py, headless, on the stream: the URL (FFmpeg) or an ``rtspsrc``
    pipeline (GStreamer), until Ctrl+C; the annotated video it wrote plays."""
    _backend(backend)
    source = rtsp_server.url if backend == "ffmpeg" else gstreamer_pipeline(rtsp_server.url)
    out = tmp_path / "annotated.mp4"
    example = Path(__file__).resolve().parents[2] / "examples" / "camera.py"
    cmd = [sys.executable, str(example), str(live_model), source, "--out", str(out)]
    text = _until_sigint(cmd, lambda: out.is_file(), tmp_path / "camera.log", 2.0)
    assert "no window" in text and "FPS" in text, text
    assert _playable_frames(out) > 0, text


def test_four_streams_through_one_batched_model_stop_cleanly_on_sigterm(
    rtsp_server: RtspServer, live_model: Path, tmp_path: Path
) -> None:
    """Four RTSP sessions of the loopback server read at once (one capture thread each), run
    through the exported ONNX graph four frames per call; SIGTERM finishes the frame, flushes
    the JSON Lines, the four videos and detections.json, and prints the per-source summary."""
    _backend("ffmpeg")
    out = tmp_path / "out"
    lines = tmp_path / "frames.jsonl"
    text = _detect_until_sigint(
        [rtsp_server.url] * 4, live_model, out, 3.0, "--jsonl", str(lines), sig=signal.SIGTERM
    )
    assert "stopped by SIGTERM after" in text, text
    records = json.loads((out / "detections.json").read_text())
    streamed = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(streamed) == len(records) > 0, text
    for i in range(4):
        mine = [r for r in records if r["source"] == i]
        seqs = [r["frame"] for r in mine]
        assert mine and seqs == sorted(set(seqs)), (i, seqs)
        assert all(r["image"] == f"stream_{i}" for r in mine)
        assert _playable_frames(out / f"stream_{i}.mp4") == len(mine), text
        assert f"stream_{i}: " in text  # its summary line
    assert max(s["batch"] for s in streamed) == 4, streamed[:8]  # one call over all four
    first = streamed[0]
    assert {"source", "index", "frame", "captured", "age_ms", "times_ms", "detections"} <= set(
        first
    )
    assert abs(first["captured"] - time.time()) < 120 and first["age_ms"] >= 0


def test_detect_reports_frame_ages_of_a_counter_stream(
    rtsp_server_factory: MakeServer, live_model: Path, tmp_path: Path
) -> None:
    """A sender that draws its frame number: detect's summary says how old each processed frame
    was (``edgeyolo.runtime.latency``); a plain stream (the other detect tests) says nothing."""
    _backend("ffmpeg")
    server = rtsp_server_factory(counter=True)
    out = tmp_path / "out"
    text = _detect_until_sigint(server.url, live_model, out, run_s=4.0)
    _check_detect_output(out, "stream", text)
    assert "frame age at inference: median" in text and "trend" in text, text
