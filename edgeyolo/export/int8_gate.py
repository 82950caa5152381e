"""The int8 accuracy gate: which quantized layer hurts most, and keeping layers out of int8 until
the mAP budget holds with confidence.

:func:`layer_sensitivity` ranks the quantized convolutions by the SQNR of each one's output (the
fp32 graph's against the int8 graph's, on calibration images, each layer on its own Q/DQ
subgraph); :func:`int8_with_budget` re-quantizes (:func:`edgeyolo.export.quantize.quantize_int8`,
no recalibration) with the worst layer left out, one at a time, until the *upper bound* of the
mAP@0.5 drop's paired bootstrap interval (:func:`edgeyolo.metrics.bootstrap.paired_bootstrap`:
fp32 and int8 on the same resampled gate images) is within ``max_drop`` points, and reports every
step (:class:`GateReport`). A 100-image set carries about +-1 point of sampling noise, so a point
estimate inside the budget proves little: when the loop ends with the estimate inside the budget
but the bound outside, the gate is *undecided* (the set is too small): it warns, says how many
images would decide, and keeps the graph, or fails with ``strict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnxruntime.quantization import TensorsData

from edgeyolo.errors import AccuracyBudgetError, ExportError
from edgeyolo.export import quantize
from edgeyolo.export.calib import METHOD_ENUMS, CalibSet, calibrate
from edgeyolo.export.quantize import QDQ_OPS, QuantResult, ort_session, quantized_convs
from edgeyolo.metrics.bootstrap import (
    DropInterval,
    Matches,
    images_needed,
    map50,
    paired_bootstrap,
)

__all__ = [
    "GATE_LEVEL",
    "GATE_RESAMPLES",
    "GateReport",
    "GateStep",
    "int8_with_budget",
    "layer_sensitivity",
]

#: Bootstrap resamples of the gate's interval (a few tenths of a second on 100 images).
GATE_RESAMPLES = 1000
#: Confidence level of the gate's interval: the drop's upper bound is its 97.5th percentile.
GATE_LEVEL = 0.95


def _qdq_subgraph(
    conv: onnx.NodeProto, qmodel: onnx.ModelProto, types: dict[str, int]
) -> tuple[bytes, str, int]:
    """A model ``x → [Cast →] Q → DQ → Conv(DQ(w), b)`` holding one quantized conv; returns it
    serialized, with the name of its input ``x`` (the same tensor name as in fp32) and ``x``'s
    dtype there (fp16 inside a graph with fp16 outside the Q/DQ pairs; ``types`` maps tensor
    names of ``qmodel`` to ONNX dtypes)."""
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    inits = {i.name: i for i in qmodel.graph.initializer}
    nodes, leaves, used = [conv], set(), set()
    stack = [t for t in conv.input if t]
    while stack:
        name = stack.pop()
        if name in inits:
            used.add(name)
        elif name in producers and producers[name].op_type in (*QDQ_OPS, "Cast"):
            nodes.append(producers[name])
            stack.extend(t for t in producers[name].input if t)
        else:
            leaves.add(name)
    if len(leaves) != 1:
        raise ExportError(f"{conv.name}: expected one fp32 input behind its Q/DQ, got {leaves}")
    x = leaves.pop()
    order = {id(n): i for i, n in enumerate(qmodel.graph.node)}
    x_type = types.get(x, onnx.TensorProto.FLOAT)
    y_type = types.get(conv.output[0], onnx.TensorProto.FLOAT)
    graph = helper.make_graph(
        sorted(nodes, key=lambda n: order[id(n)]),
        "qdq_conv",
        [helper.make_tensor_value_info(x, x_type, None)],
        [helper.make_tensor_value_info(conv.output[0], y_type, None)],
        initializer=[inits[n] for n in sorted(used)],
    )
    model = helper.make_model(graph, opset_imports=qmodel.opset_import)
    model.ir_version = qmodel.ir_version
    return model.SerializeToString(), x, x_type


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX dtype of every tensor of ``model`` (shape inference)."""
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {i.name: i.data_type for i in g.initializer}
    types.update((v.name, v.type.tensor_type.elem_type) for v in [*g.input, *g.value_info])
    types.update((v.name, v.type.tensor_type.elem_type) for v in g.output)
    return types


