"""The bench result (:func:`edgeyolo.bench.runner.run_bench`) as JSON, Markdown, PNG and a table.

Every function here takes the :class:`~edgeyolo.bench.results.BenchResult` or its ``to_dict()``.

Ratios are against the reference (the PyTorch checkpoint): ``× PyTorch`` is the artifact's batch-1
median latency over the checkpoint's, so 0.5 means twice as fast. Without a checkpoint (the
deploy side) the reference is the first model benched and the column is ``× ref``.

A run that other work disturbed (``result["stability"]``, see
:func:`edgeyolo.bench.latency.judge_stability`) gets a ``DISTURBED:`` line above every table,
and ``!`` beside each figure that is suspect: the latencies and throughput of a disturbed
artifact, and every speed ratio (``× PyTorch``, share of the roof) that involves one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from edgeyolo.bench.results import BenchResult, as_dict
from edgeyolo.console import make_console
from edgeyolo.lazy import lazy_import

__all__ = [
    "plot_figure",
    "plot_report",
    "print_report",
    "to_markdown",
    "write_report",
]

_log = logging.getLogger(__name__)
#: What the functions here take: a :class:`BenchResult`, or its ``to_dict()`` (or that read back
#: from ``bench.json``).
Result = BenchResult | Mapping[str, Any]
_STAGES = ("preprocess", "h2d", "compute", "d2h", "postprocess")
#: Beside a figure timed while the machine was disturbed.
MARK = "!"
#: The mAP axis of bench.png spans at least this much (within 0..1): a span of a few hundredths
#: around 0 magnifies nothing into noise.
_MAP_MIN_SPAN = 0.1

_MPL = {"min_version": "3.5", "install": "pip install matplotlib", "needed_for": "bench.png"}
MPL_FIGURE = lazy_import("matplotlib.figure", **_MPL)
MPL_AGG = lazy_import("matplotlib.backends.backend_agg", **_MPL)
MPL_TEXT = lazy_import("matplotlib.text", **_MPL)


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


def _marked(text: str, suspect: bool) -> str:
    """``text`` with :data:`MARK` appended when ``suspect`` (never on a missing figure)."""
    return text + MARK if suspect and text != "–" else text


def _matched(p: dict[str, Any]) -> str:
    """``pairs/max(boxes)``; ``nothing to compare`` when neither side found a box."""
    if not p:
        return "ref"
    denom = max(p["ref_count"], p["other_count"])
    return f"{p['matched']}/{denom}" if denom else "nothing to compare"


def _rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row of display strings per artifact, the reference first; :data:`MARK` beside a
    suspect figure (its artifact, or for a ratio the reference too, timed while disturbed)."""
    arts = result["artifacts"]
    ref = arts.get(result["reference"], {})
    ref_p50 = (ref.get("latency_ms") or {}).get("p50")
    ratio = ratio_label(result)
    rows = []
    for key, a in arts.items():
        lat = a["latency_ms"]
        big = a["batches"][max(a["batches"], key=int)]
        p = a.get("parity") or {}
        c = a.get("compute") or {}
        bad = bool(a.get("disturbed"))
        ratio_bad = key != result["reference"] and (bad or bool(ref.get("disturbed")))
        roof = 100 * c["roof_fraction"] if "roof_fraction" in c else None
        rows.append(
            {
                "model": key,
                "backend": a["backend"],
                "precision": a["precision"],
                "p50 ms": _marked(_f(lat["p50"], ".2f"), bad),
                "p99 ms": _marked(_f(lat["p99"], ".2f"), bad),
                ratio: _marked(_f(lat["p50"] / ref_p50 if ref_p50 else None, ".2f"), ratio_bad),
                "img/s": _marked(f"{big['throughput_ips']:.1f} @{big['batch']}", bad),
                "GFLOP/s": _marked(_f(c.get("gflops_per_s"), ".0f"), bad),
                "% fp32 roof": _marked(_f(roof, ".0f"), bad),
                "mAP@0.5": _f(a.get("map50")),
                "mAP@.5:.95": _f(a.get("map50_95")),
                "matched": _matched(p),
                "mean IoU": _f(p.get("mean_iou")),
                "p5 IoU": _f(p.get("p5_iou")),
                "score MAE": _f(p.get("score_mae"), ".2g"),
                "missed/extra/cls≠": (
                    f"{p['missed']}/{p['extra']}/{p['class_disagreement']}" if p else "–"
                ),
            }
        )
    return rows


