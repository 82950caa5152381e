"""FLOPs counted from the ONNX file equal the PyTorch model's count (the deploy side: no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeyolo.bench.flops import graph_flops
from edgeyolo.errors import ModelFileError
from edgeyolo.models.checkpoint import load_model
from edgeyolo.models.info import count_flops


def test_graph_flops_equal_the_checkpoints_for_every_precision(
    exported: Path, busy_checkpoint: Path
) -> None:
    model, _ = load_model(busy_checkpoint)
    want = count_flops(model, model.config.img_size)
    graphs = sorted(exported.glob("*.onnx"))
    assert len(graphs) >= 2  # fp32 and fp16 (casts around the same convolutions)
    for g in graphs:
        assert graph_flops(g) == want, g.name


def test_graph_flops_names_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf \xff\xfe")
    with pytest.raises(ModelFileError, match="model.onnx"):
        graph_flops(bad)
