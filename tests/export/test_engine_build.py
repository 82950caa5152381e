"""``export --engine``: the export's engine step is ``edgeyolo build``'s code
(:func:`edgeyolo.build.engine.build_from_manifest`) run on the staged folder, with the fake
TensorRT module building and ONNX Runtime standing in for each engine (tests/build/conftest.py).

The comparison itself is tested in tests/build/test_references.py, the build in
tests/build/test_engine.py and test_tensorrt.py (fake modules, real API names).
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.errors import ConfigError, ExportError, TensorRTNotAvailableError
from edgeyolo.export import pipeline
from edgeyolo.runtime.conformance import ORT_ONLY_REASON
from edgeyolo.runtime.manifest import read_manifest, sha256_file
from tests.build.conftest import FakeGpu, exported, fake_gpu  # noqa: F401

# ------------------------------------------------------------------ the pipeline's engine part


def engine_cfg(checkpoint: Path, calib: Path, out: Path, **kw: Any) -> ExportConfig:
    base = {"fp16": True, "engine": True, "batch": 2, "conf_thres": 0.3}
    return ExportConfig(weights=str(checkpoint), out=str(out), calib=str(calib), **base | kw)


def test_export_builds_checks_and_records_each_engine(
    tmp_path: Path,
    busy_checkpoint: Path,
    calib_folder: Path,
    fake_gpu: FakeGpu,  # noqa: F811
) -> None:
    out = tmp_path / "exp"
    lines: list[str] = []
    cfg = engine_cfg(busy_checkpoint, calib_folder, out, tf32=True, trt_verbose=True)
    m = pipeline.export_model(cfg, progress=False, log=lines.append)
    engines = {a["precision"]: a for a in m["artifacts"] if a["kind"] == "engine"}
    assert set(engines) == {"fp32", "fp16"}
    trt = fake_gpu.trt  # one module, two builds
    graphs = ["model_fp32.onnx", "model_fp16.onnx"]
    assert [Path(p).name for (p,) in trt.recorded("parse_from_file")] == graphs
    assert [g.name for g in fake_gpu.runs] == graphs
    assert trt.recorded("set_flag") == [("TF32",), ("TF32",), ("FP16",)]  # weak fp16: FP16
    assert trt.recorded("set_shape") == 2 * [("images", *[(b, 3, 128, 128) for b in (1, 2, 2)])]
    for precision, e in engines.items():
        p = e["parity_vs_torch"]
        assert p["passed"] and p["ref_count"] > 0 and p["against"] == "references.npz", p
        assert p["images"] == m["references"]["count"]
        assert e["onnx_file"] == f"model_{precision}.onnx" and e["tf32"] is True
        assert e["onnx_sha256"] == sha256_file(out / e["onnx_file"])
        assert sha256_file(out / e["file"]) == e["sha256"] and e["typing"] == "weak"
        assert e["build_log"] == "tensorrt_build.log" and e["trt_version"] == "10.3.0"
    assert engines["fp32"]["parity_vs_torch"]["floor"]["rule"].startswith("fp32 with TF32")
    assert engines["fp32"]["parity_vs_torch"]["matched_fraction"] == 1.0
    log = (out / "tensorrt_build.log").read_text()
    assert "=== model_fp32.engine from model_fp32.onnx, TensorRT 10.3.0 ===" in log
    assert "=== model_fp16.engine from model_fp16.onnx, TensorRT 10.3.0 ===" in log
    assert log.count("[VERBOSE] verbose message") == 2
    assert read_manifest(out)["artifacts"] == m["artifacts"]
    assert (out / "references.npz").is_file() and (out / "timing.cache").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_fp32_engine_that_does_not_reproduce_fails_the_export(
    tmp_path: Path,
    busy_checkpoint: Path,
    calib_folder: Path,
    fake_gpu: FakeGpu,  # noqa: F811
) -> None:
    fake_gpu.shift = 2.0  # every box 2 px off
    out = tmp_path / "exp"
    cfg = engine_cfg(busy_checkpoint, calib_folder, out, trt_verbose=True)
    with pytest.raises(ExportError, match="model_fp32.engine does not reproduce") as info:
        pipeline.export_model(cfg, progress=False, log=lambda line: None)
    kept = tmp_path / "exp.tensorrt_build.log"
    assert f"TensorRT's build log: {kept}" in str(info.value)
    assert "[VERBOSE] verbose message" in kept.read_text()
    assert not out.exists()  # all or nothing: the staged export is gone
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]


def test_the_cpu_only_int8_graph_gets_no_engine(
    tmp_path: Path,
    exported: Path,  # noqa: F811
    busy_checkpoint: Path,
    calib_folder: Path,
    fake_gpu: FakeGpu,  # noqa: F811
) -> None:
    """The engine step alone, on a staged copy of an export whose manifest also lists an int8
    graph of the onnxruntime placement (calibrating one here would cost a minute)."""
    stage = Path(shutil.copytree(exported, tmp_path / "stage"))
    manifest = json.loads((stage / "manifest.json").read_text())
    int8 = {"kind": "onnx", "precision": "int8", "file": "model_int8.onnx"}
    manifest["artifacts"].append({**int8, "placement": "onnxruntime"})
    (stage / "manifest.json").write_text(json.dumps(manifest))
    cfg = engine_cfg(busy_checkpoint, calib_folder, tmp_path / "exp", fp16=False, batch=4)
    lines: list[str] = []
    built = pipeline._build_engines(cfg, stage, tmp_path / "exp", lines.append)
    engines = [a["file"] for a in built["artifacts"] if a["kind"] == "engine"]
    assert engines == ["model_fp32.engine", "model_fp16.engine"]
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
