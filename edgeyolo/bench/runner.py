"""``edgeyolo bench``: latency, mAP and box parity of exported models against their checkpoint.

For the PyTorch checkpoint (the reference, benched too) and every artifact given (files, or
export folders whose manifest lists them):

- **latency** of ``backend.infer`` on a fixed batch of real, letterboxed dataset images, at each
  batch size (:mod:`edgeyolo.bench.latency`), with the backend's stage split and the CPU cost
  of preprocessing one frame. With ``isolate=True`` every backend is timed in a fresh process
  (``multiprocessing`` spawn): torch and ONNX Runtime in one process fight over cores.
- **mAP@0.5 and mAP@0.5:0.95** at COCO settings (:data:`COCO_NMS`: conf 0.001, IoU 0.5, 300
  detections): an ``.onnx`` is scored through a copy of its graph with the NMS retargeted to those
  settings; an engine can only be scored at the thresholds baked into it, which the report says.
- **parity** (:func:`edgeyolo.metrics.parity.parity_report`) at the deployment thresholds in the
  export's ``manifest.json``, against the checkpoint run at the same thresholds.
- **compute**: the model's GFLOP per image, each artifact's achieved GFLOP/s at batch 1, and the
  fp32 matmul roof of each device that ran one (:mod:`edgeyolo.bench.roofline`), so a user sees
  whether a runtime is near what the machine can do.
- **stability**: whether other work disturbed the timing (:func:`edgeyolo.bench.latency.
  judge_stability`): the CPU's fp32 roof measured before the timed runs against the one measured
  after them, each latency series' p99/p50, and the 1-minute load average before and after. A
  disturbed run is marked in every output, and its speed ratios are flagged as unreliable.

:func:`run_bench` takes a :class:`~edgeyolo.bench.config.BenchConfig` and returns a
:class:`~edgeyolo.bench.results.BenchResult` (``to_dict()``: the JSON-ready ``bench.json``);
:mod:`edgeyolo.bench.report` writes it as JSON, Markdown and a PNG plot and prints it as a rich
table. The steps: :func:`_prepare` (data, artifacts, reference), :func:`_time_all`,
:func:`_compute` and :func:`_stability`, then :func:`~edgeyolo.bench.scoring.score` per
artifact.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
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
from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.flops import graph_flops
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
from edgeyolo.bench.results import (
    SCHEMA,
    ArtifactResult,
    ArtifactSpec,
    BenchResult,
    Compute,
    Timing,
)
from edgeyolo.bench.scoring import (
    COCO_NMS,
    DEPLOY_NMS,
    BenchRun,
    Log,
    letterboxed,
    note,
    score,
    score_stored,
    stored_references,
)
from edgeyolo.console import make_console
from edgeyolo.data.formats import load_data_yaml, read_split
from edgeyolo.device import select_device
from edgeyolo.errors import ConfigError
from edgeyolo.lazy import CV2 as cv2
from edgeyolo.lazy import lazy_import
from edgeyolo.runtime.backends import artifacts_in, open_backend
from edgeyolo.runtime.environment import environment
from edgeyolo.runtime.gpu import tensorrt_version
from edgeyolo.runtime.manifest import MANIFEST_NAME, find_entry, read_manifest
from edgeyolo.runtime.thresholds import manifest_nms

#: The checkpoint's FLOP count (torch), used only when a checkpoint is benched.
_MODEL_INFO = lazy_import(
    "edgeyolo.models.info", install="pip install 'edgeyolo[train]'", needed_for="--weights"
)

__all__ = [
    "COCO_NMS",
    "DEPLOY_NMS",
    "BenchConfig",
    "BenchResult",
    "print_report",
    "run_bench",
    "to_markdown",
    "write_report",
]

#: key → what to bench and how it timed, the reference first.
Timed = dict[str, tuple[ArtifactSpec, Timing]]


def _model_files(models: Sequence[Path]) -> list[Path]:
    """Every model file given (folders expanded through their manifest), each once, in order."""
    found: list[Path] = []
    for m in models:
        found += artifacts_in(m) if m.is_dir() else [m]
    files: list[Path] = []
    for f in found:
        if f.resolve() not in {g.resolve() for g in files}:
            files.append(f)
    return files


#: The post-processing settings of an export's manifest (``nms``) the reference repeats.
_POST = ("multi_label", "max_candidates")


def _export_spec(f: Path) -> ArtifactSpec:
    """An exported file: its kind, and from its folder's manifest (if any) the deployment NMS,
    the input size, whether it is raw, and its ``cpu_target``."""
    if not f.is_file():
        raise ConfigError(f"{f}: no such model file (.onnx or .engine, or an export folder)")
    kind = "engine" if f.suffix.lower() in (".engine", ".plan") else f.suffix.lower()[1:]
    if kind not in ("onnx", "engine"):
        raise ConfigError(f"{f}: bench takes .onnx and .engine files (the .pt is --weights)")
    man = read_manifest(f.parent) if (f.parent / MANIFEST_NAME).is_file() else {}
    return ArtifactSpec(
        key=f.name,
        path=f,
        kind=kind,
        nms=manifest_nms(man) or DEPLOY_NMS,
        img_size=int(man["input"]["shape"][-1]) if "input" in man else None,
        raw=man.get("raw"),
        cpu_target=(find_entry(man, file=f.name) or {}).get("cpu_target"),
        post=tuple((k, v) for k, v in (man.get("nms") or {}).items() if k in _POST),
    )


def _artifacts(weights: Path | None, models: Sequence[Path]) -> list[ArtifactSpec]:
    """The reference first (the checkpoint at the first export's NMS, so that its timing
    compares like with like; without one, the first model), then every model file; keys are
    file names, ``folder/name`` where names repeat."""
    exports = [_export_spec(f) for f in _model_files(models)]
    if weights is None and not exports:
        raise ConfigError(f"no model file in {', '.join(map(str, models))}")
    nms = exports[0].nms if exports else DEPLOY_NMS
    post = exports[0].post if exports else ()
    ref = [] if weights is None else [ArtifactSpec(weights.name, weights, "pt", nms, post=post)]
    specs = [*ref, *exports]
    names = [s.path.name for s in specs]
    return [
        replace(s, key=f"{s.path.parent.name}/{s.path.name}") if names.count(s.path.name) > 1 else s
        for s in specs
    ]


def _benchable(
    specs: list[ArtifactSpec], config: BenchConfig, not_available: list[str], log: Log | None
) -> list[ArtifactSpec]:
    """``specs`` less what this machine cannot bench (each a line in ``not_available``), with
    the checkpoint in fp16 after the reference where ``config.torch_half`` asks for it."""
    has_trt = tensorrt_version() is not None
    if not has_trt and not any(s.kind == "engine" for s in specs):
        not_available.append("TensorRT not installed: no engine benched")
    for s in specs:
        if s.kind == "engine" and not has_trt:
            note(not_available, f"{s.key}: TensorRT not installed: not benched", log)
        elif s.raw:
            note(not_available, f"{s.key}: ends at the raw head maps (--raw): not benched", log)
    specs = [s for s in specs if not s.raw and (s.kind != "engine" or has_trt)]
    if not specs:
        raise ConfigError("nothing this machine can bench: " + "; ".join(not_available))
    if config.weights is None:
        return specs
    half = config.torch_half
    if half or (half is None and select_device(config.device).type == "cuda"):
        specs.insert(1, replace(specs[0], half=True, key=f"{specs[0].key} (fp16)"))
    elif half is None:  # beside the exports' fp16 on CUDA only
        not_available.append(
            f"{specs[0].key} (fp16): PyTorch fp16 is benched by default on CUDA only (this run "
            "is on cpu, where it is slow); --torch-half forces it"
        )
    return specs


def _reference_model(config: BenchConfig, spec: ArtifactSpec) -> tuple[tuple[str, ...], int, Any]:
    """``(class names, input size, torch model or None)`` of the reference: the checkpoint, or
    (without one) the first model's manifest."""
    if config.weights is not None:
        with open_backend(config.weights, device="cpu") as ref:
            return tuple(ref.class_names), ref.img_size, ref.model
    man = read_manifest(spec.path.parent) if (spec.path.parent / MANIFEST_NAME).is_file() else {}
    if "classes" not in man:
        raise ConfigError(
            f"{spec.path}: no manifest.json beside it; without --weights bench needs the export "
            "folder (its manifest and stored reference detections)"
        )
    return tuple(str(c) for c in man["classes"]), int(man["input"]["shape"][-1]), None


