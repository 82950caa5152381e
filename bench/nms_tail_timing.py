"""Time the NMS tail alone (ONNX Runtime, CPU): the dense tail of ``--before`` against today's.

The tail is the hand-written half of the deploy graph (:func:`edgeyolo.export.graph.nms_tail`):
``pred_boxes [1, N, 4]``, ``pred_scores [1, N, C]`` → ``num_dets, boxes, scores, classes``. Three
tails run on the same fixed inputs, interleaved run by run so that a busy machine slows all alike:

- ``before``: ``nms_tail`` as it was at git revision ``--before`` (default 7ca84fe: NMS, then the
  survivors scattered into a dense ``[B, C * N]`` map and a ``TopK`` over all of it), behind the
  ``Transpose`` to ``[1, C, N]`` that its decode head did then (today the tail does it);
- ``after``: today's tail with the default candidate cap (3840);
- ``after, no cap``: today's tail with the cap out of reach, which isolates the restructuring.

Inputs (fixed seed): a 608 or 416 image's ``N`` yolov3 predictions, single-label as
:class:`edgeyolo.export.graph.DecodeHead` gives them (one non-zero class per box). 1 % of the
boxes sit on one of 8 objects (jittered copies, scores 0.05..0.99, the object's class); the rest
are background with scores log-uniform in 10^-3.05..10^-1.3 (so nearly all pass conf 0.001, as
with a real yolov3 at COCO settings, and none pass 0.25), random classes. ``--multi-label``
scores every class of a box (the tails are then built for it; candidates are pairs).

Usage::

    python bench/nms_tail_timing.py [--reps 30] [--sizes 608,416] [--before 7ca84fe] [--multi-label]

Prints one markdown row per (size, classes, conf): candidates, detections kept, the median time of
each tail (ms, one ONNX Runtime thread) and before/after ratios; and whether ``after, no cap``
returned exactly what ``before`` returned (it must, always), and ``after`` too (it must wherever
the cap does not bind).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort

from edgeyolo.export.graph import nms_tail

ROOT = Path(__file__).resolve().parents[1]
NUM_PREDS = {608: 3 * (19**2 + 38**2 + 76**2), 416: 3 * (13**2 + 26**2 + 52**2)}


def load_old_graph(rev: str) -> ModuleType:
    """``edgeyolo/export/graph.py`` as it was at ``rev``, imported as a module of its own."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:edgeyolo/export/graph.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "graph_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("graph_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_transpose(tail: onnx.ModelProto) -> onnx.ModelProto:
    """``tail`` (reading ``pred_scores [B, C, N]``) behind a ``Transpose`` from ``[B, N, C]``."""
    m = onnx.ModelProto()
    m.CopyFrom(tail)
    (scores,) = [i for i in m.graph.input if i.name == "pred_scores"]
    dims = scores.type.tensor_type.shape.dim
    dims[1].dim_value, dims[2].dim_value = dims[2].dim_value, dims[1].dim_value
    for node in m.graph.node:
        node.input[:] = ["before/scores_cn" if i == "pred_scores" else i for i in node.input]
    node = onnx.helper.make_node("Transpose", ["pred_scores"], ["before/scores_cn"], perm=[0, 2, 1])
    m.graph.node.insert(0, node)
    return m


def make_inputs(
    size: int, classes: int, seed: int = 0, *, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(pred_boxes [1, N, 4], pred_scores [1, N, C])`` as described in the module docstring;
    with ``multi_label`` every other class of a box scores ``0.3 * u**2`` of its best (u uniform
    in 0..1), as a multi-label head's second guesses do."""
    rng = np.random.default_rng(seed)
    n = NUM_PREDS[size]
    wh = rng.uniform(30, 200, (8, 2))
    xy = rng.uniform(0, size - wh)
    objects = np.concatenate([xy, xy + wh], 1)
    object_cls = rng.integers(0, classes, 8)
    near = rng.random(n) < 0.01
    which = rng.integers(0, 8, n)
    bxy = rng.uniform(0, size, (n, 2))
    bwh = rng.uniform(10, 150, (n, 2))
    boxes = np.concatenate([bxy - bwh / 2, bxy + bwh / 2], 1)
    jitter = rng.normal(0, 4, (n, 4))
    boxes[near] = objects[which[near]] + jitter[near]
    score = 10.0 ** rng.uniform(-3.05, -1.3, n)
    score[near] = rng.uniform(0.05, 0.99, near.sum())
    cls = rng.integers(0, classes, n)
    cls[near] = object_cls[which[near]]
    scores = np.zeros((1, n, classes), np.float32)
    if multi_label:
        scores[0] = score[:, None] * 0.3 * rng.random((n, classes)) ** 2
    scores[0, np.arange(n), cls] = score
    return boxes[None].astype(np.float32), scores


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_tails(
    tails: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray], reps: int
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Median ms of each tail over ``reps`` interleaved runs (after 3 warm-up runs each)."""
    sessions = {k: session(m) for k, m in tails.items()}
    outputs = {k: s.run(None, feed) for k, s in sessions.items()}
    for s in sessions.values():
        for _ in range(2):
            s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(reps):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}, outputs


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--sizes", default="608,416")
    ap.add_argument("--classes", default="1,10,80")
    ap.add_argument("--before", default="7ca84fe")
    ap.add_argument("--multi-label", action="store_true", help="every class scored (pairs)")
    args = ap.parse_args()
    old = load_old_graph(args.before)
    print(
        f"| size | C | conf | N | C x N | candidates | dets | before ms | after ms "
        f"| after, no cap ms | before/after | before/no cap | same (no cap, cap) |\n"
        f"|{'---|' * 13}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for c in (int(x) for x in args.classes.split(",")):
            boxes, scores = make_inputs(size, c, multi_label=args.multi_label)
            n = boxes.shape[1]
            for conf in (0.25, 0.001):
                kw = {"num_classes": c, "num_preds": n, "conf_thres": conf, "iou_thres": 0.45}
                mode = {"multi_label": args.multi_label}
                kw["max_det"] = 300 if conf < 0.01 else 100
                tails = {
                    "before": with_transpose(old.nms_tail(**kw)),
                    "after": nms_tail(**kw, **mode),
                    "no cap": nms_tail(**kw, **mode, max_candidates=10**9),
                }
                med, out = time_tails(
                    tails, {"pred_boxes": boxes, "pred_scores": scores}, args.reps
                )
                cands = int((scores > conf).sum())
                print(
                    f"| {size} | {c} | {conf} | {n} | {c * n} | {cands} | "
                    f"{int(out['before'][0].sum())} | {med['before']:.2f} | {med['after']:.2f} | "
                    f"{med['no cap']:.2f} | {med['before'] / med['after']:.1f} | "
                    f"{med['before'] / med['no cap']:.1f} | "
                    f"{same(out['before'], out['no cap'])}, {same(out['before'], out['after'])} |",
                    flush=True,
                )
    print(
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
