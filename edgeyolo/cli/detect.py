"""`edgeyolo detect`: draw detections on images, video, a camera or a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeyolo.cli.common import _cli_errors, console, err_console
from edgeyolo.errors import ConfigError
from edgeyolo.lazy import lazy_import

_DETECT = lazy_import("edgeyolo.detect")
_DETECTOR = lazy_import("edgeyolo.runtime.detector")
_STREAM = lazy_import("edgeyolo.runtime.stream")


def detect(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE",
            help="Image, folder, video file, camera index (0), rtsp:// or http:// URL, or a "
            "GStreamer pipeline ending in appsink (quoted). Several videos, cameras, URLs or "
            "pipelines are read at once, one capture thread each, and run in one batched "
            "inference per tick.",
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="A .pt checkpoint, an exported .onnx or a TensorRT .engine."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint written by `edgeyolo train`, or a darknet .weights (= --model)."
        ),
    ] = None,
    darknet_cfg: Annotated[
        Path | None,
        typer.Option(
            "--cfg", help="The darknet .cfg of a --weights X.weights (default: X.cfg beside it)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for annotated output.")] = Path("runs/detect"),
    img_size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
    conf: Annotated[
        float | None,
        typer.Option(help="Score threshold (default: the model's own; 0.25 for a .pt)."),
    ] = None,
    iou: Annotated[
        float | None,
        typer.Option(help="NMS IoU threshold (default: the model's own; 0.45 for a .pt)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    save_json: Annotated[
        bool, typer.Option("--json", help="Also write OUT/detections.json.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip and report unreadable images instead of stopping.")
    ] = False,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--every-frame",
            help="Keep only the newest frame (a slow model skips frames) or process every "
            "frame; default: live for cameras, URLs and pipelines, every frame of a video file.",
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Also show a window (needs a display and GUI OpenCV).")
    ] = False,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            help="Stop after this many frames (a bounded check of a camera or stream; "
            "default: to the end, or Ctrl+C).",
        ),
    ] = None,
    reconnect: Annotated[
        float,
        typer.Option(
            "--reconnect",
            metavar="SECONDS",
            min=0,
            help="How long a camera, URL or pipeline that stops sending (or sends nothing for "
            "10 s) is reopened, with backoff, before the run stops; 0 = never give up.",
        ),
    ] = 30.0,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Frames per inference call over several sources (default: as many as the "
            "model takes: an ONNX graph any, an engine its --max-batch; 1 = one call per frame).",
        ),
    ] = None,
    jsonl: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Stream one JSON line per video or live frame as it is processed (source, "
            "frame, capture time, age, stage times, boxes with names) to FILE; - = stdout.",
        ),
    ] = None,
    serve: Annotated[
        str | None,
        typer.Option(
            metavar="rtsp://HOST:PORT/PATH",
            help="Re-serve the annotated stream over RTSP (@ = every interface, e.g. "
            "rtsp://@:8554/detect; several sources on PATH/0, PATH/1...). Needs GStreamer's "
            "Python bindings (python3-gi, gir1.2-gst-rtsp-server-1.0).",
        ),
    ] = None,
) -> None:
    """Draw detections on images, video, a camera or a stream with any backend; optionally JSON.

    An exported .onnx runs at the --conf/--iou given (its NMS is re-targeted); a TensorRT engine
    takes a higher --conf only, its NMS being built in.
    """
    say = err_console if jsonl == "-" else console  # stdout carries the JSON Lines
    with _cli_errors(), _STREAM.StopSignals() as stop:
        if (model is None) == (weights is None):
            raise ConfigError("give the model with --model (or a checkpoint with --weights)")
        with _DETECTOR.Detector(
            model or weights,
            cfg=darknet_cfg,
            device=device,
            img_size=img_size,
            conf_thres=conf,
            iou_thres=iou,
        ) as det:
            b = det.backend
            say.print(f"{b.name} on {b.where}, {det.nms or 'NMS settings unknown'}", soft_wrap=True)
            records = _DETECT.run_detect(
                sources,
                det.predict_rgb,
                det.names,
                out=out,
                save_json=save_json,
                skip_bad=skip_bad,
                console=say,
                live=live,
                show=show,
                stages=det,
                max_frames=frames,
                reconnect=reconnect,
                model=det,
                batch=batch,
                jsonl=jsonl,
                serve=serve,
                stop=stop,
            )
    frames = [r for r in records if "skipped" not in r]
    n = sum(len(r["detections"]) for r in frames)
    skipped = len(records) - len(frames)
    note = f", {skipped} skipped (unreadable, named above)" if skipped else ""
    say.print(f"{len(frames)} frame(s), {n} detection(s){note} -> [bold]{out}[/]", soft_wrap=True)