def _prepare(config: BenchConfig, log: Log | None) -> tuple[BenchRun, list[ArtifactSpec]]:
    """Read the split, list what to bench (each with its input size) and open the reference."""
    records = []
    if config.data is not None:
        data = load_data_yaml(config.data)
        records = read_split(data, config.split).records[: config.max_images]
        if not records:
            raise ConfigError(f"{config.data}: the {config.split!r} split has no images")
    not_available: list[str] = []
    specs = _benchable(_artifacts(config.weights, config.models), config, not_available, log)
    names, ref_size, net = _reference_model(config, specs[0])
    if config.data is not None and len(data.names) != len(names):
        raise ConfigError(
            f"{config.data} has {len(data.names)} classes but {specs[0].path} has {len(names)}"
        )
    if config.data is None:
        not_available.append("mAP: no --data given (parity against the stored references only)")
    size = config.img_size or ref_size
    run = BenchRun(config, records, names, size, net, log=log, not_available=not_available)
    return run, [replace(s, img_size=s.img_size or size) for s in specs]


def _time_all(run: BenchRun, specs: Sequence[ArtifactSpec]) -> tuple[Timed, float | None]:
    """Time every artifact, all before this process loads any model for scoring; returns those
    timed and the share of the CPU other processes used meanwhile. One that fails is a line in
    ``failed`` (``not_available`` where this machine cannot run it).

    Raises:
        ConfigError: the reference itself could not be timed.
    """
    cfg = run.config
    frame = _timing_frame(run, specs[0])
    timer = time_model_isolated if cfg.isolate else time_model
    batches: dict[int, np.ndarray] = {}
    timed: Timed = {}
    ref_error = ""
    start = cpu_snapshot()
    for s in specs:
        assert s.img_size is not None  # set by _prepare
        if s.img_size not in batches:
            batches[s.img_size] = _timing_batch(run, s, cfg.batch_sizes[-1])
        with _task(run.prog, f"timing {s.key}"):
            t = timer(
                s.path, images=batches[s.img_size], frame=frame, batch_sizes=cfg.batch_sizes,
                warmup=cfg.warmup, runs=cfg.runs, device=cfg.device, threads=cfg.threads,
                nms=asdict(s.nms), half=s.half,
            )  # fmt: skip
        if t["ok"]:
            timed[s.key] = (s, Timing.from_dict(t))
            continue
        why = f"{s.key}: {t['error']}"
        note(run.not_available if t["unavailable"] else run.failed, why, run.log)
        if s is specs[0]:
            ref_error = why
    others = others_share(start, cpu_snapshot())
    if specs[0].key not in timed:
        raise ConfigError(f"the reference {specs[0].path} could not be timed: {ref_error}")
    return timed, others


