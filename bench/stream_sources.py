"""Many cameras, one model: throughput and age at 1, 2, 4 and 8 loopback RTSP streams,
one batched call per tick against one call per frame, in one run.

A loopback RTSP server (``scripts/rtsp_server.py --counter`` through ``tests/live/rtsp.py``)
serves one live H.264 stream that draws its frame number into every frame; ``N`` RTSP sessions
of it are read at once by :class:`edgeyolo.runtime.stream.Stream` (one capture thread each,
FFmpeg decoding each session), and the newest frame of every session goes through the model:

* ``batched``: one call per tick over every session that has a new frame (the model's batch);
* ``per-frame``: the same frames, one call each (``batch=1``).

Per run: frames processed per second in all and per stream, frames captured / dropped, the mean
batch, the model's time per call and per frame, the age from capture to inference start (ms;
median, p99), the age from capture to the end of the frame's call (its boxes are there), and the
age in frames from the drawn counter (:mod:`edgeyolo.runtime.latency`).
The modes alternate at each stream count, so that drift on a noisy machine hits both alike.

Usage (from the repository root, in the training venv when no ``--model`` is given: an untrained
yolov3-tiny with the demo's 10 classes is exported at ``--img`` for the timing; the weights do
not change the work but for NMS, which has a few boxes to sort)::

    python bench/stream_sources.py [--streams 1,2,4,8] [--seconds 20] [--threads 2]
        [--model export/tiny/model_fp32.onnx] [--out bench/results/stream_sources.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.live_latency import machine  # noqa: E402 (the same record of where it ran)
from edgeyolo.runtime.detector import Detector  # noqa: E402
from edgeyolo.runtime.stream import Stream  # noqa: E402
from tests.live.rtsp import RtspServer, server_problem  # noqa: E402

MODES = ("batched", "per-frame")


def untrained_export(out: Path, img: int) -> Path:
    """An fp32 ONNX export (dynamic batch, decode and NMS inside) of an untrained yolov3-tiny
    with 10 classes at ``img`` px; needs torch."""
    from edgeyolo.config import ExportConfig, ModelConfig, to_dict
    from edgeyolo.export.pipeline import export_model
    from edgeyolo.models import build_model
    from edgeyolo.models.checkpoint import save_checkpoint

    net = build_model(ModelConfig(arch="yolov3-tiny", num_classes=10, img_size=img))
    ckpt = out / "untrained.pt"
    save_checkpoint(ckpt, {"model_config": to_dict(net.config), "model": net.state_dict()})
    export_model(ExportConfig(weights=str(ckpt), out=str(out)), progress=False, log=lambda _s: None)
    return out / "model_fp32.onnx"


def run(
    url: str, n: int, mode: str, det: Detector, seconds: float, warmup: float
) -> dict[str, Any]:
    """``n`` sessions of ``url`` for ``warmup`` + ``seconds`` s; figures over the last
    ``seconds``."""
    stop = threading.Event()
    calls: list[tuple[int, float]] = []  # (batch, ms) of each call in the measured window
    ages_ms: list[float] = []
    result_ms: list[float] = []
    per_source = [0] * n
    stream = Stream([url] * n, det, batch=None if mode == "batched" else 1, stop=stop)
    with stream:
        t_first: float | None = None
        last_call = 0  # id() of the last call's times: a call's frames share one dict
        counted = False
        start_counts: tuple[list[int], list[int]] = ([], [])
        for r in stream:
            now = time.perf_counter()
            t_first = now if t_first is None else t_first
            if now - t_first >= warmup + seconds:
                stop.set()
                continue
            if now - t_first < warmup:
                continue
            if not counted:  # the measured window starts: capture counters at this point
                caps = stream.sources.captures
                start_counts = ([c.captured for c in caps], [c.dropped for c in caps])
                t_start, counted = now, True
            per_source[r.source] += 1
            ages_ms.append(r.age_ms)
            t = r.times  # capture to the call's end: when the frame's boxes are there
            result_ms.append(r.age_ms + t.get("pre", 0) + t["infer"] + t.get("post", 0))
            if id(r.times) != last_call:
                t = r.times
                calls.append((r.batch, t.get("pre", 0) + t["infer"] + t.get("post", 0)))
                last_call = id(r.times)
        elapsed = time.perf_counter() - t_start
        caps = stream.sources.captures
        captured = sum(c.captured for c in caps) - sum(start_counts[0])
        dropped = sum(c.dropped for c in caps) - sum(start_counts[1])
        counter = [st.ages.summary() if st.ages else None for st in stream.stats]
    frames = sum(per_source)
    batches = np.array([b for b, _ in calls], float)
    call_ms = np.array([ms for _, ms in calls], float)
    medians = [c.median for c in counter if c is not None]
    p99s = [c.p99 for c in counter if c is not None]
    return {
        "streams": n,
        "mode": mode,
        "seconds": round(elapsed, 2),
        "fps_total": round(frames / elapsed, 2),
        "fps_per_stream": round(frames / elapsed / n, 2),
        "per_stream_frames": per_source,
        "captured": captured,
        "dropped": dropped,
        "calls": len(calls),
        "mean_batch": round(float(batches.mean()), 2) if len(calls) else None,
        "call_ms": round(float(call_ms.mean()), 2) if len(calls) else None,
        "model_ms_per_frame": round(float(call_ms.sum() / batches.sum()), 2)
        if len(calls)
        else None,
        "age_ms_median": round(float(np.median(ages_ms)), 1) if ages_ms else None,
        "age_ms_p99": round(float(np.percentile(ages_ms, 99)), 1) if ages_ms else None,
        "result_ms_median": round(float(np.median(result_ms)), 1) if result_ms else None,
        "result_ms_p99": round(float(np.percentile(result_ms, 99)), 1) if result_ms else None,
        "age_frames_median": round(float(np.median(medians)), 2) if medians else None,
        "age_frames_p99_worst": round(float(max(p99s)), 2) if p99s else None,
    }


class NoModel:
    """A model that finds nothing at once: what is left is the loop's own cost."""

    max_batch = 64
    last_times = {"pre": 0.0, "infer": 0.0, "post": 0.0}

    def batch(self, frames: list[np.ndarray]) -> list[Any]:
        from edgeyolo.runtime.detector import FrameDetections

        empty = np.zeros((0, 4), np.float32)
        none = np.zeros(0, np.int64)
        return [FrameDetections(empty, empty[:, 0], none, ()) for _ in frames]


