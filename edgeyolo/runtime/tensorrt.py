"""TensorRT engine runner through pycuda: buffers allocated once, one stream, timed stages.

``with EngineRunner("export/tiny/model_int8.engine") as trt_b: outs = trt_b.run(images)``

I/O follows :mod:`edgeyolo.export.graph`: ``images`` ``float32[B, 3, S, S]`` in; ``num_dets
int32[B, 1]``, ``boxes float32[B, K, 4]``, ``scores float32[B, K]``, ``classes int32[B, K]`` out
(decode and NMS run inside the engine). The batch range is the engine's optimization profile.

``tensorrt`` and ``pycuda.driver`` are imported on first use (:mod:`edgeyolo.runtime.gpu`). An
engine whose manifest entry names another TensorRT version or compute capability is refused
*before* deserializing. No CUDA-graph capture, for two reasons: pycuda (2026.1,
``src/wrapper/wrap_cudadrv.cpp``) wraps no stream-capture or graph API; and the export's graph ends
in NonMaxSuppression, whose output shape depends on the data, which TensorRT's documentation and
Torch-TensorRT's list as not capturable (TensorRT-RTX added
``IExecutionContext::isStreamCapturable`` for exactly this). An engine exported with ``--raw``
would be capturable, but has no NMS. ``cuda_graph=True`` raises :class:`NotImplementedError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeyolo.errors import (
    ConfigError,
    EngineMismatchError,
    ExportError,
    ModelFileError,
    RuntimeBackendError,
    TensorRTNotAvailableError,
)
from edgeyolo.runtime.gpu import (
    REBUILD,
    check_engine_compat,
    gpu_identity,
    import_pycuda,
    import_tensorrt,
)
from edgeyolo.runtime.manifest import MANIFEST_NAME, find_entry, read_manifest

if TYPE_CHECKING:  # scripts/typecheck_trt.sh checks the calls against TensorRT's stubs
    import tensorrt

    from edgeyolo.runtime.trt_types import TensorRT

__all__ = ["StageTimes", "EngineRunner"]


@dataclass(frozen=True)
class StageTimes:
    """GPU-side milliseconds of the last :meth:`EngineRunner.run`, from CUDA events recorded
    on its stream (the host copy into the pinned buffer is not in ``h2d_ms``), and bytes moved."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    bytes_h2d: int
    bytes_d2h: int


@dataclass
class _Tensor:
    """One engine I/O tensor: flat pinned host buffer and device buffer, sized for max batch."""

    name: str
    dtype: np.dtype
    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation


@dataclass
class _Events:
    """pycuda Events recorded before H2D and after H2D, compute and D2H."""

    start: Any
    h2d: Any
    compute: Any
    end: Any


