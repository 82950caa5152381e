"""Engines at export time, without TensorRT: the parity check every engine gets (on made-up
outputs), and the export pipeline's engine section with TensorRT's build replaced by a stand-in
and the engine "run" by ONNX Runtime on the graph it was built from.

What these cannot show is TensorRT's own behaviour: that is tests/export/test_tensorrt.py (fake
modules, real API names) and the GPU-marked tests.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.errors import ConfigError, ExportError, TensorRTNotAvailableError
from edgeyolo.export import engine_parity as ep
from edgeyolo.export import engines as engine_step
from edgeyolo.export import pipeline
from edgeyolo.export.onnx_export import build_fp32
from edgeyolo.export.tensorrt import EngineInfo
from edgeyolo.models.checkpoint import load_model
from edgeyolo.postprocess import Detections
from edgeyolo.runtime.conformance import ORT_ONLY_REASON
from edgeyolo.runtime.manifest import read_manifest, sha256_file
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession

K = 8  # padded detections per image in the made-up outputs


def made_up(seed: int, n: int) -> Detections:
    """``n`` random boxes (30..60 px) in a 128 px image, scores 0.3..1, 3 classes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(30, 60, (n, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
    scores = torch.tensor(np.sort(rng.uniform(0.3, 1.0, n))[::-1].copy(), dtype=torch.float32)
    return Detections(boxes=boxes, scores=scores, labels=torch.tensor(rng.integers(0, 3, n)))


def padded(dets: list[Detections]) -> dict[str, np.ndarray]:
    """The export graph's four outputs holding ``dets`` (padding left as junk)."""
    b = len(dets)
    out = {
        "num_dets": np.array([[len(d)] for d in dets], np.int32),
        "boxes": np.full((b, K, 4), 7.0, np.float32),
        "scores": np.full((b, K), 0.5, np.float32),
        "classes": np.full((b, K), 9, np.int32),
    }
    for i, d in enumerate(dets):
        out["boxes"][i, : len(d)] = d.boxes.numpy()
        out["scores"][i, : len(d)] = d.scores.numpy()
        out["classes"][i, : len(d)] = d.labels.numpy()
    return out


REFERENCE = [made_up(i, n) for i, n in enumerate([5, 0, 7, 3, 6])]  # 21 boxes on 5 images
IMAGES = np.zeros((5, 3, 32, 32), np.float32)


def engine_like(
    dets: list[Detections], batches: list[int] | None = None
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A ``run`` that returns ``dets`` in image order, recording each batch's size."""
    done = [0]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        start = done[0]
        done[0] += len(images)
        if batches is not None:
            batches.append(len(images))
        return padded(dets[start : done[0]])

    return run


def moved(dets: list[Detections], dx: float = 0.0, dscore: float = 0.0) -> list[Detections]:
    """``dets`` with each image's first box moved ``dx`` px (x and y), its score ``dscore``."""
    out = []
    for d in dets:
        boxes, scores = d.boxes.clone(), d.scores.clone()
        if len(d):
            boxes[0] += dx
            scores[0] += dscore
        out.append(Detections(boxes=boxes, scores=scores, labels=d.labels.clone()))
    return out


def dropped(dets: list[Detections], every: int = 0, images: int = 99) -> list[Detections]:
    """``dets`` without the first ``images`` images' first box (``every`` 0) or every
    ``every``-th box, the first included."""

    def gone(n: int, i: int) -> bool:
        return n < images and (i == 0 if every == 0 else i % every == 0)

    keep = [
        torch.tensor([not gone(n, i) for i in range(len(d))], dtype=torch.bool)
        for n, d in enumerate(dets)
    ]
    pairs = zip(dets, keep, strict=True)
    return [Detections(d.boxes[k], d.scores[k], d.labels[k]) for d, k in pairs]


# ----------------------------------------------------------------------- the comparison alone


def test_engine_detections_run_in_batches_of_the_engines_profile() -> None:
    batches: list[int] = []
    got = ep.engine_detections(engine_like(REFERENCE, batches), IMAGES, max_batch=2)
    assert batches == [2, 2, 1]
    assert [len(d) for d in got] == [5, 0, 7, 3, 6]  # padding is not read as boxes
    for a, b in zip(got, REFERENCE, strict=True):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)


def test_engine_detections_refuse_outputs_of_another_batch() -> None:
    with pytest.raises(ExportError, match="detections for 1 images from a batch of 2"):
        ep.engine_detections(lambda x: padded(REFERENCE[:1]), IMAGES, max_batch=2)


def test_an_fp32_engine_that_reproduces_pytorch_passes() -> None:
    got = ep.engine_detections(engine_like(moved(REFERENCE, 1e-3, 2e-5)), IMAGES, 4)  # rounding
    record = ep.engine_parity(REFERENCE, got, precision="fp32", tf32=False)
    assert record["passed"] and record["matched_fraction"] == 1.0 and record["matched"] == 21
    assert record["floor"] == ep.FP32_FLOOR.to_dict()
    lines: list[str] = []
    ep.check_engine_parity(record, Path("model_fp32.engine"), lines.append)
    assert lines == []


@pytest.mark.parametrize(
    ("got", "what"),
    [
        (moved(REFERENCE, dx=0.5), "21 of 21 boxes matched, min IoU 0.9"),  # 0.5 px off
        (moved(REFERENCE, dscore=1e-3), "max |score diff| 0.001"),
        (dropped(REFERENCE, images=4), "18 of 21 boxes matched"),  # image 1 has none
    ],
)
def test_an_fp32_engine_that_does_not_reproduce_pytorch_fails(
    got: list[Detections], what: str
) -> None:
    record = ep.engine_parity(REFERENCE, got, precision="fp32", tf32=False)
    assert not record["passed"]
    with pytest.raises(ExportError, match="does not reproduce the PyTorch model") as info:
        ep.check_engine_parity(record, Path("/x/model_fp32.engine"), print)
    message = str(info.value)
    assert "/x/model_fp32.engine" in message and what in message and "TF32 was off" in message


def test_tf32_fp16_and_int8_engines_are_held_to_their_floors_and_only_warned() -> None:
    near = moved(REFERENCE, dx=0.5, dscore=1e-3)  # fails fp32, fine for the others
    for precision, tf32 in (("fp32", True), ("fp16", False), ("int8", False)):
        record = ep.engine_parity(REFERENCE, near, precision=precision, tf32=tf32)
        assert record["passed"], (precision, tf32)
        assert record["floor"]["rule"] == ep.floor_for(precision, tf32).rule != ep.FP32_FLOOR.rule
    half = dropped(REFERENCE, every=2)  # 12 of 21 boxes gone
    lines: list[str] = []
    for precision in ("fp16", "int8"):
        record = ep.engine_parity(REFERENCE, half, precision=precision, tf32=False)
        assert not record["passed"]
        ep.check_engine_parity(record, Path(f"model_{precision}.engine"), lines.append)
    assert len(lines) == 2 and all("below its parity floor" in line for line in lines)
    assert "int8: matched >= 0.85" in lines[1]
    some = dropped(REFERENCE, images=3)  # 19 of 21: int8's floor holds, fp16's does not
    assert ep.engine_parity(REFERENCE, some, precision="int8", tf32=False)["passed"]
    assert not ep.engine_parity(REFERENCE, some, precision="fp16", tf32=False)["passed"]


def test_no_box_on_either_side_passes_with_a_note() -> None:
    empty = [made_up(0, 0)] * 3
    record = ep.engine_parity(empty, empty, precision="fp32", tf32=False)
    assert record["passed"] and record["matched_fraction"] is None
    lines: list[str] = []
    ep.check_engine_parity(record, Path("model_fp32.engine"), lines.append)
    assert len(lines) == 1 and "parity is unchecked" in lines[0]
    none_found = [made_up(0, 0)] * len(REFERENCE)
    assert not ep.engine_parity(REFERENCE, none_found, precision="int8", tf32=False)["passed"]


def test_fp32_floor_is_the_fp32_graphs_tolerance() -> None:
    assert ep.FP32_FLOOR.min_iou == pipeline.FP32_MIN_IOU
    assert ep.FP32_FLOOR.max_score_diff == pipeline.FP32_MAX_SCORE_DIFF
    assert ep.FP32_FLOOR.matched_fraction == 1.0
    with pytest.raises(ExportError, match="no parity floor for precision 'int4'"):
        ep.floor_for("int4", False)


# ------------------------------------------------------------------ the pipeline's engine part


class OrtRunner:
    """``EngineRunner`` stand-in: the "engine" is run as the ONNX graph it was built from."""

    shift = 0.0  # added to every output box: an engine that does not reproduce
    opened: list[Path] = []

    def __init__(self, engine: Path, *, check_compat: bool = True, device: int = 0) -> None:
        assert check_compat is False  # no manifest exists yet while the export is staged
        self.engine, self.max_batch = Path(engine), 2

    def __enter__(self) -> OrtRunner:
        OrtRunner.opened.append(self.engine)
        self.session = OnnxRuntimeSession(self.engine.with_suffix(".onnx"), threads=1)
        self.session.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.__exit__(None, None, None)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        assert 1 <= len(images) <= self.max_batch
        out = self.session.run(images)
        return {**out, "boxes": out["boxes"] + np.float32(self.shift)}


class FakeBuild:
    """``build_engine`` stand-in: writes a plan file (and a log line with ``log_file``)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, onnx_path: Path, engine_path: Path, **kw: Any) -> EngineInfo:
        self.calls.append({"onnx": Path(onnx_path).name, **kw})
        engine_path.write_bytes(b"plan of " + Path(onnx_path).read_bytes()[:64])
        if kw["log_file"] is not None:
            with open(kw["log_file"], "a") as f:
                f.write(f"[VERBOSE] built {engine_path.name}\n")
        return EngineInfo(
            engine_path, "10.3.0", "Fake GPU", (8, 7), kw["precision"], False, 0.5,
            kw["tf32"], ("FP16",) if kw["precision"] == "fp16" else (), "auto: test",
            kw["log_file"],
        )  # fmt: skip


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    """TensorRT, pycuda and a GPU "present"; builds by :class:`FakeBuild`, runs by ORT."""
    build = FakeBuild()
    monkeypatch.setattr(engine_step, "import_tensorrt", lambda: None)
    monkeypatch.setattr(engine_step, "import_pycuda", lambda: None)
    monkeypatch.setattr(engine_step, "gpu_identity", lambda: ("Fake GPU", (8, 7)))
    monkeypatch.setattr(engine_step, "build_engine", build)
    monkeypatch.setattr(ep, "EngineRunner", OrtRunner)
    monkeypatch.setattr(OrtRunner, "shift", 0.0)
    monkeypatch.setattr(OrtRunner, "opened", [])
    return build


def engine_cfg(checkpoint: Path, calib: Path, out: Path, **kw: Any) -> ExportConfig:
    base = {"fp16": True, "engine": True, "batch": 2, "conf_thres": 0.3}
    return ExportConfig(weights=str(checkpoint), out=str(out), calib=str(calib), **base | kw)


def test_export_builds_checks_and_records_each_engine(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path, fake_trt: FakeBuild
) -> None:
    out = tmp_path / "exp"
    lines: list[str] = []
    cfg = engine_cfg(busy_checkpoint, calib_folder, out, tf32=True, trt_verbose=True)
    m = pipeline.export_model(cfg, progress=False, log=lines.append)
    engines = {a["precision"]: a for a in m["artifacts"] if a["kind"] == "engine"}
    assert set(engines) == {"fp32", "fp16"}
    assert [c["onnx"] for c in fake_trt.calls] == ["model_fp32.onnx", "model_fp16.onnx"]
    for call in fake_trt.calls:
        assert (call["typing"], call["tf32"], call["verbose"]) == ("auto", True, True)
        assert list(call["outputs"]) == ["num_dets", "boxes", "scores", "classes"]
        assert call["artifact"]["kind"] == "onnx" and call["max_batch"] == 2
    assert [p.name for p in OrtRunner.opened] == ["model_fp32.engine", "model_fp16.engine"]
    for precision, e in engines.items():
        p = e["parity_vs_torch"]
        assert p["passed"] and p["ref_count"] > 0 and p["images"] > 0, p
        assert e["onnx_file"] == f"model_{precision}.onnx" and e["tf32"] is True
        assert sha256_file(out / e["file"]) == e["sha256"]
        assert e["build_log"] == "tensorrt_build.log"
    assert engines["fp32"]["parity_vs_torch"]["floor"]["rule"].startswith("fp32 with TF32")
    assert engines["fp32"]["parity_vs_torch"]["matched_fraction"] == 1.0
    log = (out / "tensorrt_build.log").read_text()
    assert "built model_fp32.engine" in log and "built model_fp16.engine" in log
    assert read_manifest(out)["artifacts"] == m["artifacts"]


def test_an_fp32_engine_that_does_not_reproduce_fails_the_export(
    tmp_path: Path,
    busy_checkpoint: Path,
    calib_folder: Path,
    fake_trt: FakeBuild,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(OrtRunner, "shift", 2.0)  # every box 2 px off
    out = tmp_path / "exp"
    cfg = engine_cfg(busy_checkpoint, calib_folder, out, trt_verbose=True)
    with pytest.raises(ExportError, match="model_fp32.engine does not reproduce") as info:
        pipeline.export_model(cfg, progress=False, log=lambda line: None)
    kept = tmp_path / "exp.tensorrt_build.log"
    assert f"TensorRT's build log: {kept}" in str(info.value)
    assert "built model_fp32.engine" in kept.read_text()
    assert not out.exists()  # all or nothing: the staged export is gone
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]


def test_the_cpu_only_int8_graph_gets_no_engine(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path, fake_trt: FakeBuild
) -> None:
    """Called on the engine section directly, with the int8 graph's manifest entry as the
    onnxruntime placement writes it (calibrating one here would cost a minute)."""
    cfg = engine_cfg(busy_checkpoint, calib_folder, tmp_path / "exp", fp16=False)
    net, _ = load_model(busy_checkpoint, device=torch.device("cpu"))
    stage = tmp_path / "stage"
    stage.mkdir()
    images = pipeline._check_images(cfg, 128, print)
    fp32_path, _ = build_fp32(net, stage / "model_fp32.onnx", img_size=128, conf_thres=0.3,
                              check_images=images)  # fmt: skip
    fp32 = pipeline._onnx_entry(fp32_path, "fp32")
    int8 = {**fp32, "precision": "int8", "file": "model_int8.onnx", "placement": "onnxruntime"}
    lines: list[str] = []
    reference = pipeline.torch_reference(net, images, cfg=cfg)
    entries = engine_step.build_engines(cfg, reference, images, [fp32, int8], stage,
                                        tmp_path / "exp", 128, lines.append)  # fmt: skip
    assert [e["file"] for e in entries] == ["model_fp32.engine"]
    assert [c["onnx"] for c in fake_trt.calls] == ["model_fp32.onnx"]
    assert f"note: no engine from model_int8.onnx: it is the {ORT_ONLY_REASON}" in lines
    assert "onnx-tensorrt/issues/850" in ORT_ONLY_REASON and "TensorRT/issues/3360" in lines[-1]


def test_export_with_old_tensorrt_stops_before_anything_is_written(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = types.ModuleType("tensorrt")
    old.__version__ = "8.5.3.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    out = tmp_path / "exp"
    with pytest.raises(TensorRTNotAvailableError, match=r"tensorrt >= 8\.6 .* has 8\.5\.3\.1"):
        pipeline.export_model(engine_cfg(busy_checkpoint, calib_folder, out), progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ settings, refused


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"raw": True, "engine": True}, r"a --raw graph ends at the head maps.*num_dets"),
        ({"tf32": True}, r"--tf32 only apply to TensorRT engine builds; add --engine"),
        ({"trt_verbose": True, "engine_typing": "weak"}, r"--typing and --verbose only apply"),
        ({"engine": True, "engine_typing": "loose"}, r"unknown --typing 'loose'; use auto"),
    ],
)
def test_engine_settings_that_cannot_work_are_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExportConfig(weights="w.pt", **kw)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--raw", "--engine"], "--raw"),
        (["--tf32"], "--tf32 only apply"),
        (["--verbose"], "--verbose only apply"),
        (["--typing", "strong"], "--typing only apply"),
        (["--engine", "--typing", "medium"], "unknown --typing 'medium'"),
    ],
)
def test_cli_refuses_engine_options_in_one_line(
    tmp_path: Path, busy_checkpoint: Path, flags: list[str], named: str
) -> None:
    args = ["export", "--weights", str(busy_checkpoint), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, *flags], env={"COLUMNS": "60"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert named in errors[0] and not (tmp_path / "o").exists()
