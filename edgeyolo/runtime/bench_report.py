"""The bench result (:func:`edgeyolo.runtime.bench.run_bench`) as JSON, Markdown, PNG and a table.

Ratios are against the reference (the PyTorch checkpoint): ``× PyTorch`` is the artifact's batch-1
median latency over the checkpoint's, so 0.5 means twice as fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["environment", "plot_report", "print_report", "to_markdown", "write_report"]

_log = logging.getLogger(__name__)
_STAGES = ("preprocess", "h2d", "compute", "d2h", "postprocess")


def environment() -> dict[str, Any]:
    """``{"machine": {cpu, cores, gpu, platform}, "versions": {package: version or None}}``."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from edgeyolo import __version__
    from edgeyolo.export.tensorrt import tensorrt_version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "edgeyolo": __version__}
    for pkg in ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "pycuda"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    versions["tensorrt"] = tensorrt_version()
    machine = {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform()}
    return {"machine": machine, "versions": versions}


def _clean(v: Any) -> Any:
    """NaN and infinities → ``None`` everywhere (strict JSON)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _nms(t: dict[str, Any]) -> str:
    return f"conf {t['conf_thres']}, IoU {t['iou_thres']}, {t['max_det']} dets"


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row of display strings per artifact, the reference first."""
    arts = result["artifacts"]
    ref = arts.get(result["reference"], {})
    ref_p50 = (ref.get("latency_ms") or {}).get("p50")
    rows = []
    for key, a in arts.items():
        lat = a["latency_ms"]
        big = a["batches"][max(a["batches"], key=int)]
        p = a.get("parity") or {}
        c = a.get("compute") or {}
        denom = max(p.get("ref_count", 0), p.get("other_count", 0))
        rows.append(
            {
                "model": key,
                "backend": a["backend"],
                "precision": a["precision"],
                "p50 ms": _f(lat["p50"], ".2f"),
                "p99 ms": _f(lat["p99"], ".2f"),
                "× PyTorch": _f(lat["p50"] / ref_p50 if ref_p50 else None, ".2f"),
                "img/s": f"{big['throughput_ips']:.1f} @{big['batch']}",
                "GFLOP/s": _f(c.get("gflops_per_s"), ".0f"),
                "% fp32 roof": _f(
                    100 * c["roof_fraction"] if "roof_fraction" in c else None, ".0f"
                ),
                "mAP@0.5": _f(a.get("map50")),
                "mAP@.5:.95": _f(a.get("map50_95")),
                "matched": f"{p['matched']}/{denom}" if p else "ref",
                "mean IoU": _f(p.get("mean_iou")),
                "p5 IoU": _f(p.get("p5_iou")),
                "score MAE": _f(p.get("score_mae"), ".2g"),
                "missed/extra/cls≠": (
                    f"{p['missed']}/{p['extra']}/{p['class_disagreement']}" if p else "–"
                ),
            }
        )
    return rows


def _notes(result: dict[str, Any]) -> list[str]:
    out = [f"not available — {n}" for n in result.get("not_available", [])]
    out += [f"FAILED — {n}" for n in result.get("failed", [])]
    for key, a in result["artifacts"].items():
        out += [f"{key}: {s} (not timed)" for s in a.get("skipped", [])]
        if not str(a.get("map_setting", "COCO")).startswith("COCO"):
            out.append(f"{key}: mAP at {a['map_setting']}")
    return out