def layer_sensitivity(
    fp32_path: str | Path,
    int8_path: str | Path,
    calib: CalibSet,
    *,
    max_images: int = 16,
) -> list[tuple[str, float]]:
    """SQNR (dB) of each quantized conv's own quantization, worst (lowest) first.

    For every Conv with Q/DQ in ``int8_path``, its fp32 input activation (from the fp32 graph) goes
    through that conv's Q/DQ and int8 weights (in fp16, with the input rounded to fp16, where the
    int8 graph is fp16 outside its Q/DQ pairs); the result is compared with the fp32 conv output:
    ``SQNR = 10 log10(sum(y^2) / sum((y - y_q)^2))`` over the first ``max_images`` images. The
    layers are measured in isolation (upstream error does not accumulate), so the ranking says
    which layer's *own* quantization loses the most signal; ``inf`` means no loss.
    """
    qmodel = onnx.load(str(int8_path))
    types = _dtypes(qmodel)
    minis = {
        c.name: (*_qdq_subgraph(c, qmodel, types), c.output[0]) for c in quantized_convs(qmodel)
    }
    fp32 = onnx.load(str(fp32_path))
    existing = {o.name for o in fp32.graph.output}
    wanted = sorted({t for _, x, _, y in minis.values() for t in (x, y)} - existing)
    fp32.graph.output.extend(
        helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted
    )
    ref = ort_session(fp32.SerializeToString())
    sessions = {name: ort_session(blob, threads=1) for name, (blob, *_) in minis.items()}
    input_name = ref.get_inputs()[0].name
    names = [o.name for o in ref.get_outputs()]
    signal = dict.fromkeys(minis, 0.0)
    noise = dict.fromkeys(minis, 0.0)
    for i in range(min(max_images, len(calib))):
        acts = dict(zip(names, ref.run(None, {input_name: calib.images[i : i + 1]}), strict=True))
        for name, (_, x, x_type, y) in minis.items():
            feed = acts[x].astype(onnx.helper.tensor_dtype_to_np_dtype(x_type))
            y_q = sessions[name].run(None, {x: feed})[0].astype(np.float64)
            signal[name] += float(np.sum(np.square(acts[y], dtype=np.float64)))
            noise[name] += float(np.sum(np.square(acts[y] - y_q)))
    db = {
        n: 10 * math.log10(max(signal[n], 1e-30) / noise[n]) if noise[n] else math.inf
        for n in minis
    }
    return sorted(db.items(), key=lambda t: t[1])


@dataclass(frozen=True)
class GateStep:
    """One attempt of the gate: the convs kept out of int8, int8's mAP@0.5 (points) and the
    drop's interval against fp32 on the gate images."""

    excluded: tuple[str, ...]
    score: float
    interval: DropInterval


@dataclass(frozen=True)
class GateReport:
    """The INT8 accuracy gate's record.

    ``steps`` holds every attempt in order; ``excluded``/``score``/``interval``/``result`` are
    the last attempt's. ``decision`` is ``"passed"`` (the interval's upper bound is within
    ``max_drop``), ``"undecided"`` (the drop is within ``max_drop`` but its upper bound is not:
    the set is too small to decide; the graph is kept unless ``strict``) or ``"failed"``;
    ``images_needed`` estimates the gate images an interval of half-width ``max_drop - drop``
    would need (``None`` when the drop is over budget). ``sensitivity`` is ``(conv, SQNR dB)``,
    worst first (empty when the first attempt passed).
    """

    steps: tuple[GateStep, ...]
    excluded: tuple[str, ...]
    score: float
    interval: DropInterval
    decision: str
    images_needed: int | None
    fp32_score: float
    max_drop: float
    method: str
    strict: bool = False
    sensitivity: tuple[tuple[str, float], ...] = ()
    result: QuantResult | None = field(default=None, compare=False)

    @property
    def passed(self) -> bool:
        """The upper bound of the drop is within ``max_drop``."""
        return self.decision == "passed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the manifest); an infinite SQNR becomes ``None``."""
        iv = self.interval
        return {
            "method": self.method,
            "passed": self.passed,
            "decision": self.decision,
            "decided": self.decision != "undecided",
            "strict": self.strict,
            "fp32_map50": self.fp32_score,
            "int8_map50": self.score,
            "max_drop": self.max_drop,
            "drop": iv.drop,
            "low": iv.low,
            "high": iv.high,
            "level": iv.level,
            "resamples": iv.resamples,
            "n_images": iv.n_images,
            "images_needed": self.images_needed,
            "kept_fp32": list(self.excluded),
            "steps": [
                {
                    "kept_fp32": list(s.excluded),
                    "map50": s.score,
                    "drop": s.interval.drop,
                    "low": s.interval.low,
                    "high": s.interval.high,
                }
                for s in self.steps
            ],
            "sensitivity_db": {n: (None if math.isinf(v) else v) for n, v in self.sensitivity},
        }

    def describe(self) -> str:
        """Every step as text, one per line."""
        lines = [f"fp32 mAP@0.5 {self.fp32_score:.2f}, allowed drop {self.max_drop:.2f} points"]
        for i, s in enumerate(self.steps):
            lines.append(
                f"  step {i}: int8 mAP@0.5 {s.score:.2f}, {s.interval.describe()}, "
                f"layers out of int8: {', '.join(s.excluded) or 'none'}"
            )
        return "\n".join(lines)