def _what_scored(settings: dict[str, Any]) -> str:
    """``500 test images``, or without a data split the stored reference frames."""
    if settings.get("data") is None and "data" in settings:
        return f"{settings['images']} stored reference frames (no data split)"
    return f"{settings['images']} {settings['split']} images"


def ratio_label(result: dict[str, Any]) -> str:
    """``× PyTorch`` where the reference is the checkpoint, else ``× ref``."""
    ref = result["artifacts"].get(result["reference"], {})
    return "× PyTorch" if ref.get("backend") == "pytorch" else "× ref"


def _notes(result: dict[str, Any]) -> list[str]:
    out = list(result.get("notes", []))
    out += [f"not available — {n}" for n in result.get("not_available", [])]
    out += [f"FAILED — {n}" for n in result.get("failed", [])]
    for key, a in result["artifacts"].items():
        out += [f"{key}: {s} (not timed)" for s in a.get("skipped", [])]
        p = a.get("parity") or {}
        if p.get("passed") is False:
            out.append(f"{key}: parity BELOW its floor ({p.get('floor')})")
        elif p.get("passed") and p.get("against"):
            out.append(f"{key}: parity within its floor ({p['floor']}) against {p['against']}")
        if a.get("map50") is not None and not str(a.get("map_setting", "COCO")).startswith("COCO"):
            out.append(f"{key}: mAP at {a['map_setting']}")
    return out


def disturbed_line(result: Result) -> str | None:
    """``DISTURBED: <reasons> ...`` for a run other work disturbed, else ``None``."""
    result = as_dict(result)
    st = result.get("stability") or {}
    if not st.get("disturbed"):
        return None
    return (
        f"DISTURBED: {'; '.join(st['reasons'])}. Figures marked {MARK} were timed while other "
        "work competed for the machine, and the speed ratios are unreliable: rerun on a quiet "
        "machine."
    )


def _stability_line(st: dict[str, Any] | None) -> list[str]:
    """The three signals and their thresholds, quiet or not."""
    if not st:
        return []
    t = st["thresholds"]

    def pair(a: float | None, b: float | None, fmt: str) -> str:
        return f"{_f(a, fmt)} before / {_f(b, fmt)} after"

    drift = "" if st["roof_drift"] is None else f", drift {st['roof_drift']:.0%}"
    return [
        f"- stability: {'DISTURBED' if st['disturbed'] else 'no disturbance seen'}; fp32 roof "
        f"on cpu {pair(st['roof_before_gflops'], st['roof_after_gflops'], '.0f')} GFLOP/s"
        f"{drift} (limit {t['roof_drift']:.0%}); 1-minute load "
        f"{pair(st['loadavg_before'], st['loadavg_after'], '.1f')} on {st['cores']} cores "
        f"(limit {t['loadavg_per_core']:g} per core); each series' p99 within "
        f"{t['p99_over_p50']:g}× its p50 (or {t['p99_minus_p50_ms']:g} ms)"
    ]


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
            if ref.get("disturbed"):
                line += f" ({MARK} unreliable: the reference was timed while disturbed)"
        out.append(line)
    return out


