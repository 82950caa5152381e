"""Age at inference of a live RTSP stream, in frames: newest-frame capture against every frame.

A loopback RTSP server (``scripts/rtsp_server.py --counter``, through ``tests/live/rtsp.py``)
draws its frame number into every frame. edgeyolo's :class:`~edgeyolo.runtime.capture.Capture`
reads it in each mode asked for -- ``live`` (a capture thread keeps the newest frame) and
``every-frame`` (``live=False``: each frame in order on the loop's thread) -- and a "model"
takes ``--periods`` frame periods per frame: a stand-in that sleeps (default 3 periods), or a
real exported model through the :class:`~edgeyolo.runtime.detector.Detector` (``--model``).
Each processed frame's counter is read just before inference; the ages, their median / p99 /
max and trend (frames per minute) are defined in :mod:`edgeyolo.runtime.latency`. With newest-
frame capture the age at inference start stays within 0..1 frame whatever the model's latency;
reading every frame, it grows by ``periods - 1`` frames per frame processed until a buffer on
the way overflows.

Usage (from the repository root; the server runs under ``/usr/bin/python3``, which needs
GStreamer's ``gi``; ``--backend gstreamer`` needs an OpenCV with GStreamer, e.g. the system
python's in a ``--system-site-packages`` venv)::

    python bench/live_latency.py [--seconds 30] [--fps 30] [--periods 3]
        [--backend ffmpeg|gstreamer] [--modes live,every-frame] [--sequential]
        [--model export/tiny/model_fp32.onnx] [--out bench/results/live_latency.json]

The modes run at the same time on the one shared stream by default (half the wall time, and
both see the same frames); ``--sequential`` runs them one after the other (the default with
``--model``, so that two models do not share the CPU). Prints one row per mode and writes
the JSON (machine, versions, settings, per mode: the summary, frames processed / captured /
dropped / unreadable, the model's mean time, and the median age per time bin) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeyolo.runtime.latency import AgeMeter, age_summary_line  # noqa: E402
from tests.live.rtsp import RtspServer, gstreamer_pipeline, server_problem  # noqa: E402

MODES = ("live", "every-frame")
Model = Callable[[np.ndarray], Any]


def gstreamer_source(url: str, mode: str) -> str:
    """The pipeline each mode reads: the test suite's (``appsink drop=true max-buffers=1``,
    newest frame) for ``live``; for ``every-frame`` the same without ``drop`` and the buffer
    limit, as a pipeline that keeps every frame would be written."""
    pipeline = gstreamer_pipeline(url)
    if mode == "every-frame":
        pipeline = pipeline.replace("appsink drop=true max-buffers=1", "appsink")
    return pipeline


def stand_in(periods: float, fps: float) -> Model:
    """A model that takes ``periods`` frame periods per frame and finds nothing."""
    delay = periods / fps

    def model(image: np.ndarray) -> None:
        time.sleep(delay)

    return model


def run_mode(
    source: str, mode: str, model: Model, *, fps: float, seconds: float, warmup: float, bin_s: float
) -> dict[str, Any]:
    """Read ``source`` in ``mode`` for ``seconds`` after the first frame, ``model`` on each
    frame taken; the age figures and counts of the run."""
    from edgeyolo.runtime.capture import Capture

    meter = AgeMeter(fps, warmup_s=warmup)
    infer_s: list[float] = []
    behind: list[int] = []
    out: dict[str, Any] = {"mode": mode, "source": source}
    cap = Capture(source, live=mode == "live", stall_timeout=15.0)
    try:
        with cap:
            first: float | None = None
            for f in cap:
                t = time.perf_counter()
                first = t if first is None else first
                if t - first >= seconds:
                    break
                meter.add(f.image, t)
                behind.append(cap.newest_seq - f.seq)
                model(f.image)
                infer_s.append(time.perf_counter() - t)
    except Exception as e:  # a stream that failed is a result: say which and go on
        out["error"] = f"{type(e).__name__}: {e}"
    summary = meter.summary()
    out.update(
        processed=len(infer_s),
        captured=cap.captured,
        dropped=cap.dropped,
        unreadable=meter.unreadable,
        model_ms=float(np.mean(infer_s) * 1e3) if infer_s else None,
        model_periods=float(np.mean(infer_s) * fps) if infer_s else None,
        buffer_behind_max=max(behind, default=0),
        summary=None if summary is None else summary.to_dict(),
        line=age_summary_line(summary),
        timeline=timeline(meter, fps, bin_s),
    )
    return out


def timeline(meter: AgeMeter, fps: float, bin_s: float) -> list[list[float]]:
    """``[bin start s, median age, frames]`` per ``bin_s`` seconds of the run."""
    from edgeyolo.runtime.latency import ages_in_frames

    if len(meter.indices) < 2:
        return []
    t = np.asarray(meter.times)
    ages = ages_in_frames(meter.indices, t, fps)
    rel = t - t[0]
    rows = []
    for b in range(int(rel[-1] // bin_s) + 1):
        sel = (rel >= b * bin_s) & (rel < (b + 1) * bin_s)
        if sel.any():
            rows.append([b * bin_s, round(float(np.median(ages[sel])), 2), int(sel.sum())])
    return rows


def machine() -> dict[str, Any]:
    """Where it ran: edgeyolo's environment record (CPU and its flags, cores, platform,
    versions), plus OpenCV's version and the load at the end."""
    import cv2

    from edgeyolo.runtime.environment import environment

    env = environment()
    return {
        **env["machine"],
        "loadavg": list(os.getloadavg()),  # at the end
        "versions": {**env["versions"], "opencv": cv2.__version__},
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=30.0, help="per mode, after the first frame")
    p.add_argument("--fps", type=int, default=30, help="the server's frame rate")
    p.add_argument("--periods", type=float, default=3.0, help="stand-in model time, in frames")
    p.add_argument("--backend", choices=("ffmpeg", "gstreamer"), default="ffmpeg")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: live,every-frame")
    p.add_argument("--sequential", action="store_true", help="one mode after the other")
    p.add_argument("--model", type=Path, help="an exported model for the Detector (no stand-in)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of --model's backend")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--warmup", type=float, default=2.0, help="seconds left out at the start")
    p.add_argument("--bin", type=float, default=0.0, help="timeline bin, s (0: seconds/20)")
    p.add_argument("--out", type=Path, help="write the JSON here")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        p.error(f"--modes: one or more of {', '.join(MODES)}")
    if args.seconds <= args.warmup:
        p.error("--seconds must be longer than --warmup")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; see the module docstring."""
    args = _parse(argv)
    if args.backend == "ffmpeg":  # an OpenCV with both backends would pick by its own order
        os.environ.setdefault("OPENCV_VIDEOIO_PRIORITY_LIST", "FFMPEG")
    problem = server_problem()
    if problem is not None:
        print(f"live_latency: cannot start the RTSP server: {problem}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:  # the Detectors, closed at the end
        return _bench(args, stack)


def _bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    """:func:`main` once the server can run; ``stack`` closes what it opens."""
    models: dict[str, Model] = {}
    model_name = f"stand-in, sleeps {args.periods:g} frame periods"
    if args.model is not None:
        from edgeyolo.runtime.detector import Detector

        model_name = str(args.model)
        for mode in args.modes:
            models[mode] = stack.enter_context(Detector(args.model, threads=args.threads))
        args.sequential = True
    else:
        models = {mode: stand_in(args.periods, args.fps) for mode in args.modes}
    bin_s = args.bin or max(args.seconds / 20, 1.0)
    runs = len(args.modes) if args.sequential else 1
    lifetime = runs * (args.seconds + 60) + 60
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = list(os.getloadavg())
    results: dict[str, Any] = {}
    with RtspServer(
        counter=True, fps=args.fps, width=args.width, height=args.height, lifetime=lifetime
    ) as server:

        def one(mode: str) -> None:
            source = server.url if args.backend == "ffmpeg" else gstreamer_source(server.url, mode)
            results[mode] = run_mode(
                source,
                mode,
                models[mode],
                fps=args.fps,
                seconds=args.seconds,
                warmup=args.warmup,
                bin_s=bin_s,
            )

        if args.sequential:
            for mode in args.modes:
                one(mode)
        else:
            threads = [threading.Thread(target=one, args=(m,), name=m) for m in args.modes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        server_log = server.log().strip()
    report = {
        "bench": "live_latency",
        "command": " ".join(["bench/live_latency.py", *args.argv]),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()),
        "machine": {**machine(), "loadavg_start": load_start},
        "backend": args.backend,
        "fps": args.fps,
        "size": [args.width, args.height],
        "model": model_name,
        "periods": args.periods if args.model is None else None,
        "seconds": args.seconds,
        "concurrent": not args.sequential,
        "modes": results,
        "server_log_tail": server_log[-500:],
    }
    _print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in results.values()) else 1


def _print(report: dict[str, Any]) -> None:
    load = report["machine"]["loadavg_start"][0], report["machine"]["loadavg"][0]
    print(
        f"{report['backend']}, {report['fps']} fps {report['size'][0]}x{report['size'][1]}, "
        f"model: {report['model']}, {report['seconds']:g} s per mode"
        f"{' (modes at once)' if report['concurrent'] else ''}; load average at the start "
        f"{load[0]:.2f}, at the end {load[1]:.2f}"
    )
    print(
        "| mode | processed / captured | model (periods) | median | p99 | max | trend/min | rise |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in report["modes"].items():
        s = r["summary"] or {}
        periods = f"{r['model_periods']:.2f}" if r.get("model_periods") else "-"

        def f(key: str, fmt: str = ".2f", s: dict[str, Any] = s) -> str:
            return format(s[key], fmt) if key in s else "-"

        print(
            f"| {mode} | {r['processed']} / {r['captured']} | {periods} | {f('median')} | "
            f"{f('p99')} | {f('max')} | {f('trend', '+.2f')} | {f('rise', '+.1f')} |"
        )
        if "error" in r:
            print(f"  {mode}: {r['error']}")
        if r["unreadable"]:
            print(f"  {mode}: {r['unreadable']} frame(s) without a readable counter")


if __name__ == "__main__":
    sys.exit(main())
