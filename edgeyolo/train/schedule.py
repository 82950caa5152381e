"""Learning-rate schedule: linear warmup, then cosine decay from ``lr_init`` to ``lr_end``.

Built from ``torch.optim.lr_scheduler`` parts and stepped once per iteration, as the seed
tutorial does: ``lr = step / warmup_steps * lr_init`` during warmup, then
``lr_end + 0.5 * (lr_init - lr_end) * (1 + cos(pi * t))`` with
``t = (step - warmup_steps) / (total_steps - warmup_steps)``. A param group may start its warmup
from a higher lr instead of 0 (YOLOv5's ``warmup_bias_lr``):
``lr = start + (lr_init - start) * step / warmup_steps``.

Also the input sizes of multi-scale training (:func:`multi_scale_sizes`) and the mosaic
probability of each epoch (:func:`mosaic_probability`) and whether it is augmented at all
(:func:`augmenting`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, SequentialLR

from edgeyolo.config import AugmentConfig
from edgeyolo.errors import ConfigError


def _warmup_factor(start: float, lr_init: float, warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR's factor of a group whose warmup runs from ``start`` (step 0) to ``lr_init``."""
    if start == 0.0:
        return lambda i: (i + 1) / warmup_steps
    return lambda i: (start + (lr_init - start) * (i + 1) / warmup_steps) / lr_init


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    lr_end: float,
    warmup_start: Mapping[int, float] | None = None,
) -> LRScheduler:
    """Linear warmup over ``warmup_steps`` iterations, then cosine decay to ``lr_end``.

    ``lr_init`` is each param group's ``lr``. Call ``scheduler.step()`` after every optimizer
    step; the learning rate of iteration ``i`` (0-based, before its step) is
    :func:`expected_lr` ``(i + 1, ...)`` — warmup starts at ``lr_init / warmup_steps`` rather
    than 0 so that the first step already learns.

    Args:
        warmup_start: param-group index -> the lr its warmup falls (or rises) from, linearly, to
            ``lr_init``: ``start + (lr_init - start) * step / warmup_steps``; groups not named
            start from 0 (YOLOv5 starts its bias group at ``warmup_bias_lr`` = 0.1).

    Raises:
        ConfigError: ``total_steps`` < 1, ``lr_end`` above ``lr_init``, or a ``warmup_start``
            for a group that does not exist or has no positive ``lr``.
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    lr_init = optimizer.param_groups[0]["lr"]
    if lr_end > lr_init:
        raise ConfigError(f"lr_end ({lr_end}) must not exceed lr_init ({lr_init})")
    starts = dict(warmup_start or {})
    groups = optimizer.param_groups
    for g, start in starts.items():
        if not 0 <= g < len(groups) or groups[g]["lr"] <= 0 or start < 0:
            raise ConfigError(
                f"warmup start lr {start} for param group {g}: the optimizer has "
                f"{len(groups)} groups, and the group needs a positive lr and the start >= 0"
            )
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=lr_end)
    if warmup_steps == 0:
        return cosine
    # LinearLR cannot start at exactly step/warmup with step counted from 1, so use LambdaLR.
    factors = [
        _warmup_factor(starts.get(g, 0.0), group["lr"], warmup_steps)
        for g, group in enumerate(groups)
    ]
    warmup = LambdaLR(optimizer, factors)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps - 1])


def expected_lr(
    step: int,
    *,
    lr_init: float,
    lr_end: float,
    total_steps: int,
    warmup_steps: int,
    warmup_start: float = 0.0,
) -> float:
    """The closed form of :func:`warmup_cosine` at 1-based iteration ``step`` (for tests, plots)
    for a group whose warmup starts from ``warmup_start``."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    if step <= warmup_steps:
        return warmup_start + (lr_init - warmup_start) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr_end + 0.5 * (lr_init - lr_end) * (1 + math.cos(math.pi * min(t, 1.0)))


def multi_scale_sizes(size: int, scale_range: tuple[float, float]) -> list[int]:
    """The input sizes multi-scale training draws from: the multiples of 32 in
    ``[low * size, high * size]`` (at least 32), or ``[size]`` when the range holds none."""
    low, high = scale_range
    first = max(32, math.ceil(size * low / 32) * 32)
    return list(range(first, int(size * high) // 32 * 32 + 1, 32)) or [size]


def augmenting(aug: AugmentConfig, epoch: int, epochs: int) -> bool:
    """Whether 0-based ``epoch`` of a run of ``epochs`` is augmented: ``aug.enabled``, but not
    in the last ``aug.close_aug`` epochs."""
    return aug.enabled and epoch < epochs - aug.close_aug


def mosaic_probability(aug: AugmentConfig, epoch: int, epochs: int) -> float:
    """The mosaic probability of 0-based ``epoch`` of a run of ``epochs``: ``aug.mosaic``, but 0
    in the last ``aug.close_mosaic`` epochs and whenever :func:`augmenting` is False."""
    if not augmenting(aug, epoch, epochs) or epoch >= epochs - aug.close_mosaic:
        return 0.0
    return aug.mosaic
