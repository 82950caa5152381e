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

from edgeyolo.config import (
    DEFAULT_CONF_THRES,
    DEFAULT_IOU_THRES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_DET,
)
from edgeyolo.detections import Detections, from_outputs
from edgeyolo.errors import ConfigError, ModelFileError
from edgeyolo.lazy import lazy_import
from edgeyolo.runtime.manifest import MANIFEST_NAME, check_file, find_entry, read_manifest
from edgeyolo.runtime.onnxruntime import OnnxRuntimeSession
from edgeyolo.runtime.tensorrt import EngineRunner
from edgeyolo.runtime.thresholds import (
    NmsPlan,
    NmsSettings,
    graph_nms,
    manifest_nms,
    plan_nms,
    read_graph,
    retarget_nms,
)

__all__ = [
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "artifacts_in",
    "limit_detections",
    "open_backend",
]

ENGINE_SUFFIXES = (".engine", ".plan")

#: The PyTorch backend (:mod:`edgeyolo.runtime.pytorch`), imported for ``.pt`` files only: the
#: deploy side runs exported graphs and engines without torch.
_PYTORCH = lazy_import(
    "edgeyolo.runtime.pytorch",
    install="pip install torch torchvision (or `pip install edgeyolo[train]`)",
    needed_for="running a .pt checkpoint",
)


#: :attr:`Backend.max_batch` of a graph whose batch axis is dynamic (ONNX Runtime, PyTorch).
DYNAMIC_BATCH = 1 << 16


class Backend:
    """Base class: a context manager with :meth:`infer`."""

    name: str = ""
    precision: str = "fp32"
    img_size: int = 0
    max_batch: int = 1
    class_names: tuple[str, ...] = ()
    #: Where the network runs (``cpu``, ``cuda:0``); set by each backend once it is open.
    where: str = "cpu"
    #: The NMS settings its output obeys (``None``: unknown, e.g. an engine whose manifest has
    #: no ``nms`` section).
    nms: NmsSettings | None = None

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


def _manifest_for(path: Path) -> dict[str, Any] | None:
    return read_manifest(path.parent) if (path.parent / MANIFEST_NAME).is_file() else None


def _manifest_input(manifest: dict[str, Any], path: Path) -> tuple[int, tuple[str, ...], int]:
    """``(img_size, class names, max batch)`` from the manifest beside ``path``."""
    try:
        size = int(manifest["input"]["shape"][-1])
        names = tuple(str(n) for n in manifest["classes"])
        return size, names, int(manifest["input"].get("max_batch", 1))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(
            f"{path.parent / 'manifest.json'}: no valid input.shape / classes / input.max_batch "
            f"({type(e).__name__}: {e}); restore the manifest `edgeyolo export` wrote"
        ) from e


