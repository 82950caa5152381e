"""Model summary numbers: parameter counts (ours and darknet's) and FLOPs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from edgeyolo.models.darknet import darknet_layers


def darknet_param_count(model: nn.Module) -> int:
    """Number of floats a darknet ``.weights`` file holds for ``model`` (after its header).

    Per conv in :func:`darknet_layers` order: the conv weights, plus the conv bias for convs
    without BatchNorm, plus the four BatchNorm vectors (beta, gamma, running mean, running
    variance) for convs with one. ``num_batches_tracked`` is not counted. With 80 classes
    this is 62,001,757 for yolov3 and 8,858,734 for yolov3-tiny, as in the official files.
    """
    total = 0
    for conv, bn in darknet_layers(model):
        total += conv.weight.numel()
        if conv.bias is not None:
            total += conv.bias.numel()
        if bn is not None:
            total += 4 * bn.num_features
    return total


def count_flops(model: nn.Module, height: int, width: int | None = None) -> int:
    """FLOPs of one forward pass on a ``[1, 3, height, width]`` input (multiply-add = 2).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
    products, as darknet's BFLOPS figure) on meta tensors: nothing is computed and the model's
    weights and BatchNorm statistics are left untouched.
    """
    width = height if width is None else width
    tensors = {
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()},
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()},
    }
    x = torch.empty(1, 3, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(model, tensors, (x,))
    return int(counter.get_total_flops())


def model_info(model: nn.Module, *, img_size: int | None = None) -> dict[str, Any]:
    """Summary of a :class:`~edgeyolo.models.YOLOv3` as plain data (JSON-friendly).

    Keys:
        ``arch`` (str), ``num_classes`` (int), ``img_size`` (int: the square input the FLOPs
        are for; ``model.config.img_size`` when not given), ``layers`` (number of darknet conv
        layers: 75 for yolov3, 13 for yolov3-tiny), ``params`` (trainable parameters),
        ``darknet_params`` (:func:`darknet_param_count`), ``gflops`` (one forward pass at
        ``img_size x img_size``, batch 1, multiply-add counted as 2 FLOPs, / 1e9),
        ``strides`` (list of int, head order) and ``anchors`` (``[S][3][2]`` (w, h) pixels per
        head, head order).
    """
    config = model.config
    size = config.img_size if img_size is None else int(img_size)
    return {
        "arch": config.arch,
        "num_classes": int(model.num_classes),
        "img_size": size,
        "layers": len(darknet_layers(model)),
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "darknet_params": darknet_param_count(model),
        "gflops": count_flops(model, size) / 1e9,
        "strides": [int(s) for s in model.strides],
        "anchors": model.anchors.tolist(),
    }