def to_markdown(result: Result) -> str:
    """The summary table, stage split, worst images and notes as Markdown."""
    result = as_dict(result)
    h, s = result["header"], result["header"]["settings"]
    m, v = h["machine"], h["versions"]
    rows = _rows(result)
    lines = [
        f"# edgeyolo bench, {h['date']}",
        "",
        f"`{h['command']}`",
        "",
        f"- machine: {m['cpu']} ({m['cores']} cores; {m.get('cpu_flags', 'flags not recorded')}),"
        f" GPU: {m['gpu'] or 'none'}, {m['platform']}",
        "- versions: " + ", ".join(f"{k} {x or 'not installed'}" for k, x in v.items()),
        (
            f"- data: {s['data']} split `{s['split']}`, {s['images']} images, input "
            f"{s['img_size']} px"
            if s.get("data") is not None or "data" not in s
            else f"- data: none (no mAP); {_what_scored(s)}, input {s['img_size']} px"
        ),
        f"- timing: batch sizes {s['batch_sizes']}, {s['warmup']} warm-up + {s['runs']} timed "
        f"runs, device {s['device']}; {s['isolation']}",
        f"- mAP at COCO settings ({_nms(h['thresholds']['map'])}) unless noted; parity: "
        f"{h['thresholds']['parity']}",
        *_compute_lines(h.get("compute"), result),
        *_stability_line(result.get("stability")),
        "",
        *([f"**{dl}**", ""] if (dl := disturbed_line(result)) else []),
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(r.values()) + " |" for r in rows),
        "",
        f"Latency at batch 1 (p50, p99); `{ratio_label(result)}`: p50 over the reference's "
        f"({result['reference']}) p50; img/s at the "
        "largest batch timed; GFLOP/s: the model's FLOPs per image over batch-1 p50, and its "
        "share of the device's fp32 matmul roof (int8/fp16 may exceed it); matched: matched "
        "pairs / max(reference boxes, boxes) (nothing to compare: neither found a box); "
        f"{MARK}: timed while the machine was disturbed (see stability).",
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
        if w["matched_fraction"] is not None and w["matched_fraction"] < 1.0
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


def _map_limits(values: list[float]) -> tuple[float, float]:
    """mAP axis limits: the values' range, at least :data:`_MAP_MIN_SPAN` wide and kept inside
    0..1, plus 5 % margins."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < _MAP_MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - _MAP_MIN_SPAN / 2, mid + _MAP_MIN_SPAN / 2
        shift = max(-lo, 0.0) - max(hi - 1.0, 0.0)
        lo, hi = lo + shift, hi + shift
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _label_slots(n: int) -> Iterator[tuple[int, float]]:
    """``(side, dy)`` offsets in points for a label: right then left of its point, above then
    below it, one text line further out each ring (``n + 2`` rings: more than ``n`` labels fill)."""
    for ring in range(n + 2):
        for dy in (4.0 + 12 * ring, -14.0 - 12 * ring):
            for side in (1, -1):
                yield side, dy


def _label(ax: Any, point: tuple[str, float, float, Any], slot: tuple[int, float]) -> Any:
    """One point's name in its colour at offset ``slot``, a thin line back to the point."""
    name, x, y, color = point
    side, dy = slot
    return ax.annotate(
        name, (x, y), textcoords="offset points", xytext=(8 * side, dy), fontsize=8,
        color=color, ha="left" if side > 0 else "right", va="bottom",
        arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "shrinkA": 0, "shrinkB": 4},
    )  # fmt: skip


def _text_box(ann: Any, renderer: Any) -> Any:
    """The display box of an annotation's text alone (not its line)."""
    ann.update_positions(renderer)
    return MPL_TEXT.Text.get_window_extent(ann, renderer)


