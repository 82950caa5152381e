"""``edgeyolo bench``: latency, mAP and box parity of exported models against their checkpoint.

For the PyTorch checkpoint (the reference, benched too) and every artifact given (files, or
export folders whose manifest lists them):

- **latency** of ``backend.infer`` on a fixed batch of real, letterboxed dataset images, at each
  batch size (:mod:`edgeyolo.bench.latency`), with the backend's stage split and the CPU cost
  of preprocessing one frame. With ``isolate=True`` every backend is timed in a fresh process
  (``multiprocessing`` spawn): torch and ONNX Runtime in one process fight over cores.
- **mAP@0.5 and mAP@0.5:0.95** at COCO settings (conf 0.001, IoU 0.5, 300 detections): an
  ``.onnx`` is scored through a copy of its graph with the NMS retargeted to those settings; an
  engine can only be scored at the thresholds baked into it, which the report says.
- **parity** (:func:`edgeyolo.metrics.parity.parity_report`) at the deployment thresholds in the
  export's ``manifest.json``, against the checkpoint run at the same thresholds.
- **compute**: the model's GFLOP per image, each artifact's achieved GFLOP/s at batch 1, and the
  fp32 matmul roof of each device that ran one (:mod:`edgeyolo.bench.roofline`), so a user sees
  whether a runtime is near what the machine can do.
- **stability**: whether other work disturbed the timing (:func:`edgeyolo.bench.latency.
  judge_stability`): the CPU's fp32 roof measured before the timed runs against the one measured
  after them, each latency series' p99/p50, and the 1-minute load average before and after. A
  disturbed run is marked in every output, and its speed ratios are flagged as unreliable.

The result is a JSON-ready dict (:func:`run_bench`); :mod:`edgeyolo.bench.report` writes
it as JSON, Markdown and a PNG plot and prints it as a rich table.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from edgeyolo import cpuinfo
from edgeyolo.bench import roofline
from edgeyolo.bench.latency import (
    available_cores,
    cpu_snapshot,
    judge_stability,
    load_average,
    noisy_series,
    one_line,
    others_share,
    time_model,
    time_model_isolated,
)
from edgeyolo.bench.report import print_report, to_markdown, write_report
from edgeyolo.console import make_console
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.device import select_device
from edgeyolo.errors import ConfigError
from edgeyolo.evaluate.evaluator import predict_with
from edgeyolo.metrics.coco_map import compute_map
from edgeyolo.metrics.parity import parity_report
from edgeyolo.models.info import count_flops
from edgeyolo.postprocess import Detections, from_outputs
from edgeyolo.runtime.backends import artifacts_in, open_backend
from edgeyolo.runtime.environment import environment
from edgeyolo.runtime.gpu import tensorrt_version
from edgeyolo.runtime.manifest import MANIFEST_NAME, read_manifest
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.thresholds import retarget_nms

__all__ = ["COCO_NMS", "print_report", "run_bench", "to_markdown", "write_report"]

SCHEMA = "edgeyolo.bench/1"
COCO_NMS: dict[str, float | int] = {"conf_thres": 0.001, "iou_thres": 0.5, "max_det": 300}
_DEPLOY_DEFAULT: dict[str, float | int] = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100}
_EVAL_BATCH = 8
#: Bins of the matched pairs' ``1 - IoU`` (log-spaced; IoU 1 - 1e-7 lands in the first bin).
_GAP_EDGES = np.geomspace(1e-6, 0.5, 41)
Log = Callable[[str], object]


def _nms_text(nms: dict[str, Any]) -> str:
    return f"conf {nms['conf_thres']}, IoU {nms['iou_thres']}, {nms['max_det']} dets"


def _artifacts(weights: Path, models: Sequence[Path]) -> list[dict[str, Any]]:
    """The reference first, then every model file (folders expanded through their manifest)."""

    found: list[Path] = []
    for m in map(Path, models):
        found += artifacts_in(m) if m.is_dir() else [m]
    files: list[Path] = []
    for f in found:  # each file once, in the order given
        if f.resolve() not in {g.resolve() for g in files}:
            files.append(f)
    nms0 = dict(_DEPLOY_DEFAULT)
    out = [{"path": weights, "kind": "pt", "nms": nms0, "img_size": None, "half": False}]
    out[0]["cpu_target"] = None
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: no such model file (.onnx or .engine, or an export folder)")
        kind = "engine" if f.suffix.lower() in (".engine", ".plan") else f.suffix.lower()[1:]
        if kind not in ("onnx", "engine"):
            raise ConfigError(f"{f}: bench takes .onnx and .engine files (the .pt is --weights)")
        has = (f.parent / MANIFEST_NAME).is_file()
        man = read_manifest(f.parent) if has else {}
        nms = {k: man["nms"][k] for k in _DEPLOY_DEFAULT} if "nms" in man else dict(_DEPLOY_DEFAULT)
        size = int(man["input"]["shape"][-1]) if "input" in man else None
        entry = next((e for e in man.get("artifacts", []) if e.get("file") == f.name), {})
        out.append(
            {
                "path": f,
                "kind": kind,
                "nms": nms,
                "img_size": size,
                "raw": man.get("raw"),
                "half": False,
                "cpu_target": entry.get("cpu_target"),
            }
        )
    names = [a["path"].name for a in out]
    for a in out:  # file name, or parent/name where two folders hold the same name
        dup = names.count(a["path"].name) > 1
        a["key"] = f"{a['path'].parent.name}/{a['path'].name}" if dup else a["path"].name
    if out[1:] and out[1]["nms"] != _DEPLOY_DEFAULT:
        out[0]["nms"] = dict(out[1]["nms"])  # time the reference at the export's thresholds
    return out


def _letterboxed(records: Sequence[Any], img_size: int, n: int) -> np.ndarray:
    """``float32[n, 3, S, S]``: the first ``n`` records (cycled) as every backend receives them."""

    chosen = [records[i % len(records)] for i in range(n)]
    got: list[np.ndarray] = []

    def grab(images: torch.Tensor) -> list[Detections]:
        got.append(images.numpy())
        return [Detections.empty() for _ in range(len(images))]

    predict_with(grab, chosen, img_size=img_size, batch=n)
    return np.ascontiguousarray(np.concatenate(got), dtype=np.float32)


def _predict(
    backend_fn: Callable[[np.ndarray], list[Any]],
    records: Sequence[Any],
    img_size: int,
    batch: int,
    progress: Any,
    label: str,
) -> list[Any]:
    """Predictions ``(boxes, scores, labels)`` per record in image pixels, with a progress task."""

    task = progress.add_task(label, total=math.ceil(len(records) / batch)) if progress else None

    def detect(images: torch.Tensor) -> list[Any]:
        dets = backend_fn(images.numpy())
        if progress:
            progress.advance(task)
        return dets

    try:
        return predict_with(detect, records, img_size=img_size, batch=batch)
    finally:
        if progress:
            progress.remove_task(task)


def _as_dets(preds: Sequence[Any]) -> list[Any]:

    return [
        Detections(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(c))
        for b, s, c in preds
    ]


def _progress(enabled: bool) -> Any:

    if not enabled:
        return nullcontext(None)

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        transient=True,
    )


def _entry(a: dict[str, Any], t: dict[str, Any]) -> dict[str, Any]:
    b1 = t["batches"]["1"]
    return {
        "file": str(a["path"]),
        "kind": a["kind"],
        "backend": t["backend"],
        "precision": t["precision"],
        "device": t["device"],
        "latency_ms": {k: b1[k] for k in ("min", "mean", "p50", "p90", "p95", "p99", "max")},
        "throughput_ips": b1["throughput_ips"],
        "stages_ms": b1["stages_ms"],
        "bytes_d2h": b1["bytes_d2h"],
        "batches": t["batches"],
        "threads": t["threads"],
        "skipped": t["skipped"],
        "nms": a["nms"],
        "cpu_target": a["cpu_target"],
    }


def _score(
    a: dict[str, Any], records: Sequence[Any], ctx: dict[str, Any], prog: Any
) -> dict[str, Any]:
    """mAP (COCO settings where the format allows) and parity against the checkpoint."""

    key, size, dev, threads = a["key"], a["img_size"], ctx["device"], ctx["threads"]

    def predict(path: Path, label: str, **kw: Any) -> list[Any]:
        torch_threads = torch.get_num_threads()  # a pinned PyTorch backend changes it globally
        try:
            with open_backend(path, device=dev, threads=threads, **kw) as b:
                bs = min(_EVAL_BATCH, b.max_batch) if b.name == "tensorrt" else _EVAL_BATCH
                return _predict(b.infer, records, size, bs, prog, label)
        finally:
            torch.set_num_threads(torch_threads)

    out: dict[str, Any] = {"parity": None, "map_setting": f"COCO ({_nms_text(COCO_NMS)})"}
    if a["kind"] == "pt" and not a["half"]:
        map_preds = predict(a["path"], f"{key}: mAP", **COCO_NMS)
    else:
        rk = (size, *a["nms"].values())
        if rk not in ctx["ref_preds"]:
            ctx["ref_preds"][rk] = predict(
                ctx["weights"], "reference at the export's NMS", img_size=size, **a["nms"]
            )
        if a["kind"] == "pt":  # the checkpoint in fp16: its own NMS, at both settings
            preds = predict(a["path"], f"{key}: parity", half=True, **a["nms"])
            map_preds = predict(a["path"], f"{key}: mAP", half=True, **COCO_NMS)
        elif a["kind"] == "onnx":
            preds = predict(a["path"], f"{key}: parity")
            coco = retarget_nms(onnx.load(str(a["path"])), **COCO_NMS).SerializeToString()
            with OnnxRuntimeSession(coco, threads=threads) as s:

                def run(x: np.ndarray) -> list[Any]:
                    o = s.run(x)
                    return from_outputs(o)

                map_preds = _predict(run, records, size, _EVAL_BATCH, prog, f"{key}: mAP")
            out["map_setting"] += ", through a copy of the graph with its NMS retargeted"
        else:
            map_preds = preds = predict(a["path"], f"{key}: parity")
            out["map_setting"] = f"the engine's baked NMS ({_nms_text(a['nms'])}), not COCO's"
        rep = parity_report(_as_dets(ctx["ref_preds"][rk]), _as_dets(preds), files=ctx["files"])
        gap = np.clip(1.0 - rep.ious, _GAP_EDGES[0], _GAP_EDGES[-1])
        edges = [float(f"{e:.4g}") for e in _GAP_EDGES]
        hist = {"of": "1 - IoU", "edges": edges, "counts": []}
        hist["counts"] = np.histogram(gap, bins=_GAP_EDGES)[0].tolist()
        out["parity"] = {**rep.to_dict(), "iou_histogram": hist}
    m = compute_map(map_preds, records, ctx["names"])
    return {"map50": m.map50, "map50_95": m.map50_95, **out}


def _compute(
    out: dict[str, dict[str, Any]],
    model: torch.nn.Module,
    threads: int | None,
    isolate: bool,
    not_available: list[str],
) -> dict[str, Any]:
    """Each artifact's achieved GFLOP/s at batch 1 against its device's fp32 matmul roof
    (:mod:`edgeyolo.bench.roofline`); returns the header's ``compute`` block. A roof that
    cannot be measured is a line in ``not_available``, and its artifacts get GFLOP/s only."""

    gflop: dict[int, float] = {}
    roofs: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()
    for a in out.values():
        size, dev = a["img_size"], a["device"]
        if size not in gflop:
            gflop[size] = count_flops(model, size) / 1e9
        if dev not in tried:
            tried.add(dev)
            measure = roofline.matmul_roof_isolated if isolate else roofline.matmul_roof
            try:
                roofs[dev] = measure(device=dev, threads=threads).to_dict()
            except Exception as e:  # a broken CUDA context must not lose the timings above
                not_available.append(f"fp32 roof on {dev}: not measured ({one_line(e)})")
        rate = gflop[size] / (a["latency_ms"]["p50"] / 1000.0)
        a["compute"] = {"gflop_per_image": gflop[size], "gflops_per_s": rate}
        if dev in roofs:
            peak = roofs[dev]["gflops_per_s"]
            a["compute"].update(roof_fraction=rate / peak, floor_ms=1000.0 * gflop[size] / peak)
    return {"gflop_per_image": {str(k): v for k, v in gflop.items()}, "roofs": roofs}


def _cpu_roof(
    threads: int | None, isolate: bool, when: str, not_available: list[str]
) -> float | None:
    """The CPU's fp32 roof in GFLOP/s, measured as :func:`_compute` does; ``None`` (and a line in
    ``not_available``) where it cannot be."""

    measure = roofline.matmul_roof_isolated if isolate else roofline.matmul_roof
    try:
        return measure(device="cpu", threads=threads).gflops_per_s
    except Exception as e:
        not_available.append(
            f"fp32 roof on cpu {when} the timed runs: not measured ({one_line(e)})"
        )
        return None


def _stability(
    out: dict[str, dict[str, Any]],
    before: tuple[float | None, float | None],
    compute: dict[str, Any],
    measure_after: Callable[[], float | None],
    *,
    others: float | None = None,
) -> dict[str, Any]:
    """Judge the run (:func:`~edgeyolo.bench.latency.judge_stability`) and mark each artifact:
    ``disturbed`` (its own series is noisy, or the machine was busy) and ``disturbed_reasons``.

    Args:
        before: ``(fp32 roof on the CPU, load average)`` read just before the first timed run.
        compute: :func:`_compute`'s block; its CPU roof is the one after the runs where a
            backend ran on the CPU (``measure_after`` measures it otherwise).
        others: the share of the machine's CPU other processes used during the timed runs
            (:func:`~edgeyolo.bench.latency.others_share`).
    """

    roof_after = compute["roofs"].get("cpu", {}).get("gflops_per_s")
    if before[0] is not None and all(a["device"] != "cpu" for a in out.values()):
        roof_after = measure_after()  # every backend ran on a GPU: _compute measured no CPU roof
    noisy = {k: noisy_series(a["batches"]) for k, a in out.items()}
    verdict = judge_stability(
        roof_before=before[0],
        roof_after=roof_after,
        load_before=before[1],
        load_after=load_average(),
        cores=available_cores(),
        noisy={k: v for k, v in noisy.items() if v},
        others=others,
    )
    for k, a in out.items():
        why = noisy[k] + (
            ["the machine was busy (see stability)"] if verdict["machine_busy"] else []
        )
        a.update(disturbed=bool(why), disturbed_reasons=why)
    return verdict


def _cpu_target_notes(arts: Sequence[dict[str, Any]]) -> list[str]:
    """A note per int8 graph made for VNNI (``cpu_target: vnni``) benched on a CPU without it."""

    vnni = [a["key"] for a in arts if a.get("cpu_target") == "vnni"]
    if not vnni or cpuinfo.has_vnni():
        return []
    return [
        f"{key}: an int8 graph for another CPU (cpu_target vnni: full 8-bit weights, for "
        f"AVX512-VNNI or AVX-VNNI); this CPU ({cpuinfo.cpu_summary()}) has neither, so its int8 "
        "kernels may saturate and its mAP and parity here understate the graph (for this CPU "
        "export with --int8-cpu-target any)"
        for key in vnni
    ]


@contextmanager
def _task(prog: Any, label: str) -> Iterator[None]:
    """A spinner line ``label`` on ``prog`` (a rich Progress, or None) while the block runs."""
    task = prog.add_task(label, total=None) if prog else None
    try:
        yield
    finally:
        if prog:
            prog.remove_task(task)


def _header(
    command: str | None, settings: dict[str, Any], compute: dict[str, Any]
) -> dict[str, Any]:
    """The report's header: schema, date, command, machine and versions, settings, compute."""
    return {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or " ".join(sys.argv),
        **environment(),
        "settings": settings,
        "compute": compute,
        "thresholds": {
            "map": dict(COCO_NMS),
            "parity": "each export's deployment NMS (manifest.json), the reference at the same; "
            "matching greedy by reference score, same class, IoU >= 0.5",
        },
    }


