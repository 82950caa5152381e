"""bench without the checkpoint: parity against the export folder's stored reference detections."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.runner import run_bench, to_markdown
from edgeyolo.detections import Detections
from edgeyolo.errors import ConfigError
from edgeyolo.runtime.manifest import read_manifest, write_manifest
from edgeyolo.runtime.references import load_references, write_references


def _bench(folder: Path) -> dict:
    cfg = BenchConfig(weights=None, models=(folder,), data=None, runs=2, warmup=1, isolate=False)
    return run_bench(cfg, progress=False).to_dict()


def test_every_model_is_judged_against_the_stored_detections(exported: Path) -> None:
    result = _bench(exported)
    arts = result["artifacts"]
    assert result["reference"] == "model_fp32.onnx" and set(arts) == {
        "model_fp32.onnx",
        "model_fp16.onnx",
    }
    refs = load_references(exported)
    want = sum(len(d) for d in refs.detections)
    for key, a in arts.items():
        p = a["parity"]
        assert p["passed"] is True and p["images"] == len(refs), key
        assert p["ref_count"] == want and a["map50"] is None
    assert arts["model_fp32.onnx"]["parity"]["min_iou"] > 0.999
    assert result["header"]["settings"]["images"] == len(refs)
    md = to_markdown(result)
    assert "× ref" in md and "stored reference frames" in md and "within its floor" in md


def test_a_model_that_no_longer_reproduces_its_references_is_reported_below_its_floor(
    exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "moved"
    shutil.copytree(exported, folder)
    refs = load_references(folder)
    shifted = [Detections(d.boxes + np.float32(1.5), d.scores, d.labels) for d in refs.detections]
    fields = write_references(folder / "references.npz", refs.images, shifted)
    manifest = read_manifest(folder)
    manifest["references"] |= fields
    write_manifest(folder, manifest)
    result = _bench(folder)
    fp32 = result["artifacts"]["model_fp32.onnx"]["parity"]
    assert fp32["passed"] is False and fp32["matched_fraction"] == 1.0 and fp32["min_iou"] < 0.999
    assert "model_fp32.onnx: parity BELOW its floor (fp32 (TF32 off) reproduces" in to_markdown(
        result
    )


def test_bench_without_checkpoint_needs_models() -> None:
    with pytest.raises(ConfigError, match="nothing to bench"):
        BenchConfig(weights=None, models=(), data=None)