class OnnxRuntimeBackend(Backend):
    """An exported graph (decode + NMS inside) through ONNX Runtime; CUDA provider when asked.

    Args:
        path: the ``.onnx`` file (its ``manifest.json``, when beside it, gives class names,
            precision and maximum batch).
        device: ``cpu`` or ``cuda[:N]`` (the CUDA provider, when this onnxruntime has it).
        threads: intra-op threads.
        conf_thres, iou_thres, max_det: NMS settings; ``None`` keeps the graph's own. A lower
            score threshold, another IoU threshold or more detections run a copy of the graph
            re-targeted to them (:mod:`edgeyolo.runtime.thresholds`); a higher score threshold
            or fewer detections filter its output.

    Raises:
        ModelFileError: the file is not an edgeyolo graph, or cannot be read.
        ConfigError: the graph ends at raw head maps, or a threshold is out of range.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        conf_thres: float | None = None,
        iou_thres: float | None = None,
        max_det: int | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such ONNX file; run `edgeyolo export` first")
        manifest = _manifest_for(self.path)
        entry = find_entry(manifest, file=self.path.name)
        check_file(self.path, entry)
        self.precision = (entry or {}).get("precision", "fp32")
        if manifest is not None and manifest.get("raw"):
            raise ConfigError(f"{self.path} ends at raw head maps (--raw); export without --raw")
        self.plan = self._plan(manifest, conf_thres, iou_thres, max_det)
        self.nms = self.plan.want
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        self.session = OnnxRuntimeSession(
            self._source(), threads=threads, providers=providers, name=str(self.path)
        )
        self.manifest = manifest
        if manifest is not None:
            self.img_size, self.class_names, self.max_batch = _manifest_input(manifest, self.path)
            if isinstance(manifest["input"]["shape"][0], str):  # "batch": a dynamic batch axis
                self.max_batch = DYNAMIC_BATCH  # input.max_batch is the engine's profile

    def _plan(
        self,
        manifest: dict[str, Any] | None,
        conf: float | None,
        iou: float | None,
        max_det: int | None,
    ) -> NmsPlan:
        """The graph's own settings (the manifest's when nothing is asked, else the graph's
        initializers, which are the truth) against the requested ones."""
        self._graph = None
        baked = manifest_nms(manifest) if (conf, iou, max_det) == (None, None, None) else None
        if baked is None:
            self._graph = read_graph(self.path)
            baked = graph_nms(self._graph, where=self.path)
        return plan_nms(baked, conf_thres=conf, iou_thres=iou, max_det=max_det)

    def _source(self) -> Path | bytes:
        """The file itself, or the bytes of a copy re-targeted to the requested settings."""
        if not self.plan.retarget:
            self._graph = None
            return self.path
        w = self.plan.want
        model = retarget_nms(
            self._graph, conf_thres=w.conf_thres, iou_thres=w.iou_thres, max_det=w.max_det
        )
        self._graph = None
        return model.SerializeToString()

    def __enter__(self) -> OnnxRuntimeBackend:
        self.session.__enter__()
        shape = self.session.session.get_inputs()[0].shape
        if not self.img_size and isinstance(shape[-1], int):
            self.img_size = shape[-1]
        active = self.session.session.get_providers()[0]
        self.where = "cuda:0" if active == "CUDAExecutionProvider" else "cpu"
        if "num_dets" not in self.session.output_names:
            raise ModelFileError(
                f"{self.path}: outputs {self.session.output_names} are not an edgeyolo export's "
                "(num_dets, boxes, scores, classes); export the checkpoint with `edgeyolo export`"
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.session.__exit__(*exc)

    def infer(self, images: np.ndarray) -> list[Detections]:
        t0 = time.perf_counter()
        out = self.session.run(images)
        t1 = time.perf_counter()
        dets = from_outputs(out)
        if self.plan.limit:
            dets = limit_detections(dets, self.plan.want)
        t2 = time.perf_counter()
        self.last_times = {
            "compute": (t1 - t0) * 1e3,
            "postprocess": (t2 - t1) * 1e3,
            "bytes_d2h": float(sum(v.nbytes for v in out.values())),
        }
        return dets


class TensorRTBackend(Backend):
    """A TensorRT engine through pycuda (:class:`edgeyolo.runtime.tensorrt.EngineRunner`).

    Args:
        path: the engine; its ``manifest.json`` must be beside it.
        device: ``cuda`` or ``cuda:N``.
        conf_thres, max_det: a higher score threshold or fewer detections than the engine's
            own filter its output; ``None`` keeps the engine's.
        iou_thres: must be the engine's own (or ``None``).

    Raises:
        ModelFileError: no manifest beside the engine.
        ConfigError: a lower score threshold, another IoU threshold or more detections than
            the engine was built with (the message says how to rebuild), or a threshold asked
            of an engine whose manifest does not record its NMS settings.
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cuda",
        conf_thres: float | None = None,
        iou_thres: float | None = None,
        max_det: int | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        manifest = _manifest_for(self.path)
        if manifest is None:
            raise ModelFileError(
                f"{self.path}: no manifest.json beside the engine; engines are only run with the "
                "manifest `edgeyolo build` (or `export --engine`) writes (it says what the engine "
                "was built for)"
            )
        entry = find_entry(manifest, file=self.path.name) or {}
        baked = manifest_nms(entry) or manifest_nms(manifest)
        asked = (conf_thres, iou_thres, max_det) != (None, None, None)
        if baked is None and asked:
            raise ConfigError(
                f"{self.path}: its manifest records no NMS settings, so the thresholds built into "
                "the engine are unknown and --conf/--iou cannot be honoured; rebuild it with "
                "`edgeyolo export --weights CHECKPOINT --engine --conf C --iou I`, or leave them "
                "out"
            )
        self.plan: NmsPlan | None = None
        if baked is not None:
            self.plan = plan_nms(
                baked,
                conf_thres=conf_thres,
                iou_thres=iou_thres,
                max_det=max_det,
                engine=self.path,
            )
            self.nms = self.plan.want
        index = _cuda_index(device, what=str(self.path))
        self.trt = EngineRunner(self.path, manifest=manifest, device=index)
        self.where = f"cuda:{index}"
        self.precision = entry.get("precision", "fp32")
        self.img_size, self.class_names, self.max_batch = _manifest_input(manifest, self.path)

    def __enter__(self) -> TensorRTBackend:
        self.trt.__enter__()
        self.max_batch = self.trt.max_batch
        return self

    def __exit__(self, *exc: Any) -> None:
        self.trt.__exit__(*exc)

    def infer(self, images: np.ndarray) -> list[Detections]:
        out = self.trt.run(images)
        t0 = time.perf_counter()
        dets = from_outputs(out)
        if self.plan is not None and self.plan.limit:
            dets = limit_detections(dets, self.plan.want)
        t1 = time.perf_counter()
        st = self.trt.last_times
        self.last_times = {"postprocess": (t1 - t0) * 1e3}
        if st is not None:
            self.last_times.update(
                h2d=st.h2d_ms, compute=st.compute_ms, d2h=st.d2h_ms, bytes_d2h=float(st.bytes_d2h)
            )
        return dets