def _isolation(isolate: bool, threads: int | None) -> str:
    where = "each backend timed in its own process (spawn)" if isolate else "one process"
    if threads:
        return f"{where}; torch and ONNX Runtime intra-op threads pinned to {threads}"
    return f"{where}; thread counts at torch's and ONNX Runtime's defaults" + (
        "" if isolate else " (they may contend for cores)"
    )


def run_bench(
    weights: str | Path,
    models: Sequence[str | Path],
    data: str | Path,
    *,
    split: str = "val",
    batch_sizes: Sequence[int] = (1, 8),
    warmup: int = 10,
    runs: int = 100,
    threads: int | None = None,
    isolate: bool = True,
    max_images: int | None = None,
    device: str = "auto",
    torch_half: bool | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Bench the checkpoint ``weights`` (the reference) and every model in ``models``.

    Args:
        weights: the ``.pt`` checkpoint the exports were made from.
        models: ``.onnx`` / ``.engine`` files, or export folders (their ``manifest.json``).
        data: a ``data.yaml``; its ``split`` is scored (the first ``max_images`` images).
        batch_sizes: batch sizes to time; batch 1 is always timed (it is ``latency_ms``).
        warmup, runs: untimed and timed calls of ``infer`` per batch size.
        threads: intra-op threads of torch and ONNX Runtime (``None``: their defaults).
        isolate: time each backend in its own spawned process.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``auto`` runs ONNX Runtime on CPU).
        torch_half: also bench the checkpoint in fp16 (``model.half()``), with parity against
            its fp32 self. ``None``: where it runs on CUDA (on a CPU the report says it was
            not benched); ``True``: on a CPU too; ``False``: never.
        command: the command line recorded in the report (default: ``sys.argv``).
        log: called with each note as it happens (models skipped or failed).

    With ``isolate=True`` the timing processes are *spawned*: a script calling this must guard
    its entry point with ``if __name__ == "__main__":`` (spawn re-imports the main module).

    Returns:
        JSON-ready: ``header`` (machine, versions, command, date, settings), ``reference`` (the
        checkpoint's key), ``artifacts`` (key → figures, reference first), ``stability``
        (whether other work disturbed the timing, and why: :func:`_stability`), ``notes``
        (facts that qualify a figure), ``not_available`` and ``failed`` (one line per model or
        fact).
    """

    weights = Path(weights)
    if weights.suffix != ".pt" or not weights.is_file():
        raise ConfigError(f"{weights}: no such checkpoint (--weights takes the .pt file)")
    sizes = sorted({1, *batch_sizes})
    if sizes[0] < 1 or warmup < 0 or runs < 1:
        raise ConfigError(f"need batches >= 1, warmup >= 0, runs >= 1; got {sizes}/{warmup}/{runs}")
    spec = load_data_yaml(data)
    records = read_split(spec, split).records[:max_images]
    if not records:
        raise ConfigError(f"{data}: the {split!r} split has no images")
    arts = _artifacts(weights, models)
    not_available: list[str] = []
    failed: list[str] = []

    def skip(a: dict[str, Any], why: str, bucket: list[str]) -> None:
        bucket.append(f"{a['key']}: {why}")
        if log:
            log(bucket[-1])

    has_trt = tensorrt_version() is not None
    if not has_trt and not any(a["kind"] == "engine" for a in arts):
        not_available.append("TensorRT not installed: no engine benched")
    for a in arts:
        if a["kind"] == "engine" and not has_trt:
            skip(a, "TensorRT not installed: not benched", not_available)
        elif a.get("raw"):
            skip(a, "ends at the raw head maps (--raw): not benched", not_available)
    arts = [a for a in arts if not a.get("raw") and (a["kind"] != "engine" or has_trt)]
    ref_dev = select_device(device).type
    if torch_half or (torch_half is None and ref_dev == "cuda"):  # beside the exports' fp16
        arts.insert(1, {**arts[0], "half": True, "key": f"{arts[0]['key']} (fp16)"})
    elif torch_half is None:
        not_available.append(
            f"{arts[0]['key']} (fp16): PyTorch fp16 is benched by default on CUDA only (this run "
            "is on cpu, where it is slow); --torch-half forces it"
        )
    with open_backend(weights, device="cpu") as ref:
        names, ref_size, net = ref.class_names, ref.img_size, ref.model
    if len(spec.names) != len(names):
        raise ConfigError(f"{data} has {len(spec.names)} classes but {weights} has {len(names)}")
    frame = cv2.imread(str(records[0].path))
    timer = time_model_isolated if isolate else time_model
    ctx = {"device": device, "threads": threads, "weights": weights, "names": names}
    ctx.update(files=[str(r.path) for r in records], ref_preds={})
    out: dict[str, dict[str, Any]] = {}
    batches: dict[int, np.ndarray] = {}
    with _progress(progress) as prog:
        with _task(prog, "measuring the fp32 roof"):
            before = (_cpu_roof(threads, isolate, "before", not_available), load_average())
        start = cpu_snapshot()
        for a in arts:  # all timing first, before this process loads any model for scoring
            size = a["img_size"] = a["img_size"] or ref_size
            if size not in batches:
                batches[size] = _letterboxed(records, size, sizes[-1])
            with _task(prog, f"timing {a['key']}"):
                t = timer(
                    a["path"], images=batches[size], frame=frame, batch_sizes=sizes,
                    warmup=warmup, runs=runs, device=device, threads=threads, nms=a["nms"],
                    half=a["half"],
                )  # fmt: skip
            if t["ok"]:
                out[a["key"]] = {**_entry(a, t), "img_size": size}
            else:
                skip(a, t["error"], not_available if t["unavailable"] else failed)
        others = others_share(start, cpu_snapshot())
        if arts[0]["key"] not in out:
            raise ConfigError(f"the reference {weights} could not be timed: {failed[0]}")
        with _task(prog, "measuring the fp32 roof"):
            compute = _compute(out, net, threads, isolate, not_available)
            stability = _stability(
                out,
                before,
                compute,
                lambda: _cpu_roof(threads, isolate, "after", not_available),
                others=others,
            )
        for a in arts:
            if a["key"] in out:
                out[a["key"]].update(_score(a, records, ctx, prog))
    settings = {
        "weights": str(weights), "data": str(data), "split": split, "images": len(records),
        "img_size": ref_size, "batch_sizes": sizes, "warmup": warmup, "runs": runs,
        "device": device, "threads": threads, "isolate": isolate,
        "isolation": _isolation(isolate, threads),
    }  # fmt: skip
    return {
        "header": _header(command, settings, compute),
        "reference": arts[0]["key"],
        "artifacts": out,
        "stability": stability,
        "notes": _cpu_target_notes([a for a in arts if a["key"] in out]),
        "not_available": not_available,
        "failed": failed,
    }
