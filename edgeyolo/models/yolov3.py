"""YOLOv3 and YOLOv3-tiny, topology as darknet's official ``yolov3.cfg`` / ``yolov3-tiny.cfg``.

``forward`` returns the raw head maps only; decoding (sigmoid, grid, anchors) belongs to the
loss and to the export graph, which read :attr:`YOLOv3.strides` and :attr:`YOLOv3.anchors`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgeyolo.config import ModelConfig, num_scales
from edgeyolo.errors import ConfigError
from edgeyolo.models.common import ConvBNAct, upsample2x
from edgeyolo.models.darknet import Darknet53, DarknetTiny

#: Anchors per head (darknet's ``mask`` has three entries per ``[yolo]`` layer).
NUM_ANCHORS: int = 3
#: YOLOv5's objectness prior: this many objects per image of :data:`PRIOR_IMG_SIZE` pixels.
PRIOR_OBJECTS: float = 8.0
PRIOR_IMG_SIZE: int = 640
#: YOLOv5's class prior: each class's probability starts near ``0.6 / (C - 0.99)``.
PRIOR_CLASS_PROB: float = 0.6


def bias_priors(stride: int, num_classes: int, img_size: int) -> tuple[float, float]:
    """The ``(objectness, class)`` bias offsets of a head of ``stride`` (YOLOv5's
    ``_initialize_biases``): ``log(8 / (img_size / stride) ** 2)`` and
    ``log(0.6 / (num_classes - 0.99))``; ``(0.0, 0.0)`` for ``img_size`` 0 (no prior)."""
    if img_size == 0:
        return 0.0, 0.0
    obj = math.log(PRIOR_OBJECTS / (img_size / stride) ** 2)
    return obj, math.log(PRIOR_CLASS_PROB / (num_classes - 0.99))


class YOLOStage(nn.Module):
    """One detection scale: [lateral 1x1 + 2x upsample + concat] -> neck convs -> 3x3 -> 1x1 head.

    Darknet cfg, stride-16 stage of yolov3 for example::

        [route] layers=-4 ; [convolutional] 1x1 256 ; [upsample] ; [route] layers=-1,61
        5 x [convolutional] (1x1 256, 3x3 512, ...)  <- ``route``: what the next stage reads
        [convolutional] 3x3 512 ; [convolutional] 1x1 3*(5+C) linear ; [yolo]

    Modules are registered in that order. The first stage has no lateral conv, and the second
    stage of yolov3-tiny has no neck convs (its 3x3 conv reads the concatenation directly).

    Args:
        in_channels: channels of the backbone feature of this scale.
        lateral: ``(in, out)`` channels of the lateral 1x1 conv applied to the previous
            stage's route, or ``None`` for the first (coarsest) stage.
        neck: ``(out_channels, kernel_size)`` of each neck conv, in cfg order.
        out_channels: channels of the 3x3 conv before the head conv.
        num_outputs: ``3 * (5 + num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        lateral: tuple[int, int] | None,
        neck: list[tuple[int, int]],
        out_channels: int,
        num_outputs: int,
    ) -> None:
        super().__init__()
        self.lateral = ConvBNAct(*lateral, 1) if lateral is not None else None
        channels = in_channels + (lateral[1] if lateral is not None else 0)
        convs: list[nn.Module] = []
        for c, k in neck:
            convs.append(ConvBNAct(channels, c, k))
            channels = c
        self.neck = nn.Sequential(*convs)
        self.route_channels = channels
        self.out = ConvBNAct(channels, out_channels, 3)
        self.head = nn.Conv2d(out_channels, num_outputs, 1, bias=True)

    def forward(self, feat: Tensor, prev_route: Tensor | None) -> tuple[Tensor, Tensor]:
        """``feat: [B, Cin, h, w]``, ``prev_route: [B, Cprev, h/2, w/2]`` (or ``None`` in the
        first stage) -> ``(route [B, Croute, h, w], head map [B, num_outputs, h, w])``."""
        x = feat
        if self.lateral is not None and prev_route is not None:
            # darknet: [route] layers = -1, <backbone layer>: upsampled lateral first.
            x = torch.cat([upsample2x(self.lateral(prev_route)), feat], dim=1)
        route = self.neck(x)
        return route, self.head(self.out(route))


def _stages(arch: str, num_outputs: int) -> list[YOLOStage]:
    if arch == "yolov3":

        def neck(c: int) -> list[tuple[int, int]]:
            return [(c, 1), (2 * c, 3), (c, 1), (2 * c, 3), (c, 1)]

        return [
            YOLOStage(1024, None, neck(512), 1024, num_outputs),
            YOLOStage(512, (512, 256), neck(256), 512, num_outputs),
            YOLOStage(256, (256, 128), neck(128), 256, num_outputs),
        ]
    return [
        YOLOStage(1024, None, [(256, 1)], 512, num_outputs),
        YOLOStage(256, (256, 128), [], 256, num_outputs),
    ]