def limit_detections(dets: list[Detections], nms: NmsSettings) -> list[Detections]:
    """Each image's detections with a score above ``nms.conf_thres`` (compared in the scores'
    float32, as the graph compares), at most the ``nms.max_det`` first (they come sorted by
    score). Exact for outputs of a looser NMS: see :mod:`edgeyolo.runtime.thresholds`."""
    out = []
    for d in dets:
        boxes, scores, labels = d.numpy()
        keep = np.flatnonzero(scores > np.float32(nms.conf_thres))[: nms.max_det]
        out.append(Detections(boxes=boxes[keep], scores=scores[keep], labels=labels[keep]))
    return out


def _cuda_index(device: str, *, what: str) -> int:
    """The CUDA device index of ``auto``, ``cuda``, ``cuda:N`` or ``N`` (TensorRT runs on CUDA)."""
    spec = device.strip().lower()
    if spec in ("", "auto", "cuda"):
        return 0
    if spec.isdigit():
        return int(spec)
    if spec.startswith("cuda:") and spec[5:].isdigit():
        return int(spec[5:])
    if spec == "cpu":
        raise ConfigError(
            f"{what}: a TensorRT engine runs on a CUDA GPU, not --device cpu; use --device cuda, "
            "or run the .onnx beside it on the CPU"
        )
    raise ConfigError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")


def _check_device(device: str) -> str:
    """``device`` lower-cased when it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``N``."""
    spec = device.strip().lower()
    if spec in ("auto", "cpu", "cuda") or spec.isdigit():
        return spec
    if spec.startswith("cuda:") and spec[5:].isdigit():
        return spec
    raise ConfigError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")


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
    multi_label: bool = False,
    max_candidates: int | None = None,
    cfg: str | Path | None = None,
) -> Backend:
    """The backend for ``path``: ``.pt`` (or a darknet ``.weights``, with its ``cfg``, see
    :func:`edgeyolo.models.checkpoint.load_model`) → PyTorch, ``.onnx`` → ONNX Runtime,
    ``.engine`` / ``.plan`` → TensorRT.

    ``conf_thres``, ``iou_thres``, ``max_det``: ``None`` is the model's own (an exported graph's
    baked values; for a checkpoint :data:`edgeyolo.config.DEFAULT_CONF_THRES` and its siblings,
    0.25, 0.45 and 100); what a backend does with other values is described by
    :mod:`edgeyolo.runtime.thresholds`. The settings the output obeys are the
    backend's :attr:`Backend.nms`. ``img_size``, ``half``, ``multi_label`` and
    ``max_candidates`` (the post-processing of :func:`edgeyolo.postprocess.postprocess`;
    ``None``: its default cap) apply to checkpoints only: an exported graph carries its own.

    Raises:
        ModelFileError: ``path`` is missing, damaged or not an edgeyolo model.
        ConfigError: an unknown suffix or device, ``img_size`` for an exported model, a threshold
            out of range, or thresholds a TensorRT engine cannot honour.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    device = _check_device(device)
    if not path.is_file():
        what = "checkpoint" if suffix == ".pt" else "model file (.pt checkpoint, .onnx or .engine)"
        hint = "" if path.is_absolute() else f" (relative to the working folder {Path.cwd()})"
        raise ModelFileError(f"{path}: no such {what}{hint}")
    if cfg is not None and suffix != ".weights":
        raise ConfigError(f"{path}: --cfg is for a darknet .weights file; drop it")
    if suffix in (".pt", ".weights"):
        return _PYTORCH.TorchBackend(
            path,
            cfg=cfg,
            device=device,
            half=half,
            threads=threads,
            img_size=img_size,
            conf_thres=DEFAULT_CONF_THRES if conf_thres is None else conf_thres,
            iou_thres=DEFAULT_IOU_THRES if iou_thres is None else iou_thres,
            max_det=DEFAULT_MAX_DET if max_det is None else max_det,
            multi_label=multi_label,
            max_candidates=DEFAULT_MAX_CANDIDATES if max_candidates is None else max_candidates,
        )
    if img_size is not None:
        raise ConfigError(f"{path}: the input size of an exported model is fixed; drop --img-size")
    nms = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
    if suffix == ".onnx":
        return OnnxRuntimeBackend(
            path, device="cpu" if device == "auto" else device, threads=threads, **nms
        )
    if suffix in ENGINE_SUFFIXES:
        return TensorRTBackend(path, device="cuda" if device == "auto" else device, **nms)
    raise ConfigError(
        f"{path}: unknown model type {suffix!r}; use a .pt, .weights, .onnx or .engine file"
    )


def artifacts_in(folder: str | Path) -> list[Path]:
    """The ONNX files and engines an export folder's manifest lists, fp32 first, ONNX first."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    arts = sorted(
        [a for a in manifest["artifacts"] if a["kind"] in ("onnx", "engine")],
        key=lambda a: (a["kind"] != "onnx", order.get(a["precision"], 9)),
    )
    missing = [a["file"] for a in arts if not (folder / a["file"]).is_file()]
    if missing:
        raise ModelFileError(
            f"{folder}: manifest lists {', '.join(missing)} but the file is missing; copy the "
            "whole export folder, or export again"
        )
    return [folder / a["file"] for a in arts]
