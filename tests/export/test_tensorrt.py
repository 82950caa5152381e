"""edgeyolo.export.tensorrt: version branches (with fake TensorRT modules), errors, a real build.

The fakes mimic what the API check (test_tensorrt_api.py) found in the real bindings: 11.x has no
``EXPLICIT_BATCH`` and no ``BuilderFlag.FP16/INT8``; 8.6 has no ``STRONGLY_TYPED``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeyolo.errors import (
    EngineBuildError,
    ExportError,
    TensorRTNotAvailableError,
)
from edgeyolo.export import tensorrt as ext
from edgeyolo.runtime import gpu

PLAN = b"serialized-plan"


class FakeTensorRT(types.ModuleType):
    """A ``tensorrt`` stand-in that records every builder call in ``calls``."""

    def __init__(self, version: str, **behaviour: Any) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.behaviour = {"shape": (-1, 3, -1, -1), "errors": [], "plan": PLAN, "stale": None}
        self.behaviour.update(behaviour)
        major = int(version.split(".")[0])
        kinds = {"EXPLICIT_BATCH": 0} if major < 11 else {}
        kinds |= {"STRONGLY_TYPED": 1} if major >= 10 else {}
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**kinds)
        flags = {"FP16": "FP16", "INT8": "INT8"} if major < 11 else {}
        self.BuilderFlag = SimpleNamespace(TF32="TF32", **flags)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, severity: None})
        fake = self

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Any:
                fake.calls.append(("create_network", flags))
                tensor = SimpleNamespace(name="images", shape=fake.behaviour["shape"])
                return SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

            def create_builder_config(self) -> Any:
                return FakeConfig(fake)

            def create_optimization_profile(self) -> Any:
                return SimpleNamespace(set_shape=lambda *a: fake.calls.append(("set_shape", *a)))

            def build_serialized_network(self, network: Any, config: Any) -> Any:
                fake.calls.append(("build",))
                return fake.behaviour["plan"]

        class OnnxParser:
            def __init__(self, network: Any, logger: Any) -> None:
                self.num_errors = len(fake.behaviour["errors"])

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", path))
                return not self.num_errors

            def get_error(self, i: int) -> Any:
                return fake.behaviour["errors"][i]

        self.Builder, self.OnnxParser = Builder, OnnxParser

    def recorded(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]


class FakeConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake, self.cache = fake, None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.fake.calls.append(("pool", pool, size))

    def set_flag(self, flag: str) -> None:
        self.fake.calls.append(("set_flag", flag))

    def add_optimization_profile(self, profile: Any) -> int:
        return 0

    def create_timing_cache(self, data: bytes) -> Any:
        return SimpleNamespace(data=bytes(data), serialize=lambda: b"cache:" + PLAN)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
        self.cache = cache
        return cache.data != self.fake.behaviour["stale"]

    def get_timing_cache(self) -> Any:
        return self.cache


def parser_error(node: int, desc: str, name: str | None = None, op: str = "") -> Any:
    error = SimpleNamespace(node=lambda: node, desc=lambda: desc)
    if name is not None:  # 8.6's ParserError has no node_name / node_operator
        error.node_name, error.node_operator = (lambda: name), (lambda: op)
    return error


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    return path


def fake_build(monkeypatch: pytest.MonkeyPatch, fake: FakeTensorRT, onnx: Path, **kw: Any) -> Any:
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(ext, "gpu_identity", lambda: ("Fake GPU", (8, 7)))
    kw = {"precision": "fp16", "img_size": 416, "log": lambda line: None} | kw
    return ext.build_engine(onnx, onnx.with_suffix(".engine"), **kw)


def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError


def test_module_imports_without_tensorrt() -> None:
    code = "import sys; sys.modules['tensorrt'] = None; import edgeyolo.export.tensorrt"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_import_tensorrt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    no_tensorrt(monkeypatch)
    with pytest.raises(TensorRTNotAvailableError) as info:
        gpu.import_tensorrt()
    message = str(info.value)
    assert "\n" not in message and "import of tensorrt halted" in message  # the cause, verbatim
    assert "python3-libnvinfer" in message and "pip install tensorrt" in message
    assert gpu.tensorrt_version() is None


def test_build_without_tensorrt_touches_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_tensorrt(monkeypatch)
    engine, cache = tmp_path / "out" / "m.engine", tmp_path / "out" / "timing.cache"
    with pytest.raises(TensorRTNotAvailableError):
        ext.build_engine(
            tmp_path / "absent.onnx", engine, precision="int8", img_size=416, timing_cache=cache
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kw", [{"precision": "int4"}, {"img_size": 100}, {"min_batch": 4, "max_batch": 2}]
)
def test_impossible_settings_fail_first(monkeypatch: pytest.MonkeyPatch, kw: dict) -> None:
    no_tensorrt(monkeypatch)
    kw = {"precision": "fp16", "img_size": 416} | kw
    with pytest.raises(ExportError) as info:
        ext.build_engine(Path("m.onnx"), Path("m.engine"), **kw)
    assert not isinstance(info.value, TensorRTNotAvailableError)


META = ext.EngineInfo(Path("m.engine"), "10.3.0", "Orin", (8, 7), "int8", True, 12.5).to_dict()


def test_engine_info_is_json_types() -> None:
    assert META["compute_capability"] == [8, 7] and META["path"] == "m.engine"
    assert json.loads(json.dumps(META)) == META


def test_trt11_builds_strongly_typed_and_never_sets_precision_flags(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("11.4.0.106")
    cache = onnx_file.parent / "timing.cache"
    lines: list[str] = []
    options = {"max_batch": 4, "opt_batch": 2, "timing_cache": cache, "log": lines.append}
    info = fake_build(monkeypatch, fake, onnx_file, strongly_typed=False, **options)
    assert fake.recorded("create_network") == [(1 << 1,)]  # STRONGLY_TYPED only
    assert fake.recorded("set_flag") == []
    assert any("strongly typed networks only" in line for line in lines)
    assert "11.4.0.106" in lines[-2] and "Fake GPU" in lines[-2]
    assert fake.recorded("set_shape") == [
        ("images", (1, 3, 416, 416), (2, 3, 416, 416), (4, 3, 416, 416))
    ]
    assert fake.recorded("pool") == [("WORKSPACE", 2 << 30)]
    assert fake.recorded("set_timing_cache") == [(b"", False)]
    assert info.path.read_bytes() == PLAN and cache.read_bytes() == b"cache:" + PLAN
    assert info.strongly_typed and info.trt_version == "11.4.0.106"
    assert info.compute_capability == (8, 7) and info.precision == "fp16"


def test_trt10_is_strongly_typed_by_default(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("10.3.0")
    info = fake_build(monkeypatch, fake, onnx_file, precision="int8")
    assert fake.recorded("create_network") == [(1 << 1,)]  # no deprecated EXPLICIT_BATCH
    assert fake.recorded("set_flag") == [] and info.strongly_typed


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8"])]
)
def test_trt10_weakly_typed_gets_builder_flags(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, precision: str, flags: list[str]
) -> None:
    fake = FakeTensorRT("10.3.0")
    info = fake_build(monkeypatch, fake, onnx_file, precision=precision, strongly_typed=False)
    assert fake.recorded("create_network") == [(0,)]
    assert fake.recorded("set_flag") == [(f,) for f in flags] and not info.strongly_typed


def test_trt86_needs_explicit_batch_and_cannot_be_strongly_typed(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    fake = FakeTensorRT("8.6.1")
    info = fake_build(monkeypatch, fake, onnx_file)
    assert fake.recorded("create_network") == [(1 << 0,)]
    assert fake.recorded("set_flag") == [("FP16",)] and not info.strongly_typed
    with pytest.raises(ExportError, match="no strongly typed networks"):
        fake_build(monkeypatch, FakeTensorRT("8.6.1"), onnx_file, strongly_typed=True)


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
    options = {"img_size": 32, "max_batch": 2, "timing_cache": tmp_path / "timing.cache"}
    info = ext.build_engine(
        tmp_path / "tiny.onnx", tmp_path / "tiny.engine", precision="fp32", **options
    )
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
