"""Building blocks shared by the YOLOv3 backbones and heads, as darknet defines them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: BatchNorm epsilon. Darknet normalises with ``(x - mean) / (sqrt(var) + 1e-6)``; PyTorch's
#: ``sqrt(var + eps)`` with the default 1e-5 is the usual stand-in and keeps converted darknet
#: weights within float noise of darknet's outputs.
BN_EPS: float = 1e-5
#: BatchNorm momentum (PyTorch convention: weight of the new batch statistic). 0.03 as in
#: Ultralytics' YOLO models: smoother running statistics than PyTorch's 0.1 for small batches.
BN_MOMENTUM: float = 0.03
#: Slope of darknet's ``leaky`` activation.
LEAKY_SLOPE: float = 0.1


class ConvBNAct(nn.Module):
    """Darknet ``[convolutional]`` with ``batch_normalize=1`` and ``activation=leaky``.

    Conv2d (no bias, 'same' padding ``k // 2``) -> BatchNorm2d -> LeakyReLU(0.1).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (1 or 3 in YOLOv3).
        stride: 1, or 2 for the downsampling convs of Darknet-53.

    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class MaxPoolSame(nn.Module):
    """Darknet ``[maxpool] size=2 stride=1``: keeps the spatial size.

    Darknet pads one column on the right and one row at the bottom and ignores the padded
    cells (it fills them with ``-FLT_MAX``), so the last row/column takes the maximum of the
    real cells only. Zero padding (``nn.ZeroPad2d((0, 1, 0, 1))``, as some ports do) differs
    there, because the input comes from a leaky ReLU and can be negative. PyTorch's max-pool
    padding is implicit ``-inf`` but symmetric; pooling with ``padding=1`` gives one extra row
    and column at the top/left, which are dropped. Exports as ONNX MaxPool + Slice.

    Shapes:
        ``[B, C, H, W] -> [B, C, H, W]``
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)[:, :, 1:, 1:]


def upsample2x(x: Tensor) -> Tensor:
    """Darknet ``[upsample] stride=2``: nearest neighbour. ``[B, C, H, W] -> [B, C, 2H, 2W]``."""
    return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
