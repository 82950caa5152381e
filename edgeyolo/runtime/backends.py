"""One interface over PyTorch, ONNX Runtime and TensorRT, chosen from the file's suffix.

Every backend takes the same input, ``float32[B, 3, S, S]`` RGB 0..1 letterboxed by
:func:`edgeyolo.data.transforms.letterbox`, and returns one ``Detections`` per image with boxes
in input pixels. For exported graphs decode + NMS run inside the graph (only the fixed-size
detections come back); the PyTorch backend runs the same decode and torchvision NMS on its own
device. ``last_times`` holds the last call's stage times in ms where the backend can measure them.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from edgeyolo.errors import ConfigError
from edgeyolo.postprocess import Detections, from_outputs

__all__ = [
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackendAdapter",
    "TorchBackend",
    "artifacts_in",
    "open_backend",
]

ENGINE_SUFFIXES = (".engine", ".plan")


class Backend:
    """Base class: a context manager with :meth:`infer`."""

    name: str = ""
    precision: str = "fp32"
    img_size: int = 0
    max_batch: int = 1
    class_names: tuple[str, ...] = ()
    #: Where the network runs (``cpu``, ``cuda:0``); set by each backend once it is open.
    where: str = "cpu"

    def __init__(self) -> None:
        self.last_times: dict[str, float] = {}

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def infer(self, images: np.ndarray) -> list[Detections]:
        """``images`` (``float32[B, 3, S, S]``) → per-image detections in input pixels."""
        raise NotImplementedError


class TorchBackend(Backend):
    """A training checkpoint on CPU or CUDA, fp32 or fp16 (``half``: for CUDA; slow on a CPU)."""

    name = "pytorch"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        half: bool = False,
        img_size: int | None = None,
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_det: int = 100,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        from edgeyolo.device import select_device
        from edgeyolo.train.checkpoint import load_model

        self.device = select_device(device)
        self.model, _ = load_model(weights, device=self.device)
        index = self.device.index
        if self.device.type == "cuda" and index is None:
            index = torch.cuda.current_device()
        self.where = f"cuda:{index}" if self.device.type == "cuda" else "cpu"
        if half:
            self.model.half()
        self.precision = "fp16" if half else "fp32"
        self.img_size = img_size or self.model.config.img_size
        self.class_names = tuple(self.model.config.class_names)
        self.max_batch = 1 << 16
        self.kw = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
        self.threads = threads

    def __enter__(self) -> TorchBackend:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return self

    @torch.no_grad()
    def infer(self, images: np.ndarray) -> list[Detections]:
        from edgeyolo.predict import heads_to_detections

        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        if cuda:
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        heads = self.model(x)
        if cuda:
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        dets = [d.to("cpu") for d in heads_to_detections(self.model, heads, **self.kw)]
        t3 = time.perf_counter()
        self.last_times = {
            "h2d": (t1 - t0) * 1e3,
            "compute": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return dets


def _manifest_for(path: Path) -> dict[str, Any] | None:
    from edgeyolo.export.manifest import MANIFEST_NAME, read_manifest

    return read_manifest(path.parent) if (path.parent / MANIFEST_NAME).is_file() else None


def _entry(manifest: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    for a in (manifest or {}).get("artifacts", []):
        if a["file"] == path.name:
            return a
    return {}


class OnnxRuntimeBackend(Backend):
    """An exported graph (decode + NMS inside) through ONNX Runtime; CUDA provider when asked."""

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, *, device: str = "cpu", threads: int | None = None
    ) -> None:
        super().__init__()
        from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession

        self.path = Path(path)
        manifest = _manifest_for(self.path)
        self.precision = _entry(manifest, self.path).get("precision", "fp32")
        if manifest is not None and manifest.get("raw"):
            raise ConfigError(f"{self.path} ends at raw head maps (--raw); export without --raw")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        self.session = OnnxRuntimeSession(self.path, threads=threads, providers=providers)
        self.manifest = manifest
        if manifest is not None:
            self.img_size = int(manifest["input"]["shape"][-1])
            self.class_names = tuple(manifest["classes"])
            self.max_batch = int(manifest["input"].get("max_batch", 1))

    def __enter__(self) -> OnnxRuntimeBackend:
        self.session.__enter__()
        shape = self.session.session.get_inputs()[0].shape
        if not self.img_size and isinstance(shape[-1], int):
            self.img_size = shape[-1]
        active = self.session.session.get_providers()[0]
        self.where = "cuda:0" if active == "CUDAExecutionProvider" else "cpu"
        if "num_dets" not in self.session.output_names:
            raise ConfigError(
                f"{self.path}: outputs {self.session.output_names} are not an edgeyolo export's"
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.session.__exit__(*exc)

    def infer(self, images: np.ndarray) -> list[Detections]:
        t0 = time.perf_counter()
        out = self.session.run(images)
        t1 = time.perf_counter()
        dets = from_outputs(out)
        t2 = time.perf_counter()
        self.last_times = {
            "compute": (t1 - t0) * 1e3,
            "postprocess": (t2 - t1) * 1e3,
            "bytes_d2h": float(sum(v.nbytes for v in out.values())),
        }
        return dets


class TensorRTBackendAdapter(Backend):
    """A TensorRT engine through pycuda (:class:`edgeyolo.runtime.tensorrt.TensorRTBackend`)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device: str = "cuda") -> None:
        super().__init__()
        from edgeyolo.runtime.tensorrt import TensorRTBackend

        self.path = Path(path)
        manifest = _manifest_for(self.path)
        if manifest is None:
            raise ConfigError(
                f"{self.path}: no manifest.json beside the engine; engines are only run with the "
                "manifest `edgeyolo export --engine` writes (it says what the engine was built for)"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        self.trt = TensorRTBackend(self.path, manifest=manifest, device=index)
        self.where = f"cuda:{index}"
        self.precision = _entry(manifest, self.path).get("precision", "fp32")
        self.img_size = int(manifest["input"]["shape"][-1])
        self.class_names = tuple(manifest["classes"])
        self.max_batch = int(manifest["input"].get("max_batch", 1))

    def __enter__(self) -> TensorRTBackendAdapter:
        self.trt.__enter__()
        self.max_batch = self.trt.max_batch
        return self

    def __exit__(self, *exc: Any) -> None:
        self.trt.__exit__(*exc)

    def infer(self, images: np.ndarray) -> list[Detections]:
        out = self.trt.run(images)
        t0 = time.perf_counter()
        dets = from_outputs(out)
        t1 = time.perf_counter()
        st = self.trt.last_times
        self.last_times = {"postprocess": (t1 - t0) * 1e3}
        if st is not None:
            self.last_times.update(
                h2d=st.h2d_ms, compute=st.compute_ms, d2h=st.d2h_ms, bytes_d2h=float(st.bytes_d2h)
            )
        return dets


def open_backend(
    path: str | Path,
    *,
    device: str = "auto",
    threads: int | None = None,
    conf_thres: float | None = None,
    iou_thres: float | None = None,
    max_det: int | None = None,
    half: bool = False,
    img_size: int | None = None,
) -> Backend:
    """The backend for ``path``: ``.pt`` → PyTorch, ``.onnx`` → ONNX Runtime, ``.engine`` /
    ``.plan`` → TensorRT. Thresholds and ``img_size`` apply to PyTorch; exported graphs carry
    theirs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        what = "checkpoint" if suffix == ".pt" else "model file (.pt checkpoint, .onnx or .engine)"
        raise ConfigError(f"{path}: no such {what}")
    if suffix == ".pt":
        return TorchBackend(
            path,
            device=device,
            half=half,
            threads=threads,
            img_size=img_size,
            conf_thres=0.25 if conf_thres is None else conf_thres,
            iou_thres=0.45 if iou_thres is None else iou_thres,
            max_det=100 if max_det is None else max_det,
        )
    if img_size is not None:
        raise ConfigError(f"{path}: the input size of an exported model is fixed; drop --img-size")
    if suffix == ".onnx":
        return OnnxRuntimeBackend(
            path, device="cpu" if device == "auto" else device, threads=threads
        )
    if suffix in ENGINE_SUFFIXES:
        return TensorRTBackendAdapter(path, device="cuda" if device == "auto" else device)
    raise ConfigError(f"{path}: unknown model type {suffix!r}; use a .pt, .onnx or .engine file")


def artifacts_in(folder: str | Path) -> list[Path]:
    """The ONNX files and engines an export folder's manifest lists, fp32 first, ONNX first."""
    from edgeyolo.export.manifest import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    arts = sorted(
        [a for a in manifest["artifacts"] if a["kind"] in ("onnx", "engine")],
        key=lambda a: (a["kind"] != "onnx", order.get(a["precision"], 9)),
    )
    missing = [a["file"] for a in arts if not (folder / a["file"]).is_file()]
    if missing:
        raise ConfigError(f"{folder}: manifest lists {', '.join(missing)} but the file is missing")
    return [folder / a["file"] for a in arts]
