"""edgeyolo.build.tensorrt: version branches and DLA (with fake TensorRT modules), errors, a real
build.

The fake modules are :mod:`tests.build.fake_tensorrt`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeyolo.build import tensorrt as ext
from edgeyolo.build.options import BuildOptions
from edgeyolo.errors import (
    ConfigError,
    EngineBuildError,
    ExportError,
    TensorRTNotAvailableError,
)
from edgeyolo.runtime import gpu
from tests.build.fake_tensorrt import OUTPUTS, PLAN, SEVERITIES, FakeTensorRT, parser_error

OPTIONS = {"max_batch", "timing_cache", "typing", "tf32", "verbose", "workspace_gib"}
OPTIONS |= {"dla_core", "gpu_fallback"}


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    return path


def fake_build(monkeypatch: pytest.MonkeyPatch, fake: FakeTensorRT, onnx: Path, **kw: Any) -> Any:
    """``build_engine`` on ``fake``; keywords named in :data:`OPTIONS` go into its options."""
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(ext, "gpu_identity", lambda: ("Fake GPU", (8, 7)))
    options = BuildOptions(**{k: kw.pop(k) for k in list(kw) if k in OPTIONS})
    kw = {"precision": "fp16", "img_size": 416, "log": lambda line: None, "options": options} | kw
    return ext.build_engine(onnx, onnx.with_suffix(".engine"), **kw)


def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError


def test_module_imports_without_tensorrt() -> None:
    code = "import sys; sys.modules['tensorrt'] = None; import edgeyolo.build.tensorrt"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_import_tensorrt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    no_tensorrt(monkeypatch)
    with pytest.raises(TensorRTNotAvailableError) as info:
        gpu.import_tensorrt()
    message = str(info.value)
    assert "\n" not in message and "import of tensorrt halted" in message  # the cause, verbatim
    assert "python3-libnvinfer" in message and "pip install tensorrt" in message
    assert gpu.tensorrt_version() is None


def test_tensorrt_version_reads_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the lazy module, which refuses dunder reads on itself (export's environment
    record and ``edgeyolo build`` read it)."""
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("10.3.0"))
    assert gpu.tensorrt_version() == "10.3.0"


def test_build_without_tensorrt_touches_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_tensorrt(monkeypatch)
    engine, cache = tmp_path / "out" / "m.engine", tmp_path / "out" / "timing.cache"
    with pytest.raises(TensorRTNotAvailableError):
        ext.build_engine(
            tmp_path / "absent.onnx", engine, precision="int8", img_size=416,
            options=BuildOptions(timing_cache=cache),
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_older_than_86_is_refused_before_building(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("8.5.3.1")
    with pytest.raises(TensorRTNotAvailableError, match=r"tensorrt >= 8\.6 .* has 8\.5\.3\.1"):
        fake_build(monkeypatch, fake, onnx_file, timing_cache=onnx_file.parent / "t.cache")
    assert fake.calls == [] and [p.name for p in onnx_file.parent.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"precision": "int4"}, "precision 'int4' is not one of"),
        ({"img_size": 100}, "img_size 100 must be a positive multiple of 32"),
        ({"precision": "fp32", "options": BuildOptions(dla_core=0)}, "DLA runs fp16 and int8 only"),
    ],
)
def test_impossible_settings_fail_first(
    monkeypatch: pytest.MonkeyPatch, kw: dict, match: str
) -> None:
    no_tensorrt(monkeypatch)  # refused before TensorRT is looked for
    kw = {"precision": "fp16", "img_size": 416} | kw
    with pytest.raises((ExportError, ConfigError), match=match) as info:
        ext.build_engine(Path("m.onnx"), Path("m.engine"), **kw)
    assert not isinstance(info.value, TensorRTNotAvailableError)


META = ext.EngineInfo(
    Path("m.engine"), "10.3.0", "Orin", (8, 7), "int8", False, 12.5, False, ("INT8", "FP16")
).to_dict()


def test_engine_info_is_json_types() -> None:
    assert META["compute_capability"] == [8, 7] and "path" not in META  # the entry's "file"
    assert META["dla_core"] is None and META["gpu_layers"] == [] and META["gpu_fallback"] is False
    assert META["typing"] == "weak" and META["builder_flags"] == ["INT8", "FP16"]
    assert META["tf32"] is False and META["build_log"] is None
    assert json.loads(json.dumps(META)) == META


# ------------------------------------------------------------------------- typing per version