def _needed(interval: DropInterval, max_drop: float) -> int | None:
    """Gate images for an interval of half-width ``max_drop - drop``; ``None`` when none would
    do (the drop itself is at or over the budget)."""
    margin = max_drop - interval.drop
    return images_needed(interval, margin) if margin > 0 else None


def _verdict(interval: DropInterval, max_drop: float) -> str:
    """``passed``, ``undecided`` or ``failed`` (see :class:`GateReport`). A percentile interval
    may, on a skewed resampling distribution, end below the point estimate: both must hold."""
    if max(interval.high, interval.drop) <= max_drop:
        return "passed"
    return "undecided" if interval.drop <= max_drop else "failed"


def _too_small(report: GateReport) -> str:
    """Why an undecided gate could not decide, and what would."""
    iv, needed = report.interval, report.images_needed
    more = (
        f"an interval of half-width {report.max_drop - iv.drop:.2f} points (the budget left) "
        f"needs about {needed} gate images"
        if needed is not None
        else "no interval fits the budget left"
    )
    return (
        f"int8 {iv.describe()}: the drop is within the {report.max_drop:.2f}-point budget, but "
        f"its upper bound is not, so the gate set is too small to decide; {more}. Give --data a "
        "bigger --val-split, a larger --int8-max-drop, or another --calib-method"
    )


def _score(
    evaluate: Callable[[Path], Matches],
    path: Path,
    reference: Matches,
    resamples: int,
    level: float,
) -> tuple[float, DropInterval]:
    """int8's mAP@0.5 (points) on the gate images and its drop's paired interval."""
    matches = evaluate(path)
    score = 100.0 * map50(matches)
    if not math.isfinite(score):
        raise ExportError(f"evaluate({path.name}) gave mAP@0.5 {score}: no ground truth?")
    return score, paired_bootstrap(reference, matches, resamples=resamples, level=level)


def _finish(report: GateReport, out_path: Path, log: Callable[[str], object]) -> GateReport:
    """Keep a passing graph; warn about (or, ``strict``, fail) an undecided one; fail the rest.

    Raises:
        AccuracyBudgetError: ``failed``, or ``undecided`` with ``strict``; ``out_path`` is
            removed so that no failing int8 graph is left to ship.
    """
    if report.decision == "passed":
        return report
    if report.decision == "undecided" and not report.strict:
        log(f"warning: {_too_small(report)}; kept it (--strict fails instead)")
        return report
    out_path.unlink(missing_ok=True)
    iv = report.interval
    if report.decision == "undecided":
        message = f"{_too_small(report)} (--strict)"
    else:
        message = (
            f"int8 stays {iv.drop:.2f} mAP@0.5 points below fp32 after {len(report.steps)} "
            f"attempts (budget {report.max_drop:.2f}; {iv.describe()}); raise --int8-max-drop, "
            "try another --calib-method, use more representative --calib images, or ship fp16"
        )
    error = AccuracyBudgetError(f"{message}.\n{report.describe()}")
    error.report = report  # type: ignore[attr-defined]
    raise error


