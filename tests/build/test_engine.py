"""``build_from_manifest`` and ``edgeyolo build`` on a real export folder, with the fake TensorRT
module building and ONNX Runtime standing in for the engine (tests/build/conftest.py).

What they cannot show is TensorRT's own behaviour (tests/build/test_tensorrt.py covers the API
calls against fakes and the real bindings' names; the GPU-marked tests run a real build).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from typer.testing import CliRunner

from edgeyolo.build import engine as build
from edgeyolo.build.options import BuildOptions
from edgeyolo.cli import app
from edgeyolo.errors import (
    ConfigError,
    EngineBuildError,
    ModelFileError,
    TensorRTNotAvailableError,
)
from edgeyolo.runtime.manifest import read_manifest, sha256_file
from tests.build.conftest import FakeGpu


def quiet(line: str) -> None:
    return None


def manifest_bytes(folder: Path) -> bytes:
    return (folder / "manifest.json").read_bytes()


def edit_manifest(folder: Path, **changes: Any) -> None:
    """Apply ``changes`` (file name -> fields) to the graph entries of ``folder``'s manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        a.update(changes.get(a["file"], {}))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def stray_files(folder: Path) -> list[str]:
    """Temporary files a build may leave behind (none may be)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------ success


def test_the_build_package_imports_no_torch() -> None:
    """``edgeyolo build`` runs on the deploy install (no torch there)."""
    code = (
        "import sys; import edgeyolo.build.engine, edgeyolo.build.references; "
        "import edgeyolo.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_build_writes_the_engine_and_its_manifest_entry(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    before = read_manifest(export_folder)
    lines: list[str] = []
    result = build.build_from_manifest(export_folder / "model_fp32.onnx", log=lines.append)
    engine = export_folder / "model_fp32.engine"
    assert result.engine == engine and engine.read_bytes() == b"serialized-plan"
    after = read_manifest(export_folder)
    assert after["artifacts"][: len(before["artifacts"])] == before["artifacts"]  # untouched
    entry = after["artifacts"][-1]
    assert entry == result.entry and entry["kind"] == "engine" and entry["file"] == engine.name
    assert entry["sha256"] == sha256_file(engine) and entry["bytes"] == engine.stat().st_size
    graph = export_folder / "model_fp32.onnx"
    assert (entry["onnx_file"], entry["onnx_sha256"]) == (graph.name, sha256_file(graph))
    assert (entry["trt_version"], entry["gpu_name"]) == ("10.3.0", "Fake GPU")
    assert entry["compute_capability"] == [8, 7] and entry["dla_core"] is None
    assert entry["batches"] == {"min": 1, "opt": 2, "max": 4}  # the export's --batch 4
    parity = entry["parity_vs_torch"]
    assert parity["passed"] and parity["matched_fraction"] == 1.0 and parity["ref_count"] > 0
    assert parity["against"] == "references.npz" and parity["images"] == 6
    assert parity["floor"]["rule"] == "fp32 (TF32 off) reproduces PyTorch"
    assert fake_gpu.runs == [graph] and stray_files(export_folder) == []
    assert (export_folder / "timing.cache").read_bytes() == b"cache:serialized-plan"
    assert any("model_fp32.engine against references.npz" in line for line in lines)


def test_rebuilding_replaces_the_entry(export_folder: Path, fake_gpu: FakeGpu) -> None:
    build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    fake_gpu.use("10.3.0", plan=b"another plan")
    build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    engines = [a for a in read_manifest(export_folder)["artifacts"] if a["kind"] == "engine"]
    assert len(engines) == 1 and engines[0]["sha256"] == sha256_file(
        export_folder / "model_fp16.engine"
    )
    assert (export_folder / "model_fp16.engine").read_bytes() == b"another plan"


@pytest.mark.parametrize(
    ("version", "flags", "typing"),
    [("10.3.0", ["FP16"], "weak"), ("11.4.0.106", [], "strong")],
)
def test_precision_comes_from_the_graph(
    export_folder: Path, fake_gpu: FakeGpu, version: str, flags: list[str], typing: str
) -> None:
    """fp16 graph: weakly typed builds get the FP16 flag from the entry's precision; strongly
    typed ones need none (the casts are in the graph)."""
    trt = fake_gpu.use(version)
    result = build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    assert [f for (f,) in trt.recorded("set_flag")] == flags
    assert result.entry["precision"] == "fp16" and result.entry["typing"] == typing
    assert result.entry["parity_vs_torch"]["floor"]["rule"].startswith("fp16")


def test_options_reach_tensorrt(export_folder: Path, fake_gpu: FakeGpu, tmp_path: Path) -> None:
    cache = tmp_path / "elsewhere.cache"
    options = BuildOptions(max_batch=8, workspace_gib=0.5, timing_cache=cache, verbose=True)
    result = build.build_from_manifest(
        export_folder / "model_fp32.onnx", options, out=export_folder / "tiny.plan", log=quiet
    )
    assert result.engine == export_folder / "tiny.plan" and result.entry["file"] == "tiny.plan"
    trt = fake_gpu.trt
    assert trt.recorded("set_shape") == [("images", *[(b, 3, 128, 128) for b in (1, 4, 8)])]
    assert trt.recorded("pool") == [("WORKSPACE", 1 << 29)]
    assert cache.is_file() and not (export_folder / "timing.cache").exists()
    assert trt.config.profiling_verbosity == "DETAILED"
    assert "[VERBOSE]" in (export_folder / "tensorrt_build.log").read_text()
    assert result.entry["build_log"] == "tensorrt_build.log"


# ----------------------------------------------------------------------------- refusals


def test_without_tensorrt_it_stops_in_one_line_before_any_work(
    export_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    before = manifest_bytes(export_folder)
    with pytest.raises(TensorRTNotAvailableError) as info:
        build.build_from_manifest(export_folder / "model_fp32.onnx", log=quiet)
    message = str(info.value)
    assert "\n" not in message and "python3-libnvinfer" in message
    assert "pip install tensorrt --extra-index-url https://pypi.nvidia.com" in message
    assert manifest_bytes(export_folder) == before and not list(export_folder.glob("*.engine"))


def test_cli_without_tensorrt_prints_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any work: even the graph (absent here) is not looked at."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    graph = tmp_path / "export" / "model_int8.onnx"
    result = CliRunner().invoke(app, ["build", str(graph)], env={"COLUMNS": "60"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "python3-libnvinfer" in errors[0] and "https://pypi.nvidia.com" in errors[0]
    assert result.output.count("\n") == 1 and not (tmp_path / "export").exists()


def test_a_graph_not_checked_for_this_tensorrt_is_refused(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    targets = ["onnxruntime", "tensorrt-10", "tensorrt-11"]
    edit_manifest(export_folder, **{"model_fp16.onnx": {"targets": targets}})
    before = manifest_bytes(export_folder)
    with pytest.raises(EngineBuildError) as info:
        build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    message = str(info.value)
    assert "no TensorRT 10.3.0 engine is built from" in message
    assert "checked for TensorRT 10, 11 only, which does not cover 10.3.0" in message
    assert "--trt 10.3`" in message  # what to do, for this version
    assert fake_gpu.trt.calls == [] and manifest_bytes(export_folder) == before


def test_a_graph_that_breaks_this_versions_parser_table_is_refused(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    """The graph's opset raised to 19 (8.6 parses up to 17), its sha256 recorded anew."""
    graph = export_folder / "model_fp32.onnx"
    model = onnx.load(str(graph))
    model.opset_import[0].version = 19
    onnx.save(model, str(graph))
    edit_manifest(export_folder, **{graph.name: {"sha256": sha256_file(graph)}})
    fake_gpu.use("8.6.1")
    with pytest.raises(EngineBuildError) as info:
        build.build_from_manifest(graph, log=quiet)
    message = str(info.value)
    assert "model_fp32.onnx would not parse as written" in message and "opset" in message
    assert "checked as TensorRT 8.6, the table for 8.6.1" in message
    assert fake_gpu.trt.calls == [] and not graph.with_suffix(".engine").exists()


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("no_manifest", ModelFileError, r"no manifest here.*copy the whole export folder"),
        ("not_listed", ModelFileError, r"lists no ONNX graph 'extra.onnx' \(it lists: model_fp32"),
        ("changed", ModelFileError, r"not the file its manifest entry describes"),
        ("raw", EngineBuildError, r"it is a --raw graph"),
        ("out", ConfigError, r"--out .*goes into the export folder"),
    ],
)
def test_a_graph_the_manifest_does_not_vouch_for_is_refused(
    export_folder: Path, fake_gpu: FakeGpu, setup: str, error: type, match: str
) -> None:
    graph, out = export_folder / "model_fp32.onnx", None
    if setup == "no_manifest":
        (export_folder / "manifest.json").unlink()
    elif setup == "not_listed":
        graph = export_folder / "extra.onnx"
        graph.write_bytes((export_folder / "model_fp32.onnx").read_bytes())
    elif setup == "changed":
        graph.write_bytes(graph.read_bytes() + b"\0")
    elif setup == "raw":
        edit_manifest(export_folder, **{graph.name: {"raw": True}})
    else:
        out = export_folder.parent / "model_fp32.engine"
    with pytest.raises(error, match=match):
        build.build_from_manifest(graph, out=out, log=quiet)
    assert fake_gpu.trt.calls == [] and not list(export_folder.parent.rglob("*.engine"))


