"""Learning-rate schedule: linear warmup, then cosine decay from ``lr_init`` to ``lr_end``.

Built from ``torch.optim.lr_scheduler`` parts and stepped once per iteration, as the seed
tutorial does: ``lr = step / warmup_steps * lr_init`` during warmup, then
``lr_end + 0.5 * (lr_init - lr_end) * (1 + cos(pi * t))`` with
``t = (step - warmup_steps) / (total_steps - warmup_steps)``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, SequentialLR

from edgeyolo.errors import ConfigError


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    lr_end: float,
) -> LRScheduler:
    """Linear warmup over ``warmup_steps`` iterations, then cosine decay to ``lr_end``.

    ``lr_init`` is the optimizer's ``lr``. Call ``scheduler.step()`` after every optimizer step;
    the learning rate of iteration ``i`` (0-based, before its step) is
    :func:`expected_lr` ``(i + 1, ...)`` — warmup starts at ``lr_init / warmup_steps`` rather
    than 0 so that the first step already learns.
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    lr_init = optimizer.param_groups[0]["lr"]
    if lr_end > lr_init:
        raise ConfigError(f"lr_end ({lr_end}) must not exceed lr_init ({lr_init})")
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=lr_end)
    if warmup_steps == 0:
        return cosine
    # LinearLR cannot start at exactly step/warmup with step counted from 1, so use LambdaLR.
    warmup = LambdaLR(optimizer, lambda i: (i + 1) / warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps - 1])


def expected_lr(
    step: int, *, lr_init: float, lr_end: float, total_steps: int, warmup_steps: int
) -> float:
    """The closed form of :func:`warmup_cosine` at 1-based iteration ``step`` (for tests, plots)."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    if step <= warmup_steps:
        return step / warmup_steps * lr_init
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr_end + 0.5 * (lr_init - lr_end) * (1 + math.cos(math.pi * min(t, 1.0)))
