"""YOLOv3 / YOLOv3-tiny: topology against darknet's cfg, output shapes, anchors, head init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeyolo.config import YOLOV3_ANCHORS, YOLOV3_TINY_ANCHORS, ModelConfig
from edgeyolo.errors import ConfigError
from edgeyolo.models import YOLOv3, build_model, darknet_layers, darknet_param_count
from edgeyolo.models.common import MaxPoolSame

_MODELS: dict[tuple[str, int], YOLOv3] = {}


def model_for(arch: str, num_classes: int = 80) -> YOLOv3:
    """One model per (arch, classes) for the whole module (building yolov3 takes ~1 s)."""
    key = (arch, num_classes)
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = build_model(ModelConfig(arch=arch, num_classes=num_classes)).eval()
    return _MODELS[key]


# (filters, size, stride) of every [convolutional] section of darknet's official cfgs, in order.
def _res(c: int, n: int) -> list[tuple[int, int, int]]:
    return [(c // 2, 1, 1), (c, 3, 1)] * n


YOLOV3_CFG = (
    [(32, 3, 1), (64, 3, 2)] + _res(64, 1)
    + [(128, 3, 2)] + _res(128, 2)
    + [(256, 3, 2)] + _res(256, 8)
    + [(512, 3, 2)] + _res(512, 8)
    + [(1024, 3, 2)] + _res(1024, 4)
    + [(512, 1, 1), (1024, 3, 1)] * 3 + [(255, 1, 1)]
    + [(256, 1, 1)] + [(256, 1, 1), (512, 3, 1)] * 3 + [(255, 1, 1)]
    + [(128, 1, 1)] + [(128, 1, 1), (256, 3, 1)] * 3 + [(255, 1, 1)]
)  # fmt: skip
YOLOV3_TINY_CFG = [
    (16, 3, 1), (32, 3, 1), (64, 3, 1), (128, 3, 1), (256, 3, 1), (512, 3, 1), (1024, 3, 1),
    (256, 1, 1), (512, 3, 1), (255, 1, 1),
    (128, 1, 1), (256, 3, 1), (255, 1, 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arch", "cfg"), [("yolov3", YOLOV3_CFG), ("yolov3-tiny", YOLOV3_TINY_CFG)]
)
def test_darknet_layers_follow_the_official_cfg(arch: str, cfg: list[tuple[int, int, int]]) -> None:
    model = model_for(arch)
    layers = darknet_layers(model)
    got = [(c.out_channels, c.kernel_size[0], c.stride[0]) for c, _ in layers]
    assert got == cfg
    first, first_bn = layers[0]
    first_out = 32 if arch == "yolov3" else 16
    assert (first.in_channels, first.out_channels, first.kernel_size) == (3, first_out, (3, 3))
    assert isinstance(first_bn, nn.BatchNorm2d)
    # linear convs (bias, no BN) are exactly the head convs, in head order
    linear = [c for c, bn in layers if bn is None]
    assert linear == model.head_convs
    assert all(c.bias is not None for c in linear)
    assert all(c.bias is None for c, bn in layers if bn is not None)
    # every conv is 'same'-padded and its input matches the previous darknet layer's channels
    assert all(c.padding[0] == c.kernel_size[0] // 2 for c, _ in layers)


def test_route_concatenations_have_darknet_channel_counts() -> None:
    v3 = [c.in_channels for c, _ in darknet_layers(model_for("yolov3"))]
    assert v3[60] == 256 + 512  # [route] -1, 61 after the stride-16 lateral conv
    assert v3[68] == 128 + 256  # [route] -1, 36
    tiny = [c.in_channels for c, _ in darknet_layers(model_for("yolov3-tiny"))]
    assert tiny[11] == 128 + 256  # [route] -1, 8
    assert tiny[10] == 256  # [route] -4: the 1x1 256 conv, not the 3x3 512


@pytest.mark.parametrize(("arch", "expected"), [("yolov3", 62_001_757), ("yolov3-tiny", 8_858_734)])
def test_darknet_param_count_matches_the_official_weight_files(arch: str, expected: int) -> None:
    assert darknet_param_count(model_for(arch)) == expected


@pytest.mark.parametrize(
    ("arch", "head_in"), [("yolov3", (1024, 512, 256)), ("yolov3-tiny", (512, 256))]
)
def test_darknet_param_count_changes_by_the_head_size(arch: str, head_in: tuple[int, ...]) -> None:
    def head_params(c: int) -> int:
        return sum(3 * (5 + c) * (cin + 1) for cin in head_in)

    n80 = darknet_param_count(model_for(arch, 80))
    n10 = darknet_param_count(model_for(arch, 10))
    assert n80 - n10 == head_params(80) - head_params(10)


@pytest.mark.parametrize("arch", ["yolov3", "yolov3-tiny"])
@pytest.mark.parametrize("num_classes", [1, 10, 80])
def test_output_shapes(arch: str, num_classes: int) -> None:
    model = model_for(arch, num_classes)
    strides = (32, 16, 8) if arch == "yolov3" else (32, 16)
    assert model.strides == strides
    assert model.num_classes == num_classes
    sizes = [(64, 64), (96, 128), (160, 96)]
    for h, w in sizes:
        with torch.no_grad():
            outs = model(torch.zeros(2, 3, h, w))
        assert isinstance(outs, list)
        assert [tuple(o.shape) for o in outs] == [
            (2, 3 * (5 + num_classes), h // s, w // s) for s in strides
        ]
        assert all(o.dtype == torch.float32 for o in outs)


def test_training_mode_returns_the_same_structure() -> None:
    model = model_for("yolov3-tiny", 3)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        eval_shapes = [o.shape for o in model(x)]
        model.train()
        try:
            train_shapes = [o.shape for o in model(x)]
        finally:
            model.eval()
    assert train_shapes == eval_shapes


def test_input_not_a_multiple_of_32_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        model_for("yolov3-tiny")(torch.zeros(1, 3, 100, 96))


@pytest.mark.parametrize(
    ("arch", "default"), [("yolov3", YOLOV3_ANCHORS), ("yolov3-tiny", YOLOV3_TINY_ANCHORS)]
)
def test_default_anchors_buffer_in_head_order(arch: str, default: tuple) -> None:
    model = model_for(arch)
    n = len(model.strides)
    assert model.anchors.shape == (n, 3, 2)
    assert model.anchors.dtype == torch.float32
    expected = [default[3 * (n - 1 - i) : 3 * (n - i)] for i in range(n)]  # masks 6,7,8 / ...
    assert model.anchors.tolist() == [[list(a) for a in head] for head in expected]
    assert "anchors" not in model.state_dict()  # the config is the one source of anchors


def test_custom_anchors_largest_three_on_the_stride_32_head() -> None:
    anchors = ((50, 50), (4, 5), (100, 120), (8, 6), (20, 30), (12, 12))  # unsorted on purpose
    model = build_model(ModelConfig(arch="yolov3-tiny", num_classes=2, anchors=anchors))
    assert model.strides[0] == 32
    assert model.anchors.tolist() == [
        [[20.0, 30.0], [50.0, 50.0], [100.0, 120.0]],
        [[4.0, 5.0], [8.0, 6.0], [12.0, 12.0]],
    ]
    assert model.config.anchors == model.config.resolved_anchors


def test_head_bias_priors_and_channel_layout() -> None:
    c = 10
    model = model_for("yolov3-tiny", c)
    for conv, s in zip(model.head_convs, model.strides, strict=True):
        b = conv.bias.detach().view(3, 5 + c)
        bound = 1 / math.sqrt(conv.in_channels)  # PyTorch's default bias init range
        obj_prior = math.log(8 / (640 / s) ** 2)
        cls_prior = math.log(0.6 / (c - 0.99))
        assert torch.all((b[:, 4] - obj_prior).abs() <= bound)
        assert torch.all((b[:, 5:] - cls_prior).abs() <= bound)
        assert torch.all(b[:, :4].abs() <= bound)

    # with zero head weights the output is the bias, laid out as view(B, 3, 5 + C, h, w)
    heads = [(conv.weight.clone(), conv) for conv in model.head_convs]
    try:
        for _, conv in heads:
            conv.weight.data.zero_()
        with torch.no_grad():
            outs = model(torch.rand(1, 3, 64, 64))
        for out, conv in zip(outs, model.head_convs, strict=True):
            b, _, h, w = out.shape
            per_anchor = out.view(b, 3, 5 + c, h, w)
            expected = conv.bias.detach().view(1, 3, 5 + c, 1, 1).expand_as(per_anchor)
            torch.testing.assert_close(per_anchor, expected)
            assert per_anchor[:, :, 4].max() < -3.5  # objectness prior: sigmoid <= ~0.02
    finally:
        for weight, conv in heads:
            conv.weight.data.copy_(weight)


def test_maxpool_same_matches_darknet_padding() -> None:
    """Darknet's size-2 stride-1 pool ignores the padded cells (-FLT_MAX), unlike zero padding."""
    x = -torch.rand(2, 4, 5, 7) - 0.5  # negative, as leaky-ReLU outputs can be
    ref = nn.functional.max_pool2d(
        nn.functional.pad(x, (0, 1, 0, 1), value=-math.inf), kernel_size=2, stride=1
    )
    got = MaxPoolSame()(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref)
    assert got[..., -1, -1].equal(x[..., -1, -1])
    zero_padded = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1)), 2, 1)
    assert not torch.equal(got, zero_padded)


def test_batchnorm_settings() -> None:
    bns = [bn for _, bn in darknet_layers(model_for("yolov3-tiny")) if bn is not None]
    assert len(bns) == 11
    assert all(bn.eps == 1e-5 and bn.momentum == 0.03 for bn in bns)
    acts = [m for m in model_for("yolov3-tiny").modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 11 and all(a.negative_slope == 0.1 for a in acts)
