"""Exponential moving average of the weights, on ``torch.optim.swa_utils.AveragedModel``.

The decay ramps up as ``decay * (1 - exp(-n / tau))`` (n = updates so far), so that the average
forgets the random initialisation within the first few hundred steps instead of the first
``1 / (1 - decay)`` ones; buffers (BatchNorm statistics) are averaged too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ramped_decay(num_updates: int, *, decay: float, tau: float) -> float:
    """Effective EMA decay after ``num_updates`` previous updates."""
    return decay * (1.0 - math.exp(-num_updates / tau))


def make_ema(model: nn.Module, *, decay: float = 0.999, tau: float = 200.0) -> AveragedModel:
    """An :class:`AveragedModel` keeping a ramped EMA of ``model`` (parameters and buffers)."""

    @torch.no_grad()
    def ema_update(
        averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor
    ) -> None:
        d = ramped_decay(int(num_averaged), decay=decay, tau=tau)
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            avg, cur = zip(*floats, strict=True)
            torch._foreach_lerp_(list(avg), list(cur), 1.0 - d)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)