@pytest.mark.parametrize(
    ("version", "asked", "strong", "why"),
    [
        ("8.6.1", "auto", False, "incomplete before TensorRT 10.12"),
        ("10.3.0", "auto", False, "incomplete before TensorRT 10.12"),  # JetPack 6.1/6.2
        ("10.11.0.33", "auto", False, "incomplete before TensorRT 10.12"),
        ("10.12.0.36", "auto", True, "complete from TensorRT 10.12"),
        ("10.16.1", "auto", True, "complete from TensorRT 10.12"),
        ("11.4.0.106", "auto", True, "strong typing only"),
        ("10.3.0", "strong", True, "--typing strong"),
        ("10.16.1", "weak", False, "--typing weak"),
        ("8.6.1", "weak", False, "--typing weak"),
        ("11.4.0.106", "strong", True, "--typing strong"),
    ],
)
def test_typing_is_chosen_per_version(
    monkeypatch: pytest.MonkeyPatch,
    onnx_file: Path,
    version: str,
    asked: str,
    strong: bool,
    why: str,
) -> None:
    fake = FakeTensorRT(version)
    lines: list[str] = []
    info = fake_build(monkeypatch, fake, onnx_file, typing=asked, log=lines.append)
    assert info.strongly_typed is strong and why in info.typing_reason
    major = int(version.split(".")[0])
    flags = (1 << 1 if strong else 0) | (1 << 0 if major < 10 else 0)  # + EXPLICIT_BATCH on 8.6
    assert fake.recorded("create_network") == [(flags,)]
    precision_flags = [f for (f,) in fake.recorded("set_flag") if f in ("FP16", "INT8")]
    assert precision_flags == ([] if strong else ["FP16"])  # fp16 variant
    assert ("strongly" if strong else "weakly") + " typed" in lines[0] and why in lines[0]
    warned = any("complete from 10.12" in line for line in lines)
    assert warned == (asked == "strong" and version.startswith("10.3"))


@pytest.mark.parametrize(
    ("version", "asked", "match"),
    [
        ("8.6.1", "strong", r"TensorRT 8\.6\.1 has no strongly typed networks"),
        ("11.4.0.106", "weak", r"strongly typed networks only \(11\.0 removed weak typing"),
    ],
)
def test_typing_a_version_cannot_give_is_refused(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, version: str, asked: str, match: str
) -> None:
    fake = FakeTensorRT(version)
    with pytest.raises(ExportError, match=match) as info:
        fake_build(monkeypatch, fake, onnx_file, typing=asked)
    assert "--typing auto" in str(info.value)
    assert fake.recorded("create_network") == [] and not onnx_file.with_suffix(".engine").exists()


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])]
)
def test_weakly_typed_builds_get_precision_flags_int8_with_fp16(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, precision: str, flags: list[str]
) -> None:
    fake = FakeTensorRT("10.3.0")
    info = fake_build(monkeypatch, fake, onnx_file, precision=precision)
    assert fake.recorded("create_network") == [(0,)] and not info.strongly_typed
    assert fake.recorded("set_flag") == [(f,) for f in flags]
    assert info.builder_flags == tuple(flags) and info.to_dict()["builder_flags"] == flags


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "10.12.0", "11.4.0.106"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tf32_is_cleared_unless_asked(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, version: str, precision: str
) -> None:
    fake = FakeTensorRT(version)
    info = fake_build(monkeypatch, fake, onnx_file, precision=precision)
    assert fake.recorded("clear_flag") == [("TF32",)] and ("TF32",) not in fake.recorded("set_flag")
    assert info.tf32 is False and "TF32" not in info.builder_flags
    fake = FakeTensorRT(version)
    lines: list[str] = []
    info = fake_build(
        monkeypatch, fake, onnx_file, precision=precision, tf32=True, log=lines.append
    )
    assert fake.recorded("clear_flag") == [] and fake.recorded("set_flag")[0] == ("TF32",)
    assert info.tf32 and info.builder_flags[0] == "TF32" and "TF32 on" in lines[0]