def _compute_lines(c: dict[str, Any] | None, result: dict[str, Any]) -> list[str]:
    """The work per image, each device's roof, and the fastest an fp32 run could be there."""
    if not c:
        return []
    work = ", ".join(f"{g:.2f} GFLOP at {k} px" for k, g in c["gflop_per_image"].items())
    out = [f"- compute: {work} per image (multiply-add = 2)"]
    ref = result["artifacts"].get(result["reference"], {})
    for dev, r in c["roofs"].items():
        line = (
            f"- fp32 roof on {dev}: {r['gflops_per_s']:.0f} GFLOP/s ({r['method']}; reached at "
            f"n = {r['size']})"
        )
        rc = ref.get("compute") if ref.get("device") == dev else None
        if rc and "floor_ms" in rc:
            floor, p50 = rc["floor_ms"], ref["latency_ms"]["p50"]
            line += (
                f"; the reference's work at that roof takes {floor:.2f} ms, "
                f"{floor / p50:.2f}× its p50, the best ratio an fp32 backend using direct or GEMM "
                "convolutions can reach there"
            )
        out.append(line)
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """The summary table, stage split, worst images and notes as Markdown."""
    h, s = result["header"], result["header"]["settings"]
    m, v = h["machine"], h["versions"]
    rows = _rows(result)
    lines = [
        f"# edgeyolo bench, {h['date']}",
        "",
        f"`{h['command']}`",
        "",
        f"- machine: {m['cpu']} ({m['cores']} cores), GPU: {m['gpu'] or 'none'}, {m['platform']}",
        "- versions: " + ", ".join(f"{k} {x or 'not installed'}" for k, x in v.items()),
        f"- data: {s['data']} split `{s['split']}`, {s['images']} images, input {s['img_size']} px",
        f"- timing: batch sizes {s['batch_sizes']}, {s['warmup']} warm-up + {s['runs']} timed "
        f"runs, device {s['device']}; {s['isolation']}",
        f"- mAP at COCO settings ({_nms(h['thresholds']['map'])}) unless noted; parity: "
        f"{h['thresholds']['parity']}",
        *_compute_lines(h.get("compute"), result),
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(r.values()) + " |" for r in rows),
        "",
        "Latency at batch 1 (p50, p99); `× PyTorch`: p50 over the checkpoint's p50; img/s at the "
        "largest batch timed; GFLOP/s: the model's FLOPs per image over batch-1 p50, and its "
        "share of the device's fp32 matmul roof (int8/fp16 may exceed it); matched: matched "
        "pairs / max(reference boxes, boxes).",
        "",
        "## Stages (batch 1, mean ms)",
        "",
        "| model | " + " | ".join(_STAGES) + " | infer (end to end) | bytes D2H |",
        "|" + "---|" * (len(_STAGES) + 3),
    ]
    for key, a in result["artifacts"].items():
        st = a.get("stages_ms") or {}
        cells = [_f(st.get(k), ".3f") for k in _STAGES]
        d2h = "–" if a.get("bytes_d2h") is None else f"{a['bytes_d2h']:,}"
        lines.append(f"| {key} | {' | '.join(cells)} | {a['latency_ms']['mean']:.3f} | {d2h} |")
    worst = [
        (k, w)
        for k, a in result["artifacts"].items()
        for w in (a.get("parity") or {}).get("worst_images", [])[:3]
        if w["matched_fraction"] < 1.0
    ]
    if worst:
        lines += ["", "## Worst images (lowest matched fraction, then mean IoU; up to 3)", ""]
        lines += ["| model | image | ref / other | matched | missed | extra | cls≠ | mean IoU |"]
        lines += ["|" + "---|" * 8]
        for k, w in worst:
            lines.append(
                f"| {k} | {Path(w['file'] or str(w['index'])).name} | {w['ref_count']} / "
                f"{w['other_count']} | {w['matched']} | {w['missed']} | {w['extra']} | "
                f"{w['class_disagreement']} | {_f(w['mean_iou'])} |"
            )
    notes = _notes(result)
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def plot_report(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: batch-1 p50 latency vs mAP@0.5 per artifact, and each artifact's matched-IoU
    histogram against the reference. Needs matplotlib (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, a in result["artifacts"].items():
        x, y = a["latency_ms"]["p50"], a.get("map50")
        if y is not None and not math.isnan(y):
            ax1.scatter([x], [y], s=40)
            ax1.annotate(key, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        hist = (a.get("parity") or {}).get("iou_histogram")
        if hist and sum(hist["counts"]):
            ax2.stairs(hist["counts"], hist["edges"], label=key, linewidth=1.5)
    ref = result["artifacts"].get(result["reference"], {})
    if "floor_ms" in (ref.get("compute") or {}):
        floor, dev = ref["compute"]["floor_ms"], ref["device"]
        roof = result["header"]["compute"]["roofs"][dev]["gflops_per_s"]
        ax1.axvline(floor, color="grey", linestyle="--", linewidth=1)
        ax1.annotate(
            f"fastest fp32 at {roof:.0f} GFLOP/s ({dev})", (floor, 0.02), rotation=90,
            xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
            fontsize=7, color="grey",
        )  # fmt: skip
        ax1.set_xlim(left=0)
    ax1.set(xlabel="latency p50, batch 1 (ms)", ylabel="mAP@0.5", title="latency vs accuracy")
    ax1.grid(alpha=0.3)
    ax2.set(
        xlabel="1 − IoU with the PyTorch box (≤1e-6 in the first bin)",
        ylabel="matched pairs",
        title="distribution of matched-box IoU",
    )
    ax2.set_xscale("log")
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    fig.suptitle(f"edgeyolo bench — {result['header']['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    result: dict[str, Any], out_dir: str | Path, *, log: Callable[[str], object] | None = None
) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``; returns their paths
    by kind (``json``, ``md``, ``png``). Without matplotlib the PNG is skipped with a note."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "md": out / "bench.md"}
    paths["json"].write_text(json.dumps(_clean(result), indent=2) + "\n")
    paths["md"].write_text(to_markdown(result))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = "matplotlib is not installed: no bench.png (pip install matplotlib)"
        _log.warning(note)
        if log:
            log(note)
        return paths
    paths["png"] = plot_report(result, out / "bench.png")
    return paths


#: Terminal columns of ``edgeyolo bench``, most important first: a narrow terminal drops the tail.
_PRIORITY = (
    "model", "prec", "p50 ms", "×PyTorch", "mAP50", "matched", "p99 ms", "IoU mean / p5",
    "GFLOP/s (roof %)", "img/s", "mAP50-95", "|Δscore|",
)  # fmt: skip


def _fitting_columns(rows: list[dict[str, str]], width: int) -> list[str]:
    """The columns, in display order, of the longest prefix of :data:`_PRIORITY` whose cells fit
    unwrapped in ``width`` characters (a rich box table spends 3 per column and 1 more)."""
    need = {c: max(len(c), *(len(r[c]) for r in rows)) for c in rows[0]}
    chosen: set[str] = set()
    used = 1
    for c in _PRIORITY:
        if c in chosen or len(chosen) >= 2 and used + need[c] + 3 > width:
            break
        chosen.add(c)
        used += need[c] + 3
    return [c for c in rows[0] if c in chosen]


def print_report(result: dict[str, Any], console: Any = None) -> None:
    """The summary as a rich table, then the notes (what was not benched, and why)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = result["header"]["settings"]
    table = Table(
        title=f"edgeyolo bench: {s['images']} {s['split']} images, {s['img_size']} px",
        caption=s["isolation"],
    )
    rows = [
        {
            "model": r["model"],
            "prec": r["precision"],
            "p50 ms": r["p50 ms"],
            "p99 ms": r["p99 ms"],
            "×PyTorch": r["× PyTorch"],
            "img/s": r["img/s"],
            "GFLOP/s (roof %)": f"{r['GFLOP/s']} ({r['% fp32 roof']})",
            "mAP50": r["mAP@0.5"],
            "mAP50-95": r["mAP@.5:.95"],
            "matched": r["matched"],
            "IoU mean / p5": f"{r['mean IoU']} / {r['p5 IoU']}" if r["matched"] != "ref" else "–",
            "|Δscore|": r["score MAE"],
        }
        for r in _rows(result)
    ]
    cols = _fitting_columns(rows, console.width)  # the rest are in bench.md
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "prec") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(r[c] for c in cols))
    console.print(table)
    for n in _notes(result):
        console.print(f"[yellow]note:[/] {n}", highlight=False, soft_wrap=True)
