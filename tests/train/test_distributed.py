"""DDP on CPU (gloo, 2 processes through torchrun) against one process on the global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgeyolo.models.checkpoint import load_checkpoint
from edgeyolo.train.distributed import train_argv_without_devices

pytestmark = pytest.mark.slow


def same_image_set(src_yaml: Path, root: Path, n: int = 4) -> Path:
    """``n`` copies of one real MNIST-detection image: every split of the batch has the same
    batch-norm statistics as the whole batch, so DDP without SyncBatchNorm must equal one process
    exactly (up to float summation order)."""
    src = src_yaml.parent
    image = sorted((src / "images" / "train").glob("*.jpg"))[0]
    label = src / "labels" / "train" / (image.stem + ".txt")
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(n):
        shutil.copy(image, root / "images" / "train" / f"{i:03d}.jpg")
        shutil.copy(label, root / "labels" / "train" / f"{i:03d}.txt")
    names = yaml.safe_load(src_yaml.read_text())["names"]
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {"path": ".", "train": "images/train", "val": "images/train", "names": names}
        )
    )
    return data


#: A wrong gradient average (a sum over ranks, or one rank's gradient alone on different data)
#: moves a weight by about the size of the update itself (share 1.0 and up); float summation order
#: between the batch-2 and batch-4 kernels moves it by far less. The bound sits between the two, so
#: it holds on any CPU (AVX2 or AVX-512 kernels) without per-layer tolerances.
MAX_SHARE_OF_UPDATE = 0.1
#: BN running variances use the unbiased batch variance, n / (n - 1) with n the per-process batch
#: (2 vs 4), so they legitimately differ by a few percent of their move: held to 60 % of it.
MAX_SHARE_OF_RUNNING_VAR = 0.6


def update_bounds(
    single: dict[str, torch.Tensor], ddp: dict[str, torch.Tensor], init: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Per float tensor: ``max|single - ddp| / max|single - init|``, the DDP difference as a share
    of what training moved the tensor (running variances scaled to their own bound)."""
    shares = {}
    for k, v in single.items():
        if not v.is_floating_point():
            assert torch.equal(v, ddp[k]), k  # e.g. num_batches_tracked
            continue
        moved = (v.double() - init[k].double()).abs().max().item()
        diff = (v.double() - ddp[k].double()).abs().max().item()
        if moved == 0.0:
            shares[k] = 0.0 if diff <= 1e-7 else math.inf
            continue
        share = diff / moved
        if k.endswith("running_var"):
            share *= MAX_SHARE_OF_UPDATE / MAX_SHARE_OF_RUNNING_VAR
        shares[k] = share
    return shares


def run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path.cwd()))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path.cwd(), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_two_gloo_processes_equal_one_process_on_the_global_batch(mnist_small_yaml, tmp_path):
    data = same_image_set(mnist_small_yaml, tmp_path / "data")
    args = [
        "--data",
        str(data),
        "--img-size",
        "96",
        "--batch",
        "4",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--no-augment",
        "--eval-interval",
        "2",
        "--device",
        "cpu",
        "--warmup-epochs",
        "0.5",
        "--no-progress",
        "--anchors",
        "default",
        # NCHW, for which the bound below was measured. With channels-last (the CPU default since
        # issue 22) the largest share was 0.58 (stages.0.out.conv.weight) with both runs in it,
        # and 0.57 with only the single process in it: our guess, not pinned down, is that this
        # degenerate white canvas magnifies the other summation order of oneDNN's channels-last
        # kernels (2026-12-06, 2-core Xeon with AMX).
        "--no-channels-last",
        "--optimizer",  # SGD: linear in the gradient; Adam's g / sqrt(v) magnifies float noise
        "sgd",  # on near-zero gradients into visible weight differences
        "--lr",
        "0.01",
        "--seed",
        "0",
    ]
    single = tmp_path / "single"
    run([sys.executable, "-m", "edgeyolo", "train", *args, "--out", str(single)], tmp_path)
    ddp = tmp_path / "ddp"
    r = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "edgeyolo",
            "train",
            *args,
            "--out",
            str(ddp),
        ],
        tmp_path,
    )
    assert "2 processes x 2" in r.stdout  # the global batch is stated, once
    assert r.stdout.count("training yolov3-tiny") == 1
    # one closing line, rank 0's (rank 1 printed "best val mAP@0.5 -1.0000" beside it)
    assert r.stdout.count("best val mAP@0.5") == 1 and "-1.0000" not in r.stdout, r.stdout
    # Measured (2026-11-26, AVX2 and AVX-512 kernels alike): the largest share is 0.0074
    # (backbone.stage16.0.conv.weight, behind a BN whose variance is near zero on a white canvas).
    # The same run at lr 0 keeps the initial weights (SGD, no weight decay): what one update moved.
    still = tmp_path / "still"
    lr0 = [*args[: args.index("--lr")], "--lr", "0", "--lr-end", "0", "--seed", "0"]
    run([sys.executable, "-m", "edgeyolo", "train", *lr0, "--out", str(still)], tmp_path)
    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    init = load_checkpoint(still / "last.pt")["state"]["model"]
    assert a["state"]["global_step"] == b["state"]["global_step"] == 2
    for wa, wb in ((a["state"]["model"], b["state"]["model"]), (a["model"], b["model"])):
        shares = update_bounds(wa, wb, init)
        worst = max(shares, key=shares.__getitem__)
        assert shares[worst] <= MAX_SHARE_OF_UPDATE, (worst, shares[worst])
    # The bound bites: gradients summed over the 2 ranks instead of averaged are, for SGD, the
    # single run at twice the learning rate.
    summed = tmp_path / "summed"
    lr2 = [*args[: args.index("--lr")], "--lr", "0.02", "--seed", "0"]
    run([sys.executable, "-m", "edgeyolo", "train", *lr2, "--out", str(summed)], tmp_path)
    wrong = update_bounds(
        a["state"]["model"], load_checkpoint(summed / "last.pt")["state"]["model"], init
    )
    assert max(wrong.values()) > 5 * MAX_SHARE_OF_UPDATE
    # one writer: one metrics row per epoch, one set of checkpoints, no stray temp files
    rows = (ddp / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in rows] == [1, 2]
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    # the epoch's loss is reduced over both ranks: the same as the single process's
    assert json.loads(rows[0])["train_loss"] == pytest.approx(
        json.loads((single / "metrics.jsonl").read_text().splitlines()[0])["train_loss"], rel=1e-4
    )


def test_devices_flag_is_removed_from_what_torchrun_gets():
    argv = ["edgeyolo", "train", "--data", "d.yaml", "--devices", "0,1", "--batch", "8"]
    assert train_argv_without_devices(argv) == ["--data", "d.yaml", "--batch", "8"]
    argv = ["python", "-m", "edgeyolo", "train", "--devices=0,1", "--epochs", "3"]
    assert train_argv_without_devices(argv) == ["--epochs", "3"]