def _place_labels(
    ax: Any, points: list[tuple[str, float, float, Any]], renderer: Any, obstacles: list[Any]
) -> list[Any]:
    """Name each ``(name, x, y, colour)`` point with an annotation whose text box overlaps no
    other label and none of ``obstacles`` (display boxes): the first such slot of
    :func:`_label_slots` inside the axes, else the first free one outside them. Returns the
    annotations, in ``points`` order."""
    frame = ax.get_window_extent(renderer)
    boxes = list(obstacles)
    placed: list[Any] = []
    for point in points:
        fallback = None
        for slot in _label_slots(len(points)):
            ann = _label(ax, point, slot)
            box = _text_box(ann, renderer)
            if not any(box.overlaps(b) for b in boxes):
                if frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 <= frame.y1:
                    break
                fallback = fallback or slot
            ann.remove()
        else:  # no free slot inside the axes (more slots than labels: one outside is free)
            ann = _label(ax, point, fallback or slot)
            box = _text_box(ann, renderer)
        placed.append(ann)
        boxes.append(box)
    return placed


def _colour(i: int) -> str:
    """The ``i``-th artifact's colour (matplotlib's default cycle), the same in every panel."""
    return f"C{i % 10}"


def _latency_panel(ax: Any, result: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Latency (x) against mAP@0.5 (y) per artifact, and the fp32 floor. Returns the points to
    name ``(name, x, y, colour)`` and the texts their names must not cover."""
    points = []
    for i, (key, a) in enumerate(result["artifacts"].items()):
        x, y = a["latency_ms"]["p50"], a.get("map50")
        if y is not None and not math.isnan(y):
            dot = ax.scatter([x], [y], s=40, marker="osD^vP"[i % 6], color=_colour(i), zorder=3)
            name = key + (f" {MARK}" if a.get("disturbed") else "")
            points.append((name, x, y, dot.get_facecolor()[0]))
    texts = []
    ref = result["artifacts"].get(result["reference"], {})
    right = max([p[1] for p in points] or [1.0])
    if "floor_ms" in (ref.get("compute") or {}):
        floor, dev = ref["compute"]["floor_ms"], ref["device"]
        roof = result["header"]["compute"]["roofs"][dev]["gflops_per_s"]
        ax.axvline(floor, color="grey", linestyle="--", linewidth=1)
        texts.append(ax.annotate(
            f"fastest fp32 at {roof:.0f} GFLOP/s ({dev})", (floor, 0.02), rotation=90,
            xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
            fontsize=7, color="grey",
        ))  # fmt: skip
        right = max(right, floor)
    ax.set_xlim(0, right * 1.3)
    ys = [p[2] for p in points]
    ax.set_ylim(*_map_limits(ys))
    if ys and max(ys) < 0.01:
        texts.append(ax.text(
            0.5, 0.92, "every mAP@0.5 < 0.01: an undertrained model?", transform=ax.transAxes,
            ha="center", va="top", fontsize=9, color="firebrick",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9},
        ))  # fmt: skip
    ax.set(xlabel="latency p50, batch 1 (ms)", ylabel="mAP@0.5", title="latency vs accuracy")
    ax.grid(alpha=0.3)
    return points, texts


def _iou_panel(ax: Any, result: dict[str, Any]) -> None:
    """Each artifact's histogram of ``1 - IoU`` over matched pairs (log x); a centred note
    instead where no artifact has a matched pair."""
    compared = {k: a["parity"] for k, a in result["artifacts"].items() if a.get("parity")}
    drawn = [k for k, p in compared.items() if sum(p["iou_histogram"]["counts"])]
    ax.set_title("distribution of matched-box IoU")
    if not drawn:
        what = "no matched boxes" if compared else "no exported model benched"
        ax.text(0.5, 0.5, f"{what}: nothing to compare", transform=ax.transAxes, ha="center",
                va="center", fontsize=11, color="dimgrey")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    order = list(result["artifacts"])  # one colour per artifact in both panels
    for k in drawn:
        h = compared[k]["iou_histogram"]
        ax.stairs(h["counts"], h["edges"], label=k, linewidth=1.5, color=_colour(order.index(k)))
    ax.set_xscale("log")
    ax.set(xlabel="1 − IoU with the PyTorch box (≤1e-6 in the first bin)", ylabel="matched pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    empty = [k for k in compared if k not in drawn]
    if empty:
        ax.text(0.02, 0.97, "no matched boxes: " + ", ".join(empty), transform=ax.transAxes,
                va="top", fontsize=8, color="dimgrey")  # fmt: skip


def plot_figure(result: Result) -> Any:
    """The ``matplotlib.figure.Figure`` of bench.png (no pyplot state): batch-1 p50 latency vs
    mAP@0.5 per artifact, and each artifact's matched-IoU histogram against the reference."""
    result = as_dict(result)
    fig = MPL_FIGURE.Figure(figsize=(12, 4.8))
    canvas = MPL_AGG.FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    points, texts = _latency_panel(ax1, result)
    _iou_panel(ax2, result)
    title = f"edgeyolo bench — {result['header']['machine']['cpu']}"
    disturbed = (result.get("stability") or {}).get("disturbed")
    if disturbed:
        title += f" — DISTURBED: latencies marked {MARK} are unreliable (see bench.md)"
    fig.suptitle(title, fontsize=10, color="firebrick" if disturbed else "black")
    fig.tight_layout()
    renderer = canvas.get_renderer()  # after the layout: the final positions
    _place_labels(ax1, points, renderer, [t.get_window_extent(renderer) for t in texts])
    return fig


def plot_report(result: Result, path: str | Path) -> Path:
    """Write :func:`plot_figure` as a PNG at ``path``. Needs matplotlib."""
    result = as_dict(result)
    path = Path(path)
    plot_figure(result).savefig(path, dpi=120)
    return path


def write_report(
    result: Result, out_dir: str | Path, *, log: Callable[[str], object] | None = None
) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``; returns their paths
    by kind (``json``, ``md``, ``png``). Without matplotlib the PNG is skipped with a note."""
    result = as_dict(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "md": out / "bench.md"}
    paths["json"].write_text(json.dumps(_clean(result), indent=2) + "\n")
    paths["md"].write_text(to_markdown(result))
    if not MPL_FIGURE.available():
        note = "matplotlib is not installed: no bench.png (pip install matplotlib)"
        _log.warning(note)
        if log:
            log(note)
        return paths
    paths["png"] = plot_report(result, out / "bench.png")
    return paths


#: Terminal columns of ``edgeyolo bench``, most important first: a narrow terminal drops the tail.
_PRIORITY = (
    "model", "prec", "p50 ms", "×PyTorch", "×ref", "mAP50", "matched", "p99 ms", "IoU mean / p5",
    "GFLOP/s (roof %)", "img/s", "mAP50-95", "|Δscore|",
)  # fmt: skip


def _fitting_columns(rows: list[dict[str, str]], width: int) -> list[str]:
    """The columns, in display order, of the longest prefix of :data:`_PRIORITY` whose cells fit
    unwrapped in ``width`` characters (a rich box table spends 3 per column and 1 more)."""
    need = {c: max(len(c), *(len(r[c]) for r in rows)) for c in rows[0]}
    chosen: set[str] = set()
    used = 1
    for c in (c for c in _PRIORITY if c in need):
        if c in chosen or len(chosen) >= 2 and used + need[c] + 3 > width:
            break
        chosen.add(c)
        used += need[c] + 3
    return [c for c in rows[0] if c in chosen]


def print_report(result: Result, console: Any = None) -> None:
    """The summary as a rich table, then the notes (what was not benched, and why)."""
    result = as_dict(result)

    console = console or make_console()
    s = result["header"]["settings"]
    dl = disturbed_line(result)
    if dl:
        console.print(dl, style="bold red", highlight=False, soft_wrap=True, markup=False)
    table = Table(
        title=f"edgeyolo bench: {_what_scored(s)}, {s['img_size']} px",
        caption=s["isolation"] + (f"; {MARK}: timed while disturbed" if dl else ""),
    )
    rows = [
        {
            "model": r["model"],
            "prec": r["precision"],
            "p50 ms": r["p50 ms"],
            "p99 ms": r["p99 ms"],
            ratio_label(result).replace(" ", ""): r[ratio_label(result)],
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
        console.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)