class EngineRunner:
    """Run a serialized TensorRT engine on one GPU; see the module docstring.

    Args:
        engine_path: a ``model_*.engine`` file; its ``manifest.json`` is read from the same folder.
        manifest: the export manifest, when already read (skips the file).
        device: CUDA device index.
        cuda_graph: not available (see the module docstring); True raises NotImplementedError.
        check_compat: refuse engines whose manifest names another TensorRT version or GPU
            architecture (default). False skips the manifest entirely.
    """

    input_name: str
    output_names: list[str]
    max_batch: int
    min_batch: int
    img_size: int
    last_times: StageTimes | None
    # TensorRT objects, typed by TensorRT's stubs (scripts/typecheck_trt.sh); the names read from
    # them are also checked by tests/build/test_tensorrt_api.py (its scan sees these as TensorRT).
    _logger: tensorrt.Logger | None
    _runtime: tensorrt.Runtime | None
    _engine: tensorrt.ICudaEngine | None
    _context: tensorrt.IExecutionContext | None

    def __init__(
        self,
        engine_path: str | Path,
        *,
        manifest: dict[str, Any] | None = None,
        device: int = 0,
        cuda_graph: bool = False,
        check_compat: bool = True,
    ) -> None:
        if cuda_graph:
            raise NotImplementedError(
                "cuda_graph=True: pycuda wraps no stream-capture/CUDA-graph API "
                "(cuStreamBeginCapture, cuGraphInstantiate), and the engine's NMS has "
                "data-dependent shapes, which TensorRT cannot run under stream capture; run with "
                "cuda_graph=False"
            )
        self.engine_path = Path(engine_path)
        self.manifest = manifest
        self.device = int(device)
        self.check_compat = check_compat
        self.input_name, self.output_names = "", []
        self.max_batch = self.min_batch = self.img_size = 0
        self.last_times = None
        self._cuda: ModuleType | None = None
        self._cuda_ctx = None  # pycuda Context (the device's primary context), pushed per call
        self._stream = None
        self._events: _Events | None = None
        self._tensors: list[_Tensor] = []
        self._logger = self._runtime = self._engine = self._context = None

    def __enter__(self) -> EngineRunner:
        if self._cuda_ctx is not None:
            raise RuntimeError("this EngineRunner is already open; it is not re-entrant")
        path = self.engine_path
        if not path.is_file():
            raise ModelFileError(
                f"{path}: no such engine file; build it: `edgeyolo build GRAPH.onnx`"
            )
        trt = import_tensorrt()
        cuda = import_pycuda()
        blob = path.read_bytes()
        if self.check_compat:
            self._check_compat(str(trt.__version__), blob)
        try:
            cuda.init()
            # The *primary* context: the one the CUDA runtime, hence TensorRT and torch, use on
            # this device. Retaining it (not making a new context) lets torch tensors and this
            # engine share one context in one process; pycuda.autoinit is avoided for the same
            # reason and for its import-time side effects.
            ctx = cuda.Device(self.device).retain_primary_context()
        except cuda.Error as exc:
            raise TensorRTNotAvailableError(
                f"CUDA device {self.device} cannot be opened ({exc}); check the driver with "
                "`nvidia-smi`, CUDA_VISIBLE_DEVICES and the `device` argument"
            ) from exc
        self._cuda, self._cuda_ctx = cuda, ctx
        try:
            with self._current():
                self._load(trt, cuda, blob)
        except BaseException:
            # The traceback keeps _load's locals (engine, buffers) alive: drop them now, while
            # the context can still be made current, rather than whenever the error is dropped.
            traceback.clear_frames(sys.exc_info()[2])
            self._release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images`` ``float32[B, 3, S, S]`` → every output by name, as fresh arrays of batch B.

        Sets :attr:`last_times`. ``min_batch <= B <= max_batch`` (the engine's profile).
        """
        context, cuda, stream, ev = self._context, self._cuda, self._stream, self._events
        if context is None or cuda is None or stream is None or ev is None:
            raise RuntimeError("use EngineRunner as a context manager (with ... as trt_b)")
        inp: _Tensor = self._tensors[0]
        x: np.ndarray = np.ascontiguousarray(images, dtype=inp.dtype)
        size = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ConfigError(
                f"images have shape {x.shape}; the engine takes [B, 3, {size}, {size}]"
            )
        batch = int(x.shape[0])
        if not self.min_batch <= batch <= self.max_batch:
            raise ConfigError(
                f"batch {batch} is outside the engine's profile {self.min_batch}..{self.max_batch} "
                f"({self.engine_path}); split the batch, or rebuild with `--batch {batch}`"
            )
        inp.host[: x.size] = x.reshape(-1)
        result: dict[str, np.ndarray] = {}
        with self._current():
            if not context.set_input_shape(inp.name, tuple(x.shape)):
                raise ConfigError(f"TensorRT refused input shape {tuple(x.shape)} for {inp.name}")
            ev.start.record(stream)
            cuda.memcpy_htod_async(inp.device, inp.host[: x.size], stream)
            ev.h2d.record(stream)
            if not context.execute_async_v3(stream.handle):
                raise RuntimeBackendError(
                    f"TensorRT could not enqueue {self.engine_path} for batch {batch} (its log "
                    "above says why); check GPU memory with `nvidia-smi`"
                )
            ev.compute.record(stream)
            shapes: dict[str, tuple[int, ...]] = {}
            out: _Tensor
            for out in self._tensors[1:]:
                shape = tuple(int(d) for d in context.get_tensor_shape(out.name))
                shapes[out.name] = shape
                cuda.memcpy_dtoh_async(out.host[: int(np.prod(shape))], out.device, stream)
            ev.end.record(stream)
            stream.synchronize()
            times = (ev.start.time_till(ev.h2d), ev.h2d.time_till(ev.compute))
            times += (ev.compute.time_till(ev.end),)
        bytes_d2h = 0
        for out in self._tensors[1:]:  # copies: the pinned buffers are reused by the next run
            shape = shapes[out.name]
            array: np.ndarray = out.host[: int(np.prod(shape))].reshape(shape).copy()
            result[out.name], bytes_d2h = array, bytes_d2h + int(array.nbytes)
        self.last_times = StageTimes(*(float(t) for t in times), int(x.nbytes), bytes_d2h)
        return result

    def _check_compat(self, trt_version: str, blob: bytes) -> None:
        """The engine's manifest entry must describe this file and fit this TensorRT and GPU."""
        manifest = self.manifest
        where = self.engine_path.parent / MANIFEST_NAME
        if manifest is None:
            manifest = read_manifest(where)
        name = self.engine_path.name
        entry = find_entry(manifest, file=name, kind="engine")
        if entry is None:
            raise ExportError(
                f"{where} lists no engine {name!r}, so its build target is unknown; "
                f"{REBUILD}, or pass check_compat=False"
            )
        digest = entry.get("sha256")
        if digest is not None and hashlib.sha256(blob).hexdigest() != digest:
            raise EngineMismatchError(
                f"{self.engine_path} is not the file its manifest entry describes (sha256 "
                f"differs); {REBUILD}"
            )
        gpu_name, cc = gpu_identity(self.device)
        check_engine_compat(
            entry, trt_version=trt_version, gpu_name=gpu_name, compute_capability=cc
        )

    def _load(self, trt: TensorRT, cuda: ModuleType, blob: bytes) -> None:
        """Deserialize, enumerate I/O, allocate buffers for the max batch, stream and events."""
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        core = manifest_dla_core(self.engine_path, self.manifest)
        if core is not None:  # as trtexec --useDLACore: a DLA engine runs on the core it names
            self._runtime.DLA_core = core
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise EngineMismatchError(
                f"TensorRT {trt.__version__} could not deserialize {self.engine_path} (corrupt, "
                f"or built by another TensorRT; its log above says which); {REBUILD}"
            )
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeBackendError(
                f"TensorRT could not create an execution context for {self.engine_path} (most "
                "often: not enough free GPU memory for its activations; see `nvidia-smi`, or "
                "rebuild with a smaller --batch)"
            )
        self._context = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelFileError(
                f"{self.engine_path}: expected one input tensor, found {inputs}; not an edgeyolo "
                f"engine: {REBUILD}"
            )
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n != self.input_name]
        dims = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] < 1:
            raise ModelFileError(
                f"{self.engine_path}: input shape {dims} is not [B, 3, S, S]; not an edgeyolo "
                f"engine: {REBUILD}"
            )
        self.img_size = dims[2]
        if dims[0] < 0:  # dynamic batch: the profile is the truth, not the manifest's max_batch
            low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(low[0]), int(high[0])
        else:
            self.min_batch = self.max_batch = dims[0]
        full = (self.max_batch, *dims[1:])
        if not context.set_input_shape(self.input_name, full):
            raise ModelFileError(
                f"{self.engine_path}: TensorRT refused input shape {full}; {REBUILD}"
            )
        for name in [self.input_name, *self.output_names]:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if min(shape) < 0:
                raise ModelFileError(
                    f"{self.engine_path}: tensor {name} has no fixed shape {shape}; {REBUILD}"
                )
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host: np.ndarray = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            tensor = _Tensor(name, dtype, host, cuda.mem_alloc(max(host.nbytes, 1)))
            self._tensors.append(tensor)
            # Addresses never change, so they are set once; run() only changes the input shape.
            context.set_tensor_address(name, int(tensor.device))
        self._stream = cuda.Stream()
        self._events = _Events(cuda.Event(), cuda.Event(), cuda.Event(), cuda.Event())

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        """Make the retained primary context current for a block, and restore the stack after."""
        cuda, ctx = self._cuda, self._cuda_ctx
        if cuda is None or ctx is None:
            raise RuntimeError("use EngineRunner as a context manager (with ... as trt_b)")
        ctx.push()
        try:
            yield
        finally:
            cuda.Context.pop()

    def _release(self) -> None:
        """Drop TensorRT objects and free buffers with the context current; release the context."""
        cuda, ctx = self._cuda, self._cuda_ctx
        if cuda is None or ctx is None:
            return
        try:
            with self._current():
                try:
                    if self._stream is not None:
                        self._stream.synchronize()
                finally:  # context, engine, runtime first; pinned memory, stream and events go
                    # with their last reference, which must happen while the context is valid
                    self._context = self._engine = self._runtime = self._logger = None
                    _free(self._tensors)
                    self._tensors, self._stream, self._events = [], None, None
        finally:
            # pycuda's detach (after the pop) pushes the context, releases our reference
            # (cuDevicePrimaryCtxRelease) and leaves it current on this thread, as
            # pycuda.autoprimaryctx does at exit: it is what the CUDA runtime would use anyway.
            self._cuda = self._cuda_ctx = None
            ctx.detach()


def _free(tensors: list[_Tensor]) -> None:
    """Free the device buffers of ``tensors`` (their pinned host arrays go with the list)."""
    tensor: _Tensor
    for tensor in tensors:
        tensor.device.free()


def manifest_dla_core(engine_path: Path, manifest: dict[str, Any] | None) -> int | None:
    """The DLA core the manifest entry of ``engine_path`` names (``None``: a GPU engine, or no
    manifest beside it); ``manifest`` is read from beside the engine when not given."""
    where = engine_path.with_name(MANIFEST_NAME)
    if manifest is None and where.is_file():
        manifest = read_manifest(where.parent)
    if manifest is None:
        return None
    entry = find_entry(manifest, file=engine_path.name, kind="engine")
    if entry is None or entry.get("dla_core") is None:
        return None
    return int(entry["dla_core"])