def test_trt11_builds_strongly_typed_with_batch_range_and_cache(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("11.4.0.106")
    cache = onnx_file.parent / "timing.cache"
    lines: list[str] = []
    options = {"max_batch": 4, "timing_cache": cache, "log": lines.append}
    info = fake_build(monkeypatch, fake, onnx_file, **options)
    assert fake.recorded("create_network") == [(1 << 1,)]  # STRONGLY_TYPED only
    assert fake.recorded("set_flag") == [] and fake.recorded("clear_flag") == [("TF32",)]
    assert "11.4.0.106" in lines[0] and "Fake GPU" in lines[0] and "TF32 off" in lines[0]
    assert fake.recorded("set_shape") == [
        ("images", (1, 3, 416, 416), (2, 3, 416, 416), (4, 3, 416, 416))
    ]
    assert fake.recorded("pool") == [("WORKSPACE", 2 << 30)]
    assert fake.recorded("set_timing_cache") == [(b"", False)]
    assert fake.recorded("Logger") == [("Severity.WARNING",)]  # TensorRT's console logger
    assert info.path.read_bytes() == PLAN and cache.read_bytes() == b"cache:" + PLAN
    assert info.strongly_typed and info.trt_version == "11.4.0.106"
    assert info.compute_capability == (8, 7) and info.precision == "fp16"


# ------------------------------------------------------------------------------------------- DLA


def test_dla_build_sends_the_network_to_the_core_with_gpu_fallback(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("10.3.0", dla_cores=2, not_on_dla=("topk", "nms", "gather"))
    lines: list[str] = []
    info = fake_build(
        monkeypatch, fake, onnx_file, precision="int8", dla_core=1, gpu_fallback=True,
        max_batch=4, log=lines.append,
    )  # fmt: skip
    assert (fake.config.default_device_type, fake.config.DLA_core) == ("DLA", 1)
    assert fake.recorded("set_flag") == [("INT8",), ("FP16",), ("GPU_FALLBACK",)]
    assert info.builder_flags == ("INT8", "FP16", "GPU_FALLBACK")  # weak typing: DLA needs them
    assert fake.recorded("set_shape") == [("images", *[(4, 3, 416, 416)] * 3)]  # no dynamic batch
    assert info.gpu_layers == ("topk", "nms", "gather") and info.batches == (4, 4, 4)
    meta = info.to_dict()
    assert meta["dla_core"] == 1 and meta["gpu_fallback"] is True
    assert meta["gpu_layers"] == ["topk", "nms", "gather"]
    assert "DLA core 1: 3 of 6 layers on DLA; on the GPU (fallback): topk, nms, gather" in lines
    assert "DLA core 1" in lines[0] and "batch 4..4" in lines[0]


def test_dla_without_fallback_names_the_layers_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("8.6.1", dla_cores=2, not_on_dla=("nms",))
    with pytest.raises(EngineBuildError) as info:
        fake_build(monkeypatch, fake, onnx_file, dla_core=0)
    message = str(info.value)
    assert "1 of 6 layers of model.onnx cannot run on DLA core 0 (nms)" in message
    assert "add --gpu-fallback" in message
    assert fake.recorded("build") == [] and not onnx_file.with_suffix(".engine").exists()
    fake = FakeTensorRT("8.6.1", dla_cores=2)  # every layer runs on DLA: no fallback needed
    info_ = fake_build(monkeypatch, fake, onnx_file, dla_core=0)
    assert info_.gpu_layers == () and "GPU_FALLBACK" not in info_.builder_flags
    assert ("GPU_FALLBACK",) not in fake.recorded("set_flag")


@pytest.mark.parametrize(
    ("cores", "core", "match"), [(0, 0, "has no DLA"), (2, 2, r"has DLA cores 0\.\.1")]
)
def test_a_dla_core_the_device_lacks_is_refused(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, cores: int, core: int, match: str
) -> None:
    fake = FakeTensorRT("10.3.0", dla_cores=cores)
    with pytest.raises(EngineBuildError, match=rf"--dla-core {core}: this device {match}"):
        fake_build(monkeypatch, fake, onnx_file, dla_core=core, gpu_fallback=True)
    assert fake.recorded("build") == [] and not onnx_file.with_suffix(".engine").exists()


def test_dla_layer_list_is_shortened_in_messages(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    names = tuple(f"layer_{i}" for i in range(20))
    fake = FakeTensorRT("10.3.0", dla_cores=1, layers=names, not_on_dla=names)
    with pytest.raises(EngineBuildError, match=r"layer_11 and 8 more\); add --gpu-fallback"):
        fake_build(monkeypatch, fake, onnx_file, dla_core=0)


# ----------------------------------------------------------------------------- the build log


def test_verbose_log_goes_to_the_file_and_warnings_to_the_console(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    log_file = onnx_file.parent / "tensorrt_build.log"
    lines: list[str] = []
    for precision in ("fp32", "fp16"):  # two builds append to one file
        fake = FakeTensorRT("10.3.0")
        info = fake_build(
            monkeypatch, fake, onnx_file, precision=precision, verbose=True, log_file=log_file,
            log=lines.append,
        )  # fmt: skip
        assert fake.config.profiling_verbosity == "DETAILED" and fake.recorded("Logger") == []
    text = log_file.read_text()
    assert text.count("=== model.engine from model.onnx, TensorRT 10.3.0 ===") == 2
    assert "[VERBOSE] verbose message" in text and "[WARNING] warning message" in text
    echoed = [line for line in lines if line.split(":")[0][9:] in SEVERITIES]
    assert echoed == 2 * [
        "TensorRT INTERNAL_ERROR: internal_error message",
        "TensorRT ERROR: error message",
        "TensorRT WARNING: warning message",
    ]  # INFO and VERBOSE stay in the file
    assert info.log_file == log_file and info.to_dict()["build_log"] == "tensorrt_build.log"


def test_quiet_log_file_starts_at_info(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    log_file = onnx_file.parent / "build.log"
    fake = FakeTensorRT("11.4.0.106")
    fake_build(monkeypatch, fake, onnx_file, log_file=log_file)
    text = log_file.read_text()
    assert "[INFO] info message" in text and "VERBOSE" not in text
    assert fake.config.profiling_verbosity == "NAMES"


def test_verbose_without_file_uses_the_console_logger_at_verbose(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("8.6.1")
    fake_build(monkeypatch, fake, onnx_file, verbose=True)
    assert fake.recorded("Logger") == [("Severity.VERBOSE",)]


# ------------------------------------------------------------------ graphs TensorRT must not get


@pytest.mark.parametrize(
    ("artifact", "match"),
    [
        ({"placement": "onnxruntime", "precision": "int8"}, r"onnx-tensorrt/issues/850"),
        ({"targets": ["onnxruntime"], "targets_reason": "int32 bias"}, r"\.onnx: int32 bias$"),
        ({"raw": True}, r"--raw graph"),
        ({"kind": "darknet"}, r"a darknet file"),
    ],
)
def test_graphs_not_meant_for_tensorrt_are_refused_before_importing_it(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, artifact: dict, match: str
) -> None:
    no_tensorrt(monkeypatch)  # refused first: a TensorRT-less machine gets the same answer
    entry = {"kind": "onnx", "file": onnx_file.name, **artifact}
    assert ext.tensorrt_refusal(entry) is not None
    with pytest.raises(EngineBuildError, match=match):
        ext.build_engine(onnx_file, onnx_file.with_suffix(".engine"), precision="int8",
                         img_size=416, artifact=entry)  # fmt: skip
    assert not onnx_file.with_suffix(".engine").exists()


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "onnx", "precision": "int8", "placement": "tensorrt"},
        {"kind": "onnx", "precision": "fp32", "targets": ["onnxruntime", "tensorrt-8.6"]},
        {"kind": "onnx", "precision": "fp16", "targets": ["onnxruntime", "tensorrt-10.3"]},
        {"kind": "onnx", "precision": "fp32"},
    ],
)
def test_graphs_for_tensorrt_are_not_refused(entry: dict) -> None:
    assert ext.tensorrt_refusal(entry) is None


@pytest.mark.parametrize(
    ("targets", "version", "covered"),
    [
        (["8.6", "10.3", "10", "11"], "8.6.1", True),  # the default: every target
        (["10", "11"], "10.3.0", False),  # e.g. int8 with fp16 outside Q/DQ, on JetPack 6
        (["10", "11"], "8.6.1", False),
        (["10", "11"], "10.16.1", True),
        (["10", "11"], "11.4.0.106", True),
        (["10.3"], "10.12.0", True),  # a target covers later releases of its major
        (["10.3"], "11.4.0.106", False),
        (["8.6"], "12.0.0", True),  # newer than every target: not refused, not checked
    ],
)
def test_a_graph_is_built_only_by_a_tensorrt_it_was_checked_for(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, targets: list, version: str, covered: bool
) -> None:
    entry = {"kind": "onnx", "targets": ["onnxruntime", *(f"tensorrt-{t}" for t in targets)]}
    entry["targets_reason"] = "opset 19"
    assert (ext.uncovered_reason(entry, version) is None) == covered
    fake = FakeTensorRT(version)
    if covered:
        fake_build(monkeypatch, fake, onnx_file, artifact=entry)
        return
    with pytest.raises(EngineBuildError, match=rf"checked for TensorRT {', '.join(targets)} only"):
        fake_build(monkeypatch, fake, onnx_file, artifact=entry)
    assert fake.calls == [] and not onnx_file.with_suffix(".engine").exists()
    reason = ext.uncovered_reason(entry, version)
    assert "(opset 19)" in reason and f"--trt {ext.local_target(version)}`" in reason


def test_a_raw_graph_is_refused_after_parsing(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("10.3.0", outputs=["head0", "head1"])
    with pytest.raises(EngineBuildError, match=r"outputs \['head0', 'head1'\].*--raw") as info:
        fake_build(monkeypatch, fake, onnx_file, outputs=OUTPUTS)
    assert "missing ['num_dets', 'boxes', 'scores', 'classes']" in str(info.value)
    assert fake.recorded("build") == [] and not onnx_file.with_suffix(".engine").exists()
    fake_build(monkeypatch, FakeTensorRT("10.3.0"), onnx_file, outputs=OUTPUTS)  # ours passes


# ------------------------------------------------------------------------------ errors, shapes


def test_parser_errors_name_every_node(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    errors = [parser_error(3, "bad weights", "conv_3", "Conv"), parser_error(-1, "opset 99")]
    with pytest.raises(EngineBuildError) as info:
        fake_build(monkeypatch, FakeTensorRT("10.3.0", errors=errors), onnx_file)
    assert "node #3 'conv_3' (Conv): bad weights; graph: opset 99" in str(info.value)
    old = [parser_error(7, "unsupported")]  # 8.6: no node_name()
    with pytest.raises(EngineBuildError, match=r"node #7: unsupported"):
        fake_build(monkeypatch, FakeTensorRT("8.6.1", errors=old), onnx_file)
    assert not onnx_file.with_suffix(".engine").exists()


def test_failed_build_leaves_no_file(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    with pytest.raises(EngineBuildError, match="could not build"):
        fake_build(monkeypatch, FakeTensorRT("11.4.0.106", plan=None), onnx_file)
    assert [p.name for p in onnx_file.parent.iterdir()] == ["model.onnx"]
    log_file = onnx_file.parent / "build.log"
    with pytest.raises(EngineBuildError, match=f"its log, {log_file}, says why"):
        fake = FakeTensorRT("11.4.0.106", plan=None)
        fake_build(monkeypatch, fake, onnx_file, log_file=log_file, verbose=True)
    assert "[VERBOSE]" in log_file.read_text()


def test_stale_timing_cache_is_replaced(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    cache = onnx_file.parent / "timing.cache"
    cache.write_bytes(b"from another gpu")
    lines: list[str] = []
    fake = FakeTensorRT("10.3.0", stale=b"from another gpu")
    fake_build(monkeypatch, fake, onnx_file, timing_cache=cache, log=lines.append)
    assert fake.recorded("set_timing_cache") == [(b"from another gpu", False), (b"", False)]
    assert any("another GPU" in line for line in lines) and cache.read_bytes() == b"cache:" + PLAN


@pytest.mark.parametrize(
    ("shape", "kw", "match"),
    [
        ((1, 3, 416, 416), {"max_batch": 4}, "fixed batch of 1"),
        ((-1, 3, 320, 320), {}, "img_size is 416"),
        ((-1, 3, 416, 416), {"input_name": "input"}, r"no input 'input', only \['images'\]"),
    ],
)
def test_graph_that_does_not_fit_the_request(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, shape: tuple, kw: dict, match: str
) -> None:
    with pytest.raises(EngineBuildError, match=match):
        fake_build(monkeypatch, FakeTensorRT("10.3.0", shape=shape), onnx_file, **kw)


@pytest.mark.tensorrt
def test_real_build_of_a_tiny_graph(tmp_path: Path) -> None:
    """On a GPU machine with TensorRT: build, and check the engine against the running setup."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is present on this machine")
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    x = helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what TensorRT 8.6's parser reads too
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    options = BuildOptions(max_batch=2, timing_cache=tmp_path / "timing.cache")
    info = ext.build_engine(
        tmp_path / "tiny.onnx", tmp_path / "tiny.engine", precision="fp32", img_size=32,
        options=options,
    )  # fmt: skip
    assert info.path.stat().st_size > 0 and (tmp_path / "timing.cache").stat().st_size > 0
    assert info.trt_version == trt.__version__
    name, cc = gpu.gpu_identity()
    gpu.check_engine_compat(
        info.to_dict(), trt_version=trt.__version__, gpu_name=name, compute_capability=cc
    )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        info.path.read_bytes()
    )
    assert engine is not None and engine.get_tensor_name(0) == "images"