def int8_with_budget(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    calib: CalibSet,
    method: str,
    ranges: TensorsData | None = None,
    evaluate: Callable[[Path], Matches],
    reference: Matches,
    max_drop: float,
    max_steps: int = 8,
    strict: bool = False,
    resamples: int = GATE_RESAMPLES,
    level: float = GATE_LEVEL,
    quantize_heads: bool = False,
    placement: str = "tensorrt",
    reduce_range: bool | None = None,
    high_precision: str | None = None,
    log: Callable[[str], object] = print,
) -> GateReport:
    """Quantize, score, and keep the most sensitive layers in fp32 until the drop's upper bound
    is in budget.

    Calibrates once (:func:`calibrate`; pass ``ranges`` to reuse ranges already computed on a
    graph with the same ``/net/`` part), then: quantize → ``evaluate(out_path)`` (the ONNX file's
    :class:`~edgeyolo.metrics.bootstrap.Matches` on the gate images) → the paired bootstrap
    interval of the mAP@0.5 drop against ``reference`` (fp32's matches on the same images) → if
    its upper bound exceeds ``max_drop`` points, move the most sensitive conv still in int8
    (:func:`layer_sensitivity`, measured once on the first int8 graph) to fp32 and retry, at most
    ``max_steps`` times.

    Returns:
        :class:`GateReport`, ``decision`` ``"passed"``, or ``"undecided"`` without ``strict``
        (a warning is logged); ``out_path`` holds the last graph.

    Raises:
        AccuracyBudgetError: the drop itself is over budget after ``max_steps`` exclusions (or
            nothing is left to exclude), or the gate is undecided and ``strict``; its message
            lists every step, its ``report`` attribute is the GateReport. ``out_path`` is removed.
    """
    out_path = Path(out_path)
    if ranges is None:
        log(f"int8: calibrating on {len(calib)} images from {calib.folder} ({method})")
        ranges = calibrate(fp32_path, calib, method=method)
    elif ranges.calibration_method != METHOD_ENUMS[method]:
        raise ExportError(f"ranges were calibrated with {ranges.calibration_method}, not {method}")
    fp32_score = 100.0 * map50(reference)
    extra: list[str] = []
    steps: list[GateStep] = []
    ranking: list[tuple[str, float]] = []
    while True:
        result = quantize.quantize_int8(
            fp32_path,
            out_path,
            ranges=ranges,
            exclude=extra,
            quantize_heads=quantize_heads,
            placement=placement,
            reduce_range=reduce_range,
            high_precision=high_precision,
        )
        score, interval = _score(evaluate, out_path, reference, resamples, level)
        steps.append(GateStep(result.excluded, score, interval))
        passed = _verdict(interval, max_drop) == "passed"
        log(
            f"int8 step {len(steps) - 1}: mAP@0.5 {score:.2f} vs fp32 {fp32_score:.2f}, "
            f"{interval.describe()}, budget {max_drop:.2f} "
            f"({'upper bound within' if passed else 'upper bound over'}); layers out of int8: "
            f"{len(result.excluded)}" + (f", latest {extra[-1]}" if extra else "")
        )
        if not ranking and not passed:
            ranking = layer_sensitivity(fp32_path, out_path, calib)
            log(
                "int8 sensitivity (SQNR dB, worst first): "
                + ", ".join(f"{n} {s:.1f}" for n, s in ranking[:5])
            )
        candidates = [n for n, _ in ranking if n in result.quantized]
        if passed or len(extra) >= max_steps or len(candidates) <= 1:
            break
        extra.append(candidates[0])
    report = GateReport(
        steps=tuple(steps),
        excluded=result.excluded,
        score=score,
        interval=interval,
        decision=_verdict(interval, max_drop),
        images_needed=_needed(interval, max_drop),
        fp32_score=fp32_score,
        max_drop=max_drop,
        method=method,
        strict=strict,
        sensitivity=tuple(ranking),
        result=result,
    )
    return _finish(report, out_path, log)
