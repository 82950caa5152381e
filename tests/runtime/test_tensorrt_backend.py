"""EngineRunner: on CPU with fake ``tensorrt``/``pycuda`` modules; on a GPU against ONNX Runtime.

The fakes stand in for the libraries' *behaviour* so that the order of checks (compat before
deserialize, no CUDA before the compat check), the buffer bookkeeping (allocate once, slice to the
batch, free everything) and the error messages can be tested here. The *names* the backend uses
are checked against real sources instead: TensorRT's by ``tests/build/test_tensorrt_api.py``,
pycuda's by :func:`test_pycuda_names_exist_in_its_source` (skips without the pycuda sdist).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeyolo.runtime.tensorrt as rt
from edgeyolo.errors import (
    ConfigError,
    EngineMismatchError,
    ExportError,
    TensorRTNotAvailableError,
)
from edgeyolo.runtime.manifest import write_manifest
from edgeyolo.runtime.tensorrt import EngineRunner, StageTimes

REPO = Path(__file__).resolve().parents[2]
SIZE, K, MAX_BATCH = 32, 5, 4
OUTPUTS = {"num_dets": ((1,), np.int32), "boxes": ((K, 4), np.float32)}
OUTPUTS |= {"scores": ((K,), np.float32), "classes": ((K,), np.int32)}
HERE = ("Fake GPU", (8, 7))


# ---------------------------------------------------------------------------- fake pycuda


def fake_pycuda(log: list[str]) -> tuple[types.ModuleType, types.ModuleType]:
    """``pycuda`` and ``pycuda.driver`` stand-ins; device memory is a dict of byte arrays."""
    drv = types.ModuleType("pycuda.driver")
    drv.memory = {}  # address -> uint8 array
    drv.live = set()  # addresses not yet freed

    class Error(Exception):
        pass

    class Context:
        def push(self) -> None:
            log.append("push")

        @staticmethod
        def pop() -> None:
            log.append("pop")

        def detach(self) -> None:
            log.append("detach")

    class Device:
        def __init__(self, index: int) -> None:
            log.append(f"device {index}")

        def retain_primary_context(self) -> Context:
            log.append("retain")
            return Context()

    class Alloc:
        def __init__(self, nbytes: int) -> None:
            self.address = 0x1000 * (len(drv.memory) + 1)
            drv.memory[self.address] = np.zeros(nbytes, np.uint8)
            drv.live.add(self.address)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            drv.live.discard(self.address)

    class Stream:
        handle = 1234

        def synchronize(self) -> None:
            log.append("sync")

    class Event:
        clock = [0.0]

        def record(self, stream: Stream) -> None:
            self.clock[0] += 0.25
            self.at = self.clock[0]

        def time_till(self, end: Event) -> float:
            return end.at - self.at

    def htod(dev: Alloc, src: np.ndarray, stream: Stream) -> None:
        drv.memory[int(dev)][: src.nbytes] = src.view(np.uint8).reshape(-1)

    def dtoh(dest: np.ndarray, dev: Alloc, stream: Stream) -> None:
        dest.view(np.uint8).reshape(-1)[:] = drv.memory[int(dev)][: dest.nbytes]

    drv.__dict__.update(Error=Error, Context=Context, Device=Device, Stream=Stream, Event=Event)
    drv.init = lambda: log.append("init")
    drv.mem_alloc = Alloc
    drv.pagelocked_empty = lambda n, dtype: np.full(n, 77, dtype)  # junk, like real memory
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = htod, dtoh
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    return pkg, drv


# -------------------------------------------------------------------------- fake tensorrt


def expected_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes from ``x`` ``[B, 3, S, S]`` (any deterministic function)."""
    b = len(x)
    means = x.mean(axis=(1, 2, 3), dtype=np.float64).astype(np.float32)
    return {
        "num_dets": (np.arange(b, dtype=np.int32) % K + 1)[:, None],
        "boxes": means[:, None, None] + np.arange(K * 4, dtype=np.float32).reshape(1, K, 4),
        "scores": x[:, 0, 0, :K].copy(),
        "classes": np.tile(np.arange(K, dtype=np.int32), (b, 1)),
    }


