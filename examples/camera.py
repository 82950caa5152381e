"""Run an exported detector on a camera, a video, a URL or a GStreamer pipeline: copy into your app.

Usage::

    python examples/camera.py export/tiny/model_int8.engine 0        # camera 0 (the default)
    python examples/camera.py export/tiny/model_fp32.onnx clip.mp4   # every frame of a file
    python examples/camera.py MODEL clip.mp4 --live                  # the file as a camera sends it
    python examples/camera.py MODEL rtsp://user:password@192.168.1.10:554/stream
    python examples/camera.py MODEL "nvarguscamerasrc ! ... ! appsink drop=1"  # Jetson CSI: README

A camera, URL or pipeline is read in its own thread that keeps only the newest frame, so a slow
model skips frames instead of falling behind. With a display it shows a window (Esc or q quits).
Headless (no $DISPLAY, or pip's opencv-python-headless, which has no windows) it writes the
annotated video to --out instead (Ctrl+C stops). FPS and the pre / infer / post times (ms) are
drawn on every frame and printed every 100 frames and at the end.
"""

import argparse
import time

import cv2

from edgeyolo import Detector
from edgeyolo.runtime.capture import Capture, LoopStats, display_problem, draw_stats

GREEN, FONT = (0, 200, 0), cv2.FONT_HERSHEY_SIMPLEX
parser = argparse.ArgumentParser(description="Detect on a camera, a video, a URL or a pipeline.")
parser.add_argument("model", help="an exported .onnx or .engine (or a .pt checkpoint)")
parser.add_argument("source", nargs="?", default="0", help="camera index, file, URL or pipeline")
parser.add_argument("--live", action="store_true", help="read a file live, dropping frames")
parser.add_argument("--out", default="camera_out.mp4", help="the video written when headless")
args = parser.parse_args()

headless = display_problem()  # None where a window can open, else why not
if headless:
    print(f"no window: {headless}; writing {args.out} (Ctrl+C stops)")
stats, writer = LoopStats(), None
with Detector(args.model) as det, Capture(args.source, live=args.live or None) as cap:
    try:
        for f in cap:  # f.seq: capture order (gaps = dropped frames); f.image: BGR, any size
            frame = f.image
            d = det(frame)  # the thresholds the model was exported with; boxes in frame pixels
            t0 = time.perf_counter()
            boxes = d.boxes.astype(int)
            for (x1, y1, x2, y2), score, label in zip(boxes, d.scores, d.labels, strict=True):
                cv2.rectangle(frame, (x1, y1), (x2, y2), GREEN, 2)
                cv2.putText(frame, f"{label} {score:.2f}", (x1, max(y1 - 4, 10)), FONT, 0.5, GREEN)
            draw_stats(frame, stats.text())  # FPS and pre / infer / post ms, in red
            drawing = (time.perf_counter() - t0) * 1e3
            stats.tick({**det.last_times, "post": det.last_times["post"] + drawing})
            if stats.frames % 100 == 0:
                print(stats.text(), flush=True)
            if headless:
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(args.out, fourcc, cap.fps or 30.0, size)
                    if not writer.isOpened():
                        raise SystemExit(f"cannot write {args.out} (mp4v, {size[0]}x{size[1]})")
                writer.write(frame)
                continue
            cv2.imshow("edgeyolo", frame)
            if (cv2.waitKey(1) & 0xFF) in (27, ord("q")):
                break
    except KeyboardInterrupt:
        pass
    finally:
        if writer is not None:
            writer.release()
    live = {"captured": cap.captured, "dropped": cap.dropped} if cap.live else {}
    print(stats.summary(**live))
if not headless:
    cv2.destroyAllWindows()
