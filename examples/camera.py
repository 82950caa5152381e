"""Run an exported detector on cameras, videos, URLs or GStreamer pipelines: copy into your app.

Usage::

    python examples/camera.py export/tiny/model_int8.engine 0        # camera 0 (the default)
    python examples/camera.py export/tiny/model_fp32.onnx clip.mp4   # every frame of a file
    python examples/camera.py MODEL clip.mp4 --live                  # the file as a camera sends it
    python examples/camera.py MODEL rtsp://user:password@192.168.1.10:554/stream
    python examples/camera.py MODEL rtsp://10.0.0.5/live rtsp://10.0.0.6/live  # two, one batch
    python examples/camera.py MODEL "nvarguscamerasrc ! ... ! appsink drop=1"  # Jetson CSI: README

It is a thin layer over ``edgeyolo.stream``: every camera, URL or pipeline is read in its own
thread that keeps only the newest frame (a slow model skips frames instead of falling behind)
and comes back by itself after a blip (``--reconnect``); each tick runs the newest frame of every
source through the model in one call. With a display it shows a window per source (Esc or q
quits). Headless (no $DISPLAY, or pip's opencv-python-headless, which has no windows) it writes
the annotated video of each source next to --out instead (Ctrl+C or SIGTERM stops, the videos
stay playable). FPS and the pre / infer / post times (ms) are drawn on every frame and printed
every 100 frames and at the end.
"""

import argparse
from pathlib import Path

import cv2

import edgeyolo
from edgeyolo.runtime.capture import display_problem, draw_stats
from edgeyolo.runtime.stream import StopSignals, Stream

GREEN, FONT = (0, 200, 0), cv2.FONT_HERSHEY_SIMPLEX
parser = argparse.ArgumentParser(description="Detect on cameras, videos, URLs or pipelines.")
parser.add_argument("model", help="an exported .onnx or .engine (or a .pt checkpoint)")
parser.add_argument("sources", nargs="*", default=["0"], help="camera index, file, URL, pipeline")
parser.add_argument("--live", action="store_true", help="read a file live, dropping frames")
parser.add_argument("--out", default="camera_out.mp4", help="the video written when headless")
parser.add_argument("--reconnect", type=float, default=30.0, help="seconds to retry; 0 = forever")
args = parser.parse_args()

headless = display_problem()  # None where a window can open, else why not
out = Path(args.out)
if headless:
    print(f"no window: {headless}; writing {out} (Ctrl+C stops)", flush=True)
writers: dict[int, cv2.VideoWriter] = {}
with edgeyolo.Detector(args.model) as det, StopSignals() as stop:
    stream = Stream(
        args.sources, det, live=args.live or None, reconnect=args.reconnect, stop=stop.event
    )
    with stream:
        try:
            for r in stream:  # r.frame: capture number (gaps = dropped); r.image: BGR, any size
                frame, d = r.image, r.detections  # boxes in frame pixels, at the model's thresholds
                for (x1, y1, x2, y2), score, label in zip(
                    d.boxes.astype(int), d.scores, d.labels, strict=True
                ):
                    cv2.rectangle(frame, (x1, y1), (x2, y2), GREEN, 2)
                    cv2.putText(
                        frame, f"{label} {score:.2f}", (x1, max(y1 - 4, 10)), FONT, 0.5, GREEN
                    )
                stats = stream.stats[r.source].loop  # FPS and pre / infer / post ms of this source
                draw_stats(frame, stats.text())
                if stats.frames and stats.frames % 100 == 0:
                    print(f"{r.name}: {stats.text()}", flush=True)
                if headless:
                    if r.source not in writers:
                        path = (
                            out
                            if len(args.sources) == 1
                            else out.with_stem(f"{out.stem}_{r.source}")
                        )
                        size = (frame.shape[1], frame.shape[0])
                        fps = stream.sources.captures[r.source].fps or 30.0
                        writers[r.source] = cv2.VideoWriter(
                            str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size
                        )
                        if not writers[r.source].isOpened():
                            raise SystemExit(f"cannot write {path} (mp4v, {size[0]}x{size[1]})")
                    writers[r.source].write(frame)
                    continue
                cv2.imshow(f"edgeyolo: {r.name}", frame)
                if (cv2.waitKey(1) & 0xFF) in (27, ord("q")):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            for writer in writers.values():
                writer.release()
        for line in stream.summary_lines():  # frames, FPS, captured / dropped, reconnections, ages
            print(line, flush=True)
if not headless:
    cv2.destroyAllWindows()
