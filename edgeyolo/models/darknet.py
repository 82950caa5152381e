"""Backbones of darknet's ``yolov3.cfg`` (Darknet-53) and ``yolov3-tiny.cfg``.

Modules are registered in the order their ``[convolutional]`` sections appear in the cfg, so
:func:`darknet_layers` can list the convs in the order of a darknet ``.weights`` file.
"""

from __future__ import annotations

from torch import Tensor, nn

from edgeyolo.models.common import ConvBNAct, MaxPoolSame

#: Residual blocks per Darknet-53 stage (strides 2, 4, 8, 16, 32).
DARKNET53_BLOCKS: tuple[int, ...] = (1, 2, 8, 8, 4)


class Residual(nn.Module):
    """Darknet ``1x1 (C/2) -> 3x3 (C) -> [shortcut] from=-3 activation=linear``.

    Shapes:
        ``[B, C, H, W] -> [B, C, H, W]``
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels // 2, 1)
        self.conv2 = ConvBNAct(channels // 2, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """Darknet-53: a 3x3 conv, then 5 stages of (3x3 stride-2 conv + residual blocks).

    52 convolutions. Returns the outputs of the last three stages, finest first, which are
    the layers darknet's cfg routes to (36 and 61) and the backbone's last layer (74).

    Shapes:
        ``[B, 3, H, W] -> [[B, 256, H/8, W/8], [B, 512, H/16, W/16], [B, 1024, H/32, W/32]]``
        (H and W multiples of 32).
    """

    out_channels: tuple[int, ...] = (256, 512, 1024)
    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3)
        stages: list[nn.Module] = []
        channels = 32
        for num_blocks in DARKNET53_BLOCKS:
            layers: list[nn.Module] = [ConvBNAct(channels, channels * 2, 3, stride=2)]
            channels *= 2
            layers += [Residual(channels) for _ in range(num_blocks)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[-3:]


class DarknetTiny(nn.Module):
    """The yolov3-tiny backbone: seven 3x3 convs (16..1024) with max-pools between them.

    Five 2x2 stride-2 max-pools, then darknet's size-2 stride-1 max-pool that keeps the
    stride-32 size, then the 3x3 1024 conv. Returns the 256-channel conv before the fifth
    pool (the cfg's layer 8, routed to by the stride-16 head) and the last conv.

    Shapes:
        ``[B, 3, H, W] -> [[B, 256, H/16, W/16], [B, 1024, H/32, W/32]]``
        (H and W multiples of 32).
    """

    out_channels: tuple[int, ...] = (256, 1024)
    strides: tuple[int, ...] = (16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stage16 = nn.Sequential(
            ConvBNAct(3, 16, 3),
            nn.MaxPool2d(2, 2),
            ConvBNAct(16, 32, 3),
            nn.MaxPool2d(2, 2),
            ConvBNAct(32, 64, 3),
            nn.MaxPool2d(2, 2),
            ConvBNAct(64, 128, 3),
            nn.MaxPool2d(2, 2),
            ConvBNAct(128, 256, 3),
        )
        self.stage32 = nn.Sequential(
            nn.MaxPool2d(2, 2),
            ConvBNAct(256, 512, 3),
            MaxPoolSame(),
            ConvBNAct(512, 1024, 3),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        c4 = self.stage16(x)
        c5 = self.stage32(c4)
        return [c4, c5]


def darknet_layers(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The convolutions of ``model`` in module registration order, with their BatchNorm.

    For the models of this package that is the order of the ``[convolutional]`` sections in
    darknet's cfg, i.e. the order of the tensors in a darknet ``.weights`` file. A
    :class:`ConvBNAct` gives ``(conv, bn)``; any other ``nn.Conv2d`` (the linear head convs)
    gives ``(conv, None)``.
    """
    layers: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []

    def walk(module: nn.Module) -> None:
        if isinstance(module, ConvBNAct):
            layers.append((module.conv, module.bn))
        elif isinstance(module, nn.Conv2d):
            layers.append((module, None))
        else:
            for child in module.children():
                walk(child)

    walk(model)
    return layers