def _timing_frame(run: BenchRun, spec: ArtifactSpec) -> np.ndarray:
    """A BGR frame whose preprocessing is timed: the split's first image, else (no data) the
    first stored reference image (already at the input size)."""
    if run.records:
        return cv2.imread(str(run.records[0].path))
    image = stored_references(run, spec.path.parent).images[0]  # uint8[3, S, S] RGB
    return np.ascontiguousarray(image.transpose(1, 2, 0)[:, :, ::-1])


def _timing_batch(run: BenchRun, spec: ArtifactSpec, n: int) -> np.ndarray:
    """``float32[n, 3, S, S]``: the split's first ``n`` images (cycled), else the stored
    reference images (cycled)."""
    assert spec.img_size is not None  # set by _prepare
    if run.records:
        return letterboxed(run.records, spec.img_size, n)
    inputs = stored_references(run, spec.path.parent).inputs()
    return np.ascontiguousarray(inputs[np.arange(n) % len(inputs)])


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


def _roof_measure(isolate: bool) -> Callable[..., roofline.Roof]:
    """The fp32 roof measurement: in its own process with ``isolate`` (read at call time, so a
    test may replace it)."""
    return roofline.matmul_roof_isolated if isolate else roofline.matmul_roof


def _gflop(model: Any, spec: ArtifactSpec, specs: Sequence[ArtifactSpec]) -> float:
    """GFLOP of one image at ``spec``'s input size: the checkpoint's (torch) where one is
    benched, else counted from an ONNX graph (``spec``'s, or for an engine its folder's)."""
    assert spec.img_size is not None  # set by _prepare
    if model is not None:
        return _MODEL_INFO.count_flops(model, spec.img_size) / 1e9
    graphs = [s.path for s in specs if s.kind == "onnx" and s.img_size == spec.img_size]
    graphs += [p for p in sorted(spec.path.parent.glob("*.onnx"))]
    if not graphs:
        raise ConfigError(f"{spec.path}: no ONNX graph beside it to count its FLOPs from")
    return graph_flops(graphs[0]) / 1e9