class YOLOv3(nn.Module):
    """YOLOv3 (Darknet-53, 3 heads) or YOLOv3-tiny (2 heads), chosen by ``config.arch``.

    Attributes:
        config: the :class:`ModelConfig` the model was built from.
        num_classes: ``C``.
        num_anchors: anchors per head (3).
        strides: head strides in head order, coarsest first: ``(32, 16, 8)`` or ``(32, 16)``.
        anchors: buffer ``float32[S, 3, 2]``, (w, h) in input pixels per head in head order;
            the three largest anchors belong to head 0 (stride 32). Not saved in the
            state dict: ``config`` is the one source of the anchors.
        bias_prior_size: the image size whose prior the heads' biases were initialised with
            (:meth:`set_bias_prior`; :data:`PRIOR_IMG_SIZE` from ``__init__``). It describes
            the initialisation only; loaded weights do not change it.

    ``forward(x: [B, 3, H, W]) -> list[Tensor]``: per head ``[B, 3 * (5 + C), H / s, W / s]``,
    coarsest first; H and W any multiples of 32. Per anchor the channels are
    ``(tx, ty, tw, th, obj, cls_0 .. cls_{C-1})``, i.e. ``out.view(B, 3, 5 + C, h, w)``.
    """

    anchors: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.num_anchors = NUM_ANCHORS
        self.num_outputs_per_anchor = 5 + config.num_classes
        n = num_scales(config.arch)  # raises ConfigError for an unknown arch
        self.strides: tuple[int, ...] = (32, 16, 8)[:n]

        self.backbone: nn.Module = Darknet53() if config.arch == "yolov3" else DarknetTiny()
        self.stages = nn.ModuleList(_stages(config.arch, NUM_ANCHORS * self.num_outputs_per_anchor))

        # Anchors are sorted by area, smallest first; darknet's masks give the last three to
        # the first (stride-32) head: 6,7,8 / 3,4,5 / 0,1,2 (yolov3) and 3,4,5 / 0,1,2 (tiny;
        # the official tiny cfg says ``mask = 1,2,3`` for its second head, a known slip that
        # AlexeyAB's tools rewrite to 0,1,2, as done here).
        a = torch.tensor(config.resolved_anchors, dtype=torch.float32).view(n, NUM_ANCHORS, 2)
        self.register_buffer("anchors", a.flip(0).contiguous(), persistent=False)
        self.bias_prior_size = 0
        self.set_bias_prior(PRIOR_IMG_SIZE)

    @property
    def head_convs(self) -> list[nn.Conv2d]:
        """The linear 1x1 output convs, in head order."""
        return [stage.head for stage in self.stages]

    @torch.no_grad()
    def set_bias_prior(self, img_size: int) -> None:
        """Priors for fast convergence (as Ultralytics): shift every head's objectness biases to
        ~ 8 objects per ``(img_size / s) ** 2`` cells and its class biases to a probability of
        ~ ``0.6 / (C - 0.99)`` (:func:`bias_priors`), from the prior of
        :attr:`bias_prior_size` (the random part of torch's init is kept). ``img_size`` 0
        removes the prior. Meant for freshly built models, before training."""
        c = self.num_classes
        for conv, s in zip(self.head_convs, self.strides, strict=True):
            b = conv.bias.view(self.num_anchors, self.num_outputs_per_anchor)
            old_obj, old_cls = bias_priors(s, c, self.bias_prior_size)
            new_obj, new_cls = bias_priors(s, c, img_size)
            b[:, 4] += new_obj - old_obj
            b[:, 5:] += new_cls - old_cls
        self.bias_prior_size = img_size

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> per head ``[B, 3 * (5 + C), H / s, W / s]``, coarsest first."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            h, w = x.shape[-2:]
            if h % 32 or w % 32:
                raise ConfigError(
                    f"input size {h}x{w} is not a multiple of 32; letterbox or resize to "
                    "multiples of 32 (e.g. 416x416)"
                )
        feats = self.backbone(x)
        outputs: list[Tensor] = []
        route: Tensor | None = None
        for stage, feat in zip(self.stages, reversed(feats), strict=True):
            route, out = stage(feat, route)
            outputs.append(out)
        return outputs


def build_model(cfg: ModelConfig) -> YOLOv3:
    """The model described by ``cfg`` with freshly initialised weights."""
    return YOLOv3(cfg)
