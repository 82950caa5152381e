"""Typed results of one ``edgeyolo bench`` run, and their JSON form (``bench.json``).

:class:`BenchResult` holds one :class:`ArtifactResult` per model benched; ``to_dict()`` gives the
JSON-ready dict that :mod:`edgeyolo.bench.report` writes (keys and their order are the
``bench.json`` schema ``edgeyolo.bench/1``, documented in bench/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeyolo.runtime.thresholds import NmsSettings

__all__ = [
    "LATENCY_KEYS",
    "SCHEMA",
    "ArtifactResult",
    "ArtifactSpec",
    "BenchResult",
    "Compute",
    "Score",
    "Timing",
    "as_dict",
]

SCHEMA = "edgeyolo.bench/1"
#: The batch-1 latency statistics an artifact's ``latency_ms`` holds, in order.
LATENCY_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")


@dataclass(frozen=True)
class ArtifactSpec:
    """One model to bench: the checkpoint (``kind="pt"``) or an exported file.

    Attributes:
        key: its name in the report (the file name, or ``folder/name`` where two folders hold
            the same name; `` (fp16)`` appended for the checkpoint in half precision).
        path: the file.
        kind: ``pt``, ``onnx`` or ``engine``.
        nms: its deployment NMS (an export's from its manifest; the checkpoint's the first
            export's, so that parity compares like with like).
        img_size: its input size (an export's from its manifest; ``None`` until resolved).
        half: the checkpoint run in fp16.
        raw: the export ends at the raw head maps (not benched).
        cpu_target: the manifest's ``cpu_target`` of an int8 graph (``any``, ``vnni``).
        post: the post-processing the export's graph does beyond ``nms``
            (``{"multi_label": bool, "max_candidates": int}`` from its manifest, where given),
            which the checkpoint's reference run repeats so that parity compares like with like.
    """

    key: str
    path: Path
    kind: str
    nms: NmsSettings
    img_size: int | None = None
    half: bool = False
    raw: bool | None = None
    cpu_target: str | None = None
    post: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Timing:
    """What :func:`edgeyolo.bench.latency.time_model` measured for one artifact.

    Attributes:
        backend, precision, device: the backend that ran it (``onnxruntime``, ``fp16``, ``cpu``).
        threads: ``{"torch": n, "onnxruntime": n}`` intra-op threads during the timing.
        batches: batch size (a string) → latency statistics, ``stages_ms`` and ``bytes_d2h``.
        skipped: one line per batch size that could not be timed.
    """

    backend: str
    precision: str
    device: str
    threads: dict[str, int | None]
    batches: dict[str, dict[str, Any]]
    skipped: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, t: Mapping[str, Any]) -> Timing:
        """From ``time_model``'s ``{"ok": True, ...}`` result."""
        return cls(
            backend=t["backend"],
            precision=t["precision"],
            device=t["device"],
            threads=dict(t["threads"]),
            batches=dict(t["batches"]),
            skipped=tuple(t["skipped"]),
        )

    @property
    def batch1(self) -> dict[str, Any]:
        """The batch-1 figures (always timed)."""
        return self.batches["1"]

    @property
    def p50_ms(self) -> float:
        """Median batch-1 latency in milliseconds."""
        return float(self.batch1["p50"])


@dataclass(frozen=True)
class Compute:
    """GFLOP per image, achieved GFLOP/s at batch 1 and, where the device's fp32 matmul roof
    was measured, the share of it and the time the roof allows (``floor_ms``)."""

    gflop_per_image: float
    gflops_per_s: float
    roof_fraction: float | None = None
    floor_ms: float | None = None

    def to_dict(self) -> dict[str, float]:
        out = {"gflop_per_image": self.gflop_per_image, "gflops_per_s": self.gflops_per_s}
        if self.roof_fraction is not None and self.floor_ms is not None:
            out.update(roof_fraction=self.roof_fraction, floor_ms=self.floor_ms)
        return out


@dataclass(frozen=True)
class Score:
    """mAP@0.5 and mAP@0.5:0.95 (at ``map_setting``), and parity against the checkpoint
    (``None`` for the checkpoint itself): :func:`edgeyolo.metrics.parity.parity_report`'s dict
    plus ``iou_histogram``. Without a checkpoint, parity is against the export's stored
    reference detections (with the precision's ``floor`` and ``passed``), and mAP is ``None``
    where no data split was given."""

    map50: float | None
    map50_95: float | None
    parity: dict[str, Any] | None
    map_setting: str


@dataclass(frozen=True)
class ArtifactResult:
    """Everything measured for one artifact; :meth:`to_dict` is its ``bench.json`` entry."""

    spec: ArtifactSpec
    timing: Timing
    compute: Compute
    disturbed_reasons: tuple[str, ...]
    score: Score

    @property
    def disturbed(self) -> bool:
        """Its timing is suspect: its own series was noisy, or the machine was busy."""
        return bool(self.disturbed_reasons)

    @property
    def latency_ms(self) -> dict[str, float]:
        """Batch-1 latency statistics (:data:`LATENCY_KEYS`) in milliseconds."""
        return {k: self.timing.batch1[k] for k in LATENCY_KEYS}

    def to_dict(self) -> dict[str, Any]:
        t, b1 = self.timing, self.timing.batch1
        return {
            "file": str(self.spec.path),
            "kind": self.spec.kind,
            "backend": t.backend,
            "precision": t.precision,
            "device": t.device,
            "latency_ms": self.latency_ms,
            "throughput_ips": b1["throughput_ips"],
            "stages_ms": b1["stages_ms"],
            "bytes_d2h": b1["bytes_d2h"],
            "batches": t.batches,
            "threads": t.threads,
            "skipped": list(t.skipped),
            "nms": asdict(self.spec.nms),
            "cpu_target": self.spec.cpu_target,
            "img_size": self.spec.img_size,
            "compute": self.compute.to_dict(),
            "disturbed": self.disturbed,
            "disturbed_reasons": list(self.disturbed_reasons),
            "map50": self.score.map50,
            "map50_95": self.score.map50_95,
            "parity": self.score.parity,
            "map_setting": self.score.map_setting,
        }


@dataclass(frozen=True)
class BenchResult:
    """One bench run.

    Attributes:
        header: schema, date, command, machine and versions, settings, compute (GFLOP per
            image, each device's fp32 roof) and the thresholds used.
        reference: the checkpoint's key in ``artifacts``.
        artifacts: key → result, the reference first.
        stability: :func:`edgeyolo.bench.latency.judge_stability`'s verdict.
        notes: facts that qualify a figure.
        not_available: one line per model or fact that could not be benched here.
        failed: one line per model that failed to run.
    """

    header: dict[str, Any]
    reference: str
    artifacts: dict[str, ArtifactResult]
    stability: dict[str, Any]
    notes: tuple[str, ...] = ()
    not_available: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written as ``bench.json``."""
        return {
            "header": self.header,
            "reference": self.reference,
            "artifacts": {k: a.to_dict() for k, a in self.artifacts.items()},
            "stability": self.stability,
            "notes": list(self.notes),
            "not_available": list(self.not_available),
            "failed": list(self.failed),
        }


def as_dict(result: BenchResult | Mapping[str, Any]) -> dict[str, Any]:
    """``result`` as :meth:`BenchResult.to_dict` gives it (a dict is returned as it is)."""
    return result.to_dict() if isinstance(result, BenchResult) else dict(result)
