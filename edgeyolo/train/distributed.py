"""Data-parallel training on torch.distributed (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node N -m edgeyolo train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (NCCL on CUDA,
gloo on CPU). ``--batch`` is the *global* batch: each of the N processes gets ``batch / N``
images per step from a ``DistributedSampler``; the loss is a per-image mean and DDP averages
gradients, so a step equals one step on the whole global batch (batch-norm statistics excepted,
unless ``--sync-bn``). Only rank 0 writes checkpoints, metrics and progress. Multi-node: add
torchrun's rendezvous flags (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgeyolo.errors import ConfigError

__all__ = [
    "DistInfo",
    "all_reduce_sums",
    "init_distributed",
    "launch",
    "shutdown",
    "train_argv_without_devices",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; a no-op without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        created = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, initialized_here=created)


def all_reduce_sums(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum each value over all ranks (``values`` must have the same keys on every rank)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def shutdown(info: DistInfo) -> None:
    """Leave the process group if this module created it."""
    if info.initialized_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(devices: Sequence[int], argv: Sequence[str]) -> int:
    """Run ``edgeyolo train`` with ``argv`` on ``devices`` through torchrun; returns its exit code.

    The ``--devices`` convenience: one process per listed GPU on this machine.
    """
    if not devices:
        raise ConfigError("--devices needs at least one device index, e.g. --devices 0,1")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(str(d) for d in devices))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={len(devices)}", "-m", "edgeyolo", "train", *argv,
    ]  # fmt: skip
    return subprocess.call(cmd, env=env)


def train_argv_without_devices(argv: Sequence[str]) -> list[str]:
    """The arguments after ``train`` in ``argv``, with ``--devices X`` / ``--devices=X`` removed."""
    args = list(argv[list(argv).index("train") + 1 :])
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--devices":
            skip = True
        elif not a.startswith("--devices="):
            out.append(a)
    return out
