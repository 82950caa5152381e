"""Under torchrun only rank 0 reports the run: the other ranks never evaluate, so the closing line
they would print reads ``best val mAP@0.5 -1.0000``.

The ranks are faked in one process (a real 2-process run is ``test_distributed.py``'s, marked
slow): the trainer's ``init_distributed`` says "rank R of 2", the cross-rank sum adds the other
rank's (identical) figures, and the DDP wrapper, which needs a process group, is left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.train import trainer as trainer_module
from edgeyolo.train.distributed import DistInfo

runner = CliRunner()


def fake_rank(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    """Make the trainer believe it is ``rank`` of a 2-process job."""

    def init(device: torch.device) -> DistInfo:
        return DistInfo(rank=rank, world_size=2, local_rank=rank)

    def sums(values: dict[str, float], info: DistInfo) -> dict[str, float]:
        return {k: 2 * v for k, v in values.items()}  # the other rank saw the same figures

    def no_ddp(self: trainer_module.Trainer, model: torch.nn.Module) -> torch.nn.Module:
        return model

    monkeypatch.setattr(trainer_module, "init_distributed", init)
    monkeypatch.setattr(trainer_module, "all_reduce_sums", sums)
    monkeypatch.setattr(trainer_module.Trainer, "_wrap_distributed", no_ddp)


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "train", "--data", str(data), "--img-size", "96", "--epochs", "1", "--batch", "2",
        "--workers", "0", "--device", "cpu", "--no-progress", "--anchors", "default",
        "--out", str(out),
    ]  # fmt: skip


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_prints_the_closing_line(mnist_small_yaml, tmp_path, monkeypatch, rank):
    fake_rank(monkeypatch, rank)
    result = runner.invoke(app, train_args(mnist_small_yaml, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    closing = [line for line in result.output.splitlines() if line.startswith("done in")]
    if rank == 0:
        assert len(closing) == 1 and "best val mAP@0.5 -1.0000" not in closing[0], closing
        assert (tmp_path / "run" / "best.pt").is_file()
    else:
        assert closing == [], result.output  # was: "done in ...; best val mAP@0.5 -1.0000"
        assert "training yolov3-tiny" not in result.output  # rank 1 is silent throughout
        assert not (tmp_path / "run" / "best.pt").exists()


def test_the_result_says_which_process_reports(mnist_small_yaml, tmp_path, monkeypatch):
    from edgeyolo.config import TrainConfig

    fake_rank(monkeypatch, 1)
    cfg = TrainConfig(
        data=str(mnist_small_yaml),
        out=str(tmp_path / "run"),
        img_size=96,
        epochs=1,
        batch=2,
        workers=0,
        device="cpu",
        anchors="default",
        tensorboard=False,
    )
    result = trainer_module.train(cfg, progress=False)
    assert result.is_main is False and result.best_map50 == -1.0