def fake_tensorrt(version: str, drv: types.ModuleType, log: list[str], *, plan_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda t: t  # the fake's DataType is the numpy type itself
    specs = {"images": ((3, SIZE, SIZE), np.float32), **OUTPUTS}
    names = list(specs)

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class ExecutionContext:
        def __init__(self) -> None:
            self.batch, self.addr = -1, {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            assert name == "images" and tuple(shape[1:]) == specs["images"][0]
            self.batch = int(shape[0])
            return 1 <= self.batch <= MAX_BATCH

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (self.batch, *specs[name][0])

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addr[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 1234 and set(self.addr) == set(names)
            n = self.batch * 3 * SIZE * SIZE * 4
            x = (
                drv.memory[self.addr["images"]][:n]
                .view(np.float32)
                .reshape(self.batch, 3, SIZE, SIZE)
            )
            for name, value in expected_outputs(x).items():
                raw = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
                drv.memory[self.addr[name]][: raw.size] = raw
            log.append(f"execute {self.batch}")
            return True

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, i: int) -> str:
            return names[i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "images" else "out"

        def get_tensor_dtype(self, name: str) -> type:
            return specs[name][1]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, *specs[name][0])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            assert name == "images" and profile == 0
            return [(b, 3, SIZE, SIZE) for b in (1, 2, MAX_BATCH)]

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
            if hasattr(self, "DLA_core"):
                log.append(f"DLA_core {self.DLA_core}")
            log.append("deserialize")
            return Engine() if plan_ok else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


# ------------------------------------------------------------------------------ fixtures


def write_export(folder: Path, *, trt_version: str = "11.4.0.106", cc=(8, 7), **extra) -> Path:
    """A fake plan file and a manifest whose engine entry describes it."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / "model_fp32.engine"
    engine.write_bytes(b"not a real plan")
    entry = {"kind": "engine", "precision": "fp32", "file": engine.name}
    entry |= {"sha256": hashlib.sha256(engine.read_bytes()).hexdigest(), "path": str(engine)}
    entry |= {"trt_version": trt_version, "gpu_name": HERE[0], "compute_capability": list(cc)}
    entry |= {"strongly_typed": True, "build_s": 1.0, **extra}
    manifest = {"input": {"name": "images", "max_batch": MAX_BATCH}, "outputs": list(OUTPUTS)}
    write_manifest(folder, {**manifest, "classes": ["a"], "artifacts": [entry]})
    return engine


class Fakes(types.SimpleNamespace):
    log: list[str]
    drv: types.ModuleType
    asked: list[int]  # the device index of each gpu_identity call


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    """Fake pycuda and TensorRT 11.4.0.106 installed, on a fake sm_87 GPU; returns the call log."""
    log: list[str] = []
    pkg, drv = fake_pycuda(log)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0.106", drv, log))
    asked: list[int] = []
    monkeypatch.setattr(rt, "gpu_identity", lambda device: asked.append(device) or HERE)
    return Fakes(log=log, drv=drv, asked=asked)


def cuda_calls(log: list[str]) -> list[str]:
    return [c for c in log if c != "deserialize"]


# ----------------------------------------------------------------------------- CPU tests


def test_module_imports_without_tensorrt_or_pycuda() -> None:
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['pycuda'] = None\n"
        "import edgeyolo.runtime.tensorrt as m\n"
        "assert m.EngineRunner and m.StageTimes\n"
        "loaded = {k for k, v in sys.modules.items() if v is not None}\n"
        "assert not {'tensorrt', 'pycuda', 'pycuda.driver'} & loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_tensorrt_says_what_to_install(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(TensorRTNotAvailableError) as info:
        EngineRunner(write_export(tmp_path)).__enter__()
    message = str(info.value)
    assert "\n" not in message and "pip install tensorrt" in message and "JetPack" in message
    assert fakes.log == []  # no CUDA call was made


def test_without_pycuda_says_what_to_install(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(TensorRTNotAvailableError, match=r"pip install pycuda.*edgeyolo\[gpu\]"):
        EngineRunner(write_export(tmp_path)).__enter__()
    assert fakes.log == []


@pytest.mark.parametrize(
    ("built", "match"),
    [
        (
            {"trt_version": "10.3.0"},
            r"built with TensorRT 10\.3\.0, .* runs TensorRT 11\.4\.0\.106",
        ),
        ({"cc": (7, 2)}, r"compute capability 7\.2\), but .* \(compute capability 8\.7\)"),
        ({"sha256": "0" * 64}, r"not the file its manifest entry describes"),
    ],
)
def test_mismatched_engine_is_refused_before_deserializing(
    tmp_path: Path, fakes: Fakes, built: dict[str, Any], match: str
) -> None:
    engine = write_export(tmp_path, **built)
    with pytest.raises(EngineMismatchError, match=match) as info:
        EngineRunner(engine).__enter__()
    assert "edgeyolo build" in str(info.value)  # says how to rebuild
    assert "deserialize" not in fakes.log and cuda_calls(fakes.log) == []


def test_tensorrt_older_than_86_is_refused_before_cuda(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.5.3.1", fakes.drv, fakes.log))
    with pytest.raises(TensorRTNotAvailableError, match=r"tensorrt >= 8\.6 .* has 8\.5\.3\.1"):
        EngineRunner(write_export(tmp_path, trt_version="8.5.3.1")).__enter__()
    assert fakes.log == [] and fakes.asked == []


def test_the_device_asked_for_is_checked_and_opened(tmp_path: Path, fakes: Fakes) -> None:
    with EngineRunner(write_export(tmp_path), device=1) as b:
        b.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert fakes.asked == [1]  # the compat check looked at device 1, not device 0
    assert "device 1" in fakes.log and "device 0" not in fakes.log


def test_compat_can_be_checked_against_a_given_manifest(tmp_path: Path, fakes: Fakes) -> None:
    engine = write_export(tmp_path / "a")
    entry = {"kind": "engine", "file": engine.name, "trt_version": "8.6.1"}
    backend = EngineRunner(engine, manifest={"artifacts": [entry | {"compute_capability": [8, 7]}]})
    with pytest.raises(EngineMismatchError, match="TensorRT 8.6.1"):
        backend.__enter__()
    assert fakes.log == []


def test_missing_files_are_named(tmp_path: Path, fakes: Fakes) -> None:
    with pytest.raises(ExportError, match=re.escape(str(tmp_path / "nope.engine"))):
        EngineRunner(tmp_path / "nope.engine").__enter__()
    engine = write_export(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ExportError, match=re.escape(str(tmp_path / "manifest.json"))):
        EngineRunner(engine).__enter__()
    other = write_export(tmp_path / "other")
    other.rename(other.with_name("model_int8.engine"))
    with pytest.raises(ExportError, match="lists no engine 'model_int8.engine'"):
        EngineRunner(other.with_name("model_int8.engine")).__enter__()
    assert fakes.log == []


def test_undeserializable_plan_is_named_and_nothing_leaks(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = fake_tensorrt("11.4.0.106", fakes.drv, fakes.log, plan_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    engine = write_export(tmp_path)
    with pytest.raises(EngineMismatchError, match=re.escape(f"could not deserialize {engine}")):
        EngineRunner(engine).__enter__()
    opened = ["init", "device 0", "retain", "push", "deserialize", "pop"]
    assert fakes.log == [*opened, "push", "pop", "detach"]  # released inside the context


def test_cuda_graph_is_refused_honestly(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="pycuda wraps no stream-capture"):
        EngineRunner(tmp_path / "m.engine", cuda_graph=True)


def test_run_round_trip_on_fakes(tmp_path: Path, fakes: Fakes) -> None:
    rng = np.random.default_rng(0)
    backend = EngineRunner(write_export(tmp_path))
    with pytest.raises(RuntimeError, match="context manager"):
        backend.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
    with backend as b:
        assert (b.input_name, b.output_names) == ("images", list(OUTPUTS))
        assert (b.min_batch, b.max_batch, b.img_size) == (1, MAX_BATCH, SIZE)
        assert len(fakes.drv.live) == 1 + len(OUTPUTS)  # one device buffer per tensor, once
        for batch in (MAX_BATCH, 2, 1):  # smaller after larger: stale rows must not leak out
            x = rng.random((batch, 3, SIZE, SIZE), dtype=np.float32)
            outs = b.run(x)
            want = expected_outputs(x)
            assert list(outs) == list(OUTPUTS)
            for name, value in want.items():
                assert outs[name].dtype == value.dtype and outs[name].shape == value.shape
                np.testing.assert_array_equal(outs[name], value)
            t = b.last_times
            assert isinstance(t, StageTimes) and min(t.h2d_ms, t.compute_ms, t.d2h_ms) > 0
            assert t.bytes_h2d == x.nbytes and t.bytes_d2h == sum(v.nbytes for v in want.values())
        kept = outs["boxes"].copy()
        b.run(rng.random((1, 3, SIZE, SIZE), dtype=np.float32))
        np.testing.assert_array_equal(outs["boxes"], kept)  # results are copies, not views
        with pytest.raises(ConfigError, match=r"batch 5 is outside the engine's profile 1\.\.4"):
            b.run(np.zeros((5, 3, SIZE, SIZE), np.float32))
        with pytest.raises(ConfigError, match=r"takes \[B, 3, 32, 32\]"):
            b.run(np.zeros((1, 3, SIZE, SIZE + 32), np.float32))
        assert len(fakes.drv.live) == 1 + len(OUTPUTS) and fakes.log.count("retain") == 1
    assert fakes.drv.live == set() and fakes.log[-1] == "detach"
    assert fakes.log.count("push") == fakes.log.count("pop")
    runs = [c for c in fakes.log if c.startswith("execute")]
    assert runs == ["execute 4", "execute 2", "execute 1", "execute 1"]


def test_a_dla_engine_runs_on_the_core_its_manifest_names(tmp_path: Path, fakes: Fakes) -> None:
    with EngineRunner(write_export(tmp_path / "dla", dla_core=1)):
        pass
    assert fakes.log.index("DLA_core 1") == fakes.log.index("deserialize") - 1
    fakes.log.clear()
    with EngineRunner(write_export(tmp_path / "gpu")):  # a GPU engine leaves the default
        pass
    assert "deserialize" in fakes.log and not any(s.startswith("DLA_core") for s in fakes.log)


def test_exit_on_exception_frees_everything(tmp_path: Path, fakes: Fakes) -> None:
    with pytest.raises(KeyError), EngineRunner(write_export(tmp_path)):
        raise KeyError("user code failed")
    assert fakes.drv.live == set() and fakes.log[-2:] == ["pop", "detach"]


def test_api_scan_sees_tensorrt_objects_and_not_pycuda_ones() -> None:
    """The scan of tests/build/test_tensorrt_api.py must check every TensorRT call made in
    this module (including run's) and must not mistake pycuda objects for TensorRT ones."""
    from tests.build.test_tensorrt_api import Scan

    scan = Scan((REPO / "edgeyolo/runtime/tensorrt.py").read_text(), "tensorrt.py")
    must = {"deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "nptype"}
    must |= {"get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape"}
    must |= {"get_tensor_profile_shape", "set_input_shape", "set_tensor_address", "Runtime"}
    must |= {"execute_async_v3", "TensorIOMode", "Logger"}
    assert must <= scan.used.keys(), must - scan.used.keys()
    assert not PYCUDA_USES & scan.used.keys()
    assert not {m for ms in PYCUDA_METHODS.values() for m in ms} & scan.used.keys()
    assert not scan.dynamic and not scan.gated


# --------------------------------------------------------------- pycuda's names, real source

# What the backend reads from `pycuda.driver` and, per pycuda class, which methods it calls.
PYCUDA_USES = {"init", "Device", "Context", "Error", "Stream", "Event", "pagelocked_empty"}
PYCUDA_USES |= {"mem_alloc", "memcpy_htod_async", "memcpy_dtoh_async"}
PYCUDA_METHODS = {
    "Device": {"retain_primary_context"},
    "Context": {"push", "pop", "detach"},
    "Stream": {"synchronize", "handle"},
    "Event": {"record", "time_till"},
    "DeviceAllocation": {"free", "__int__"},
}
# What edgeyolo/runtime/gpu.py's gpu_identity reads from pycuda.driver (checked the same way).
GPU_PY_USES = {"init", "Device", "Error"}
GPU_PY_METHODS = {"Device": {"count", "name", "compute_capability"}}


def pycuda_sdist() -> Path | None:
    folder = Path(os.environ.get("EDGEYOLO_TRT_WHEELS") or REPO / ".ci" / "wheels")
    found = sorted(folder.glob("pycuda-*.tar.gz"))
    return found[-1] if found else None


def test_pycuda_uses_list_matches_the_module() -> None:
    """Every `cuda.<name>` in the backend is listed above, and every listed method is called."""
    source = (REPO / "edgeyolo/runtime/tensorrt.py").read_text()
    tree = ast.parse(source)
    read = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "cuda"
    }
    assert read == PYCUDA_USES
    for cls, methods in PYCUDA_METHODS.items():
        for m in methods - {"__int__"}:
            assert re.search(rf"\.{m}\b", source), f"{cls}.{m} is listed but not used"
    assert "int(tensor.device)" in source  # DeviceAllocation.__int__
    gpu_source = (REPO / "edgeyolo/runtime/gpu.py").read_text()
    read = {
        n.attr
        for n in ast.walk(ast.parse(gpu_source))
        if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "cuda"
    }
    assert read == GPU_PY_USES
    for m in GPU_PY_METHODS["Device"]:
        assert re.search(rf"\.{m}\(", gpu_source), f"Device.{m} is listed but not used"


def test_pycuda_names_exist_in_its_source() -> None:
    sdist = pycuda_sdist()
    if sdist is None:
        pytest.skip(
            "the pycuda sdist is not in .ci/wheels (or $EDGEYOLO_TRT_WHEELS); fetch it with "
            "`pip download --no-deps --no-binary pycuda pycuda==2026.1 -d .ci/wheels`"
        )
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("wrapper/wrap_cudadrv.cpp"))
        cpp = tar.extractfile(member).read().decode()
    top = set(re.findall(r'py::def\("(\w+)"', cpp)) | set(re.findall(r"DECLARE_EXC\((\w+)", cpp))
    top |= set(re.findall(r"DEF_SIMPLE_FUNCTION\((\w+)\)", cpp))
    classes: dict[str, set[str]] = {}
    for block in cpp.split("py::class_<")[1:]:
        head = re.search(r'\(\s*"(\w+)"', block)
        if head is None:
            continue
        body = block[: block.find(";\n")]  # a class's chained .def calls end at its first ';'
        names = set(re.findall(r'\.def\("(\w+)"', body)) | set(
            re.findall(r'add_property\("(\w+)"', body)
        )
        names |= set(re.findall(r"DEF_SIMPLE_METHOD(?:_WITH_ARGS)?\((\w+)", body))
        classes[head.group(1)] = names
    assert {"init", "mem_alloc", "Error"} <= top and "Device" in classes  # the parse works
    assert "begin_capture" not in cpp and "cuStreamBeginCapture" not in cpp  # cf. cuda_graph
    uses, methods = PYCUDA_USES | GPU_PY_USES, {**PYCUDA_METHODS}
    methods["Device"] = PYCUDA_METHODS["Device"] | GPU_PY_METHODS["Device"]
    missing = sorted(n for n in uses if n not in top and n not in classes)
    missing += [f"{c}.{m}" for c, ms in methods.items() for m in ms - classes.get(c, set())]
    assert not missing, f"not in {sdist.name}: {missing}"


# ------------------------------------------------------------------------------ GPU tests


def matched(got: dict[str, np.ndarray], want: dict[str, np.ndarray], i: int) -> int:
    """How many of image ``i``'s reference detections have a partner in ``got`` (same class,
    score within 1e-4, box within 1e-2 px), in any order: near-equal scores may swap places."""
    n = int(want["num_dets"][i, 0])
    free = np.ones(int(got["num_dets"][i, 0]), bool)
    found = 0
    for j in range(n):
        close = (got["classes"][i, : len(free)] == want["classes"][i, j]) & free
        close &= np.abs(got["scores"][i, : len(free)] - want["scores"][i, j]) <= 1e-4
        close &= np.abs(got["boxes"][i, : len(free)] - want["boxes"][i, j]).max(axis=1) <= 1e-2
        if close.any():
            free[np.argmax(close)] = False
            found += 1
    return found


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_engine_matches_onnxruntime(tmp_path: Path) -> None:
    """A tiny random-weight YOLOv3-tiny, built to an fp32 engine, against ONNX Runtime."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (`pip install pycuda`)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is present on this machine")
    from edgeyolo.build.options import BuildOptions
    from edgeyolo.build.tensorrt import build_engine
    from edgeyolo.export.onnx_export import build_fp32
    from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
    from tests.export.conftest import busy_model  # build_model(yolov3-tiny, 10 classes, 128)

    net = busy_model()  # no NVIDIA_TF32_OVERRIDE: build_engine clears TF32 itself
    rng = np.random.default_rng(0)  # blocky images with faint noise: varied, without exact ties
    images = np.kron(rng.random((3, 3, 8, 8), dtype=np.float32), np.ones((16, 16), np.float32))
    images = np.clip(images + rng.normal(0, 0.03, images.shape).astype(np.float32), 0, 1)
    onnx_path, _ = build_fp32(
        net, tmp_path / "model_fp32.onnx", img_size=128, conf_thres=0.3, max_det=300,
        check_images=images,
    )  # fmt: skip
    info = build_engine(
        onnx_path, tmp_path / "model_fp32.engine", precision="fp32", img_size=128,
        options=BuildOptions(max_batch=4),
    )  # fmt: skip
    entry = {"kind": "engine", "file": info.path.name, **info.to_dict()}
    write_manifest(tmp_path, {"input": {}, "outputs": [], "classes": [], "artifacts": [entry]})
    with OnnxRuntimeSession(onnx_path, threads=2) as ort_s:
        want = ort_s.run(images)
    with EngineRunner(info.path) as trt_b:
        assert (trt_b.min_batch, trt_b.max_batch, trt_b.img_size) == (1, 4, 128)
        got = trt_b.run(images)
        times = trt_b.last_times
        again = trt_b.run(images[:1])
    assert times is not None and min(times.h2d_ms, times.compute_ms, times.d2h_ms) > 0
    assert times.bytes_h2d == images.nbytes and times.bytes_d2h > 0
    assert want["num_dets"].sum() > 100, "the reference has too few boxes to bite on"
    np.testing.assert_array_equal(got["num_dets"], want["num_dets"], err_msg=trt.__version__)
    for i in range(len(images)):
        assert matched(got, want, i) == want["num_dets"][i, 0]
    np.testing.assert_array_equal(again["num_dets"], got["num_dets"][:1])
    assert matched(again, {k: v[:1] for k, v in got.items()}, 0) == got["num_dets"][0, 0]


# ------------------------------------------------- thresholds of an engine (adapter, on fakes)


def write_adapter_export(folder: Path, nms: dict[str, Any] | None) -> Path:
    """:func:`write_export` plus what the adapter reads: input shape, classes, ``nms``."""
    engine = write_export(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["shape"] = ["batch", 3, SIZE, SIZE]
    manifest["classes"] = [f"c{i}" for i in range(K)]
    if nms is not None:
        manifest["nms"] = nms
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return engine


BAKED = {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": K}


@pytest.mark.parametrize(
    ("asked", "match"),
    [
        ({"conf_thres": 0.1}, r"conf 0\.1 is below the engine's 0\.3"),
        ({"iou_thres": 0.6}, r"IoU 0\.6 is not the engine's 0\.45"),
        ({"max_det": K + 1}, rf"max_det {K + 1} is above the engine's {K}"),
    ],
)
def test_engine_refuses_what_its_built_in_nms_cannot_give(
    tmp_path: Path, fakes: Fakes, asked: dict[str, Any], match: str
) -> None:
    from edgeyolo.runtime.backends import open_backend

    engine = write_adapter_export(tmp_path, BAKED)
    with pytest.raises(ConfigError, match=match) as info:
        open_backend(engine, **asked)
    message = str(info.value)
    assert f"built in with conf 0.3, IoU 0.45, max_det {K}" in message
    assert "edgeyolo export --weights CHECKPOINT --engine --conf" in message  # how to rebuild
    assert fakes.log == []  # refused before any CUDA work


def test_engine_filters_a_higher_conf_and_fewer_detections(tmp_path: Path, fakes: Fakes) -> None:
    """The fake engine's scores for image i are row 0 of its channel 0; image 3 has 4 valid."""
    from edgeyolo.runtime.backends import open_backend

    engine = write_adapter_export(tmp_path, BAKED)
    x = np.zeros((4, 3, SIZE, SIZE), np.float32)
    x[3, 0, 0, :K] = [0.9, 0.7, 0.5, 0.35, 0.0]
    with open_backend(engine) as own:
        assert str(own.nms) == f"conf 0.3, IoU 0.45, max_det {K}" and not own.plan.limit
        assert own.infer(x)[3].scores.tolist() == pytest.approx([0.9, 0.7, 0.5, 0.35])
    with open_backend(engine, conf_thres=0.6, iou_thres=0.45) as high:
        assert high.plan.limit and high.nms.conf_thres == 0.6
        assert high.infer(x)[3].scores.tolist() == pytest.approx([0.9, 0.7])
    with open_backend(engine, max_det=3) as few:
        got = few.infer(x)[3]
    assert got.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert got.labels.tolist() == [0, 1, 2]


def test_engine_without_recorded_nms_refuses_thresholds(tmp_path: Path, fakes: Fakes) -> None:
    from edgeyolo.runtime.backends import open_backend

    engine = write_adapter_export(tmp_path, None)
    with pytest.raises(ConfigError, match="records no NMS settings"):
        open_backend(engine, conf_thres=0.5)
    with open_backend(engine) as b:  # nothing asked: runs, thresholds unknown
        assert b.nms is None and len(b.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))) == 1
    with pytest.raises(ConfigError, match="runs on a CUDA GPU, not --device cpu"):
        open_backend(engine, device="cpu")


def test_detect_cli_refuses_a_lower_conf_for_an_engine_in_one_line(
    tmp_path: Path, fakes: Fakes
) -> None:
    from typer.testing import CliRunner

    from edgeyolo.cli import app

    engine = write_adapter_export(tmp_path / "export", BAKED)
    args = ["detect", str(tmp_path), "--model", str(engine), "--conf", "0.05"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "60"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "conf 0.05 is below the engine's 0.3" in errors[0]
    assert "--engine --conf 0.05 --iou 0.45" in errors[0] and "Traceback" not in result.output