def overhead(url: str, seconds: float, warmup: float) -> dict[str, Any]:
    """What the stream adds: the age at hand-over (capture to the loop's body, ms) of one
    session read by :class:`Stream` with a model that does nothing, against a plain loop over
    :class:`~edgeyolo.runtime.capture.Capture` (the same thread and one-slot buffer)."""
    from edgeyolo.runtime.capture import Capture

    out: dict[str, Any] = {}
    stop = threading.Event()
    ages: list[float] = []
    with Stream([url], NoModel(), stop=stop) as stream:
        t0 = time.perf_counter()
        for r in stream:
            if time.perf_counter() - t0 > warmup + seconds:
                stop.set()
            elif time.perf_counter() - t0 > warmup:
                ages.append(r.age_ms)
    out["stream_ms"] = _spread(ages)
    ages = []
    with Capture(url) as cap:
        t0 = time.perf_counter()
        for f in cap:
            now = time.perf_counter()
            if now - t0 > warmup + seconds:
                break
            if now - t0 > warmup:
                ages.append((now - f.time) * 1e3)
    out["capture_ms"] = _spread(ages)
    return out


def _spread(ages_ms: list[float]) -> dict[str, float]:
    a = np.asarray(ages_ms)
    return {
        "frames": len(a),
        "median": round(float(np.median(a)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--streams", default="1,2,4,8", help="comma-separated stream counts")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="measured, per stream count and mode"
    )
    p.add_argument("--warmup", type=float, default=3.0, help="seconds left out at the start")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--img", type=int, default=416, help="input size of the untrained export")
    p.add_argument("--model", type=Path, help="an exported .onnx (default: untrained yolov3-tiny)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads")
    p.add_argument("--out", type=Path, help="write the JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("OPENCV_VIDEOIO_PRIORITY_LIST", "FFMPEG")
    problem = server_problem()
    if problem is not None:
        print(f"stream_sources: cannot start the RTSP server: {problem}", file=sys.stderr)
        return 2
    counts = [int(s) for s in args.streams.split(",")]
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_export(Path(tmp), args.img)
        lifetime = len(counts) * 2 * (args.seconds + args.warmup + 30) + 60
        with (
            Detector(model, threads=args.threads) as det,
            RtspServer(
                counter=True, fps=args.fps, width=args.width, height=args.height, lifetime=lifetime
            ) as server,
        ):
            added = overhead(server.url, min(args.seconds, 10.0), args.warmup)
            print(
                f"hand-over age, no model: Stream {added['stream_ms']}, "
                f"a plain Capture loop {added['capture_ms']} (ms)",
                flush=True,
            )
            for k, n in enumerate(counts):
                for mode in MODES if k % 2 == 0 else MODES[::-1]:
                    row = run(server.url, n, mode, det, args.seconds, args.warmup)
                    rows.append(row)
                    print(_line(row), flush=True)
    report = {
        "bench": "stream_sources",
        "started": started.isoformat(timespec="seconds"),
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "model")},
            "model": str(args.model) if args.model else f"untrained yolov3-tiny, {args.img} px",
        },
        "machine": machine(),
        "overhead": added,
        "rows": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['streams']} stream(s) {r['mode']:>9}: {r['fps_total']:6.1f} FPS in all "
        f"({r['fps_per_stream']:5.1f} each), batch {r['mean_batch']}, {r['call_ms']} ms/call, "
        f"{r['model_ms_per_frame']} ms/frame, age {r['age_ms_median']} ms median / "
        f"{r['age_ms_p99']} p99, {r['age_frames_median']} frames median; boxes after "
        f"{r['result_ms_median']} ms median / {r['result_ms_p99']} p99; "
        f"{r['captured']} captured, {r['dropped']} dropped"
    )


if __name__ == "__main__":
    raise SystemExit(main())