def _compute(
    timed: Timed, model: Any, config: BenchConfig, not_available: list[str]
) -> tuple[dict[str, Compute], dict[str, Any]]:
    """Each artifact's achieved GFLOP/s at batch 1 against its device's fp32 matmul roof
    (:mod:`edgeyolo.bench.roofline`), and the header's ``compute`` block. A roof that cannot be
    measured is a line in ``not_available``, and its artifacts get GFLOP/s only."""

    gflop: dict[int, float] = {}
    roofs: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()
    out: dict[str, Compute] = {}
    for key, (s, t) in timed.items():
        size, dev = s.img_size, t.device
        assert size is not None  # set by _prepare
        if size not in gflop:
            gflop[size] = _gflop(model, s, [spec for spec, _ in timed.values()])
        if dev not in tried:
            tried.add(dev)
            measure = _roof_measure(config.isolate)
            try:
                roofs[dev] = measure(device=dev, threads=config.threads).to_dict()
            except Exception as e:  # a broken CUDA context must not lose the timings above
                not_available.append(f"fp32 roof on {dev}: not measured ({one_line(e)})")
        rate = gflop[size] / (t.p50_ms / 1000.0)
        out[key] = Compute(gflop_per_image=gflop[size], gflops_per_s=rate)
        if dev in roofs:
            peak = roofs[dev]["gflops_per_s"]
            out[key] = replace(
                out[key], roof_fraction=rate / peak, floor_ms=1e3 * gflop[size] / peak
            )
    return out, {"gflop_per_image": {str(k): v for k, v in gflop.items()}, "roofs": roofs}


def _cpu_roof(config: BenchConfig, when: str, not_available: list[str]) -> float | None:
    """The CPU's fp32 roof in GFLOP/s, measured as :func:`_compute` does; ``None`` (and a line in
    ``not_available``) where it cannot be."""
    try:
        return _roof_measure(config.isolate)(device="cpu", threads=config.threads).gflops_per_s
    except Exception as e:
        not_available.append(
            f"fp32 roof on cpu {when} the timed runs: not measured ({one_line(e)})"
        )
        return None