# ------------------------------------------------------------------------------------ DLA


def test_dla_refuses_an_fp32_graph(export_folder: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.use("10.3.0", dla_cores=2)
    options = BuildOptions(dla_core=0, gpu_fallback=True)
    with pytest.raises(ConfigError, match="DLA runs fp16 and int8 only, and model_fp32.onnx"):
        build.build_from_manifest(export_folder / "model_fp32.onnx", options, log=quiet)
    assert fake_gpu.trt.calls == []


def test_dla_build_records_its_core_and_the_layers_on_the_gpu(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    fake_gpu.use("10.3.0", dla_cores=2, not_on_dla=("topk", "nms"))
    lines: list[str] = []
    options = BuildOptions(dla_core=1, gpu_fallback=True)
    result = build.build_from_manifest(export_folder / "model_fp16.onnx", options, log=lines.append)
    entry = read_manifest(export_folder)["artifacts"][-1]
    assert entry["dla_core"] == 1 and entry["gpu_fallback"] is True
    assert entry["gpu_layers"] == ["topk", "nms"] and result.info.gpu_layers == ("topk", "nms")
    assert entry["batches"] == {"min": 4, "opt": 4, "max": 4}  # DLA: no dynamic batch
    assert "GPU_FALLBACK" in entry["builder_flags"] and entry["parity_vs_torch"]["passed"]
    assert any("on the GPU (fallback): topk, nms" in line for line in lines)


def test_cli_dla_options(export_folder: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.use("10.3.0", dla_cores=1, not_on_dla=("nms",))
    graph = str(export_folder / "model_fp16.onnx")
    runner = CliRunner()
    refused = runner.invoke(app, ["build", graph, "--gpu-fallback"], env={"COLUMNS": "60"})
    assert refused.exit_code == 1 and "error: --gpu-fallback only applies to DLA" in refused.output
    args = ["build", graph, "--dla-core", "0", "--gpu-fallback"]
    result = runner.invoke(app, args, env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    assert "DLA core 0" in result.output and "on the GPU (DLA fallback): nms" in result.output
    assert "parity vs the stored PyTorch detections" in result.output


# ------------------------------------------------------------------ parity against the references


def test_an_fp32_engine_that_does_not_reproduce_fails_and_is_not_kept(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    fake_gpu.shift = 2.0  # every box 2 px off
    before = manifest_bytes(export_folder)
    with pytest.raises(EngineBuildError) as info:
        build.build_from_manifest(export_folder / "model_fp32.onnx", log=quiet)
    message = str(info.value)
    assert "model_fp32.engine does not reproduce the PyTorch model's stored detections" in message
    assert "on 6 reference images" in message and "TF32 was off" in message
    assert manifest_bytes(export_folder) == before
    assert not (export_folder / "model_fp32.engine").exists() and stray_files(export_folder) == []


def test_an_fp16_engine_below_its_floor_fails(export_folder: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.shift = 40.0  # no box overlaps its reference enough to match
    with pytest.raises(EngineBuildError, match=r"below its parity floor \(fp16: matched >= 0\.95"):
        build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    assert not (export_folder / "model_fp16.engine").exists()


def test_small_fp16_differences_pass_the_fp16_floor(export_folder: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.shift = 0.02  # fails fp32's min IoU >= 0.999, not fp16's mean IoU >= 0.98
    result = build.build_from_manifest(export_folder / "model_fp16.onnx", log=quiet)
    assert result.parity is not None and result.parity.passed
    assert result.parity.summary["min_iou"] < 0.999


def test_a_failed_manifest_write_changes_nothing(
    export_folder: Path, fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    build.build_from_manifest(export_folder / "model_fp32.onnx", log=quiet)
    engine_before = (export_folder / "model_fp32.engine").read_bytes()
    before = manifest_bytes(export_folder)

    def disk_full(folder: Path, manifest: dict) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build, "write_manifest", disk_full)
    fake_gpu.use("10.3.0", plan=b"a newer plan")
    with pytest.raises(OSError, match="No space left"):
        build.build_from_manifest(export_folder / "model_fp32.onnx", log=quiet)
    assert manifest_bytes(export_folder) == before  # still describes the engine in place
    assert (export_folder / "model_fp32.engine").read_bytes() == engine_before
    assert stray_files(export_folder) == []


def test_an_export_without_references_builds_unchecked_with_a_note(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    manifest = json.loads((export_folder / "manifest.json").read_text())
    del manifest["references"]
    (export_folder / "manifest.json").write_text(json.dumps(manifest))
    lines: list[str] = []
    result = build.build_from_manifest(export_folder / "model_fp32.onnx", log=lines.append)
    assert result.parity is None and result.entry["parity_vs_torch"] is None
    assert any("records no reference detections" in line for line in lines)
    assert fake_gpu.runs == []


def test_damaged_references_stop_the_build_before_tensorrt_builds(
    export_folder: Path, fake_gpu: FakeGpu
) -> None:
    refs = export_folder / "references.npz"
    refs.write_bytes(refs.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="references.npz: not the file the manifest describes"):
        build.build_from_manifest(export_folder / "model_fp32.onnx", log=quiet)
    assert fake_gpu.trt.recorded("build") == []


def test_cli_build_reports_engine_and_parity(export_folder: Path, fake_gpu: FakeGpu) -> None:
    graph = export_folder / "model_fp32.onnx"
    result = CliRunner().invoke(app, ["build", str(graph)], env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"built {export_folder / 'model_fp32.engine'}" in text
    assert "TensorRT 10.3.0, Fake GPU (sm_87), GPU, fp32" in text
    assert "parity vs the stored PyTorch detections:" in text
    assert "reproduces PyTorch: passed" in text
    entry = read_manifest(export_folder)["artifacts"][-1]
    assert entry["file"] == "model_fp32.engine"
    assert entry["parity_vs_torch"]["matched_fraction"] == 1.0