def _stability(
    timed: Timed,
    before: tuple[float | None, float | None],
    compute: dict[str, Any],
    measure_after: Callable[[], float | None],
    *,
    others: float | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """Judge the run (:func:`~edgeyolo.bench.latency.judge_stability`); returns the verdict and,
    per artifact, why its timing is suspect (its own series is noisy, or the machine was busy;
    empty: it is not).

    Args:
        before: ``(fp32 roof on the CPU, load average)`` read just before the first timed run.
        compute: :func:`_compute`'s block; its CPU roof is the one after the runs where a
            backend ran on the CPU (``measure_after`` measures it otherwise).
        others: the share of the machine's CPU other processes used during the timed runs
            (:func:`~edgeyolo.bench.latency.others_share`).
    """

    roof_after = compute["roofs"].get("cpu", {}).get("gflops_per_s")
    if before[0] is not None and all(t.device != "cpu" for _, t in timed.values()):
        roof_after = measure_after()  # every backend ran on a GPU: _compute measured no CPU roof
    noisy = {k: noisy_series(t.batches) for k, (_, t) in timed.items()}
    verdict = judge_stability(
        roof_before=before[0],
        roof_after=roof_after,
        load_before=before[1],
        load_after=load_average(),
        cores=available_cores(),
        noisy={k: v for k, v in noisy.items() if v},
        others=others,
    )
    busy = ["the machine was busy (see stability)"] if verdict["machine_busy"] else []
    return verdict, {k: (*noisy[k], *busy) for k in timed}


def _cpu_target_notes(specs: Sequence[ArtifactSpec]) -> list[str]:
    """A note per int8 graph made for VNNI (``cpu_target: vnni``) benched on a CPU without it."""

    vnni = [s.key for s in specs if s.cpu_target == "vnni"]
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


def _header(run: BenchRun, command: str | None, compute: dict[str, Any]) -> dict[str, Any]:
    """The report's header: schema, date, command, machine and versions, settings, compute."""
    cfg = run.config
    settings = {
        "weights": None if cfg.weights is None else str(cfg.weights),
        "data": None if cfg.data is None else str(cfg.data), "split": cfg.split,
        "images": len(run.records) or max(map(len, run.stored.values()), default=0),
        "img_size": run.img_size, "batch_sizes": list(cfg.batch_sizes),
        "warmup": cfg.warmup, "runs": cfg.runs, "device": cfg.device, "threads": cfg.threads,
        "isolate": cfg.isolate, "isolation": cfg.isolation,
    }  # fmt: skip
    return {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or " ".join(sys.argv),
        **environment(),
        "settings": settings,
        "compute": compute,
        "thresholds": {
            "map": asdict(COCO_NMS),
            "parity": _parity_text(cfg),
        },
    }


def _parity_text(cfg: BenchConfig) -> str:
    match = "matching greedy by reference score, same class, IoU >= 0.5"
    if cfg.weights is None:
        return (
            "against the PyTorch detections each export folder stores (references.npz: made at "
            f"export, on its stored images, at the graph's own NMS); {match}"
        )
    return f"each export's deployment NMS (manifest.json), the reference at the same; {match}"


def run_bench(
    config: BenchConfig,
    *,
    progress: bool = True,
    command: str | None = None,
    log: Log | None = None,
) -> BenchResult:
    """Bench the checkpoint ``config.weights`` (the reference) and every model in
    ``config.models`` (see :class:`~edgeyolo.bench.config.BenchConfig` for the settings).

    Args:
        config: what to bench, and how.
        progress: show progress bars on stderr.
        command: the command line recorded in the report (default: ``sys.argv``).
        log: called with each note as it happens (models skipped or failed).

    With ``config.isolate`` the timing processes are *spawned*: a script calling this must guard
    its entry point with ``if __name__ == "__main__":`` (spawn re-imports the main module).

    Returns:
        The header (machine, versions, command, date, settings), the reference's key, a result
        per artifact (reference first), the stability verdict (:func:`_stability`), notes (facts
        that qualify a figure), and a line per model or fact not available or failed.

    Raises:
        ConfigError: no images in the split, a model file that is missing or of the wrong kind,
            a class count that differs from the checkpoint's, or a reference that cannot run.
    """
    run, specs = _prepare(config, log)
    with _progress(progress) as prog:
        run.prog = prog
        with _task(prog, "measuring the fp32 roof"):
            before = (_cpu_roof(config, "before", run.not_available), load_average())
        timed, others = _time_all(run, specs)
        with _task(prog, "measuring the fp32 roof"):
            compute, block = _compute(timed, run.net, config, run.not_available)
            stability, suspect = _stability(
                timed,
                before,
                block,
                lambda: _cpu_roof(config, "after", run.not_available),
                others=others,
            )
        judge = score if config.weights is not None else score_stored
        scores = {k: judge(run, s) for k, (s, _) in timed.items()}
    return BenchResult(
        header=_header(run, command, block),
        reference=specs[0].key,
        artifacts={
            k: ArtifactResult(s, t, compute[k], suspect[k], scores[k])
            for k, (s, t) in timed.items()
        },
        stability=stability,
        notes=tuple(_cpu_target_notes([s for s, _ in timed.values()])),
        not_available=tuple(run.not_available),
        failed=tuple(run.failed),
    )
