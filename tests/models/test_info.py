"""Model summaries: darknet parameter counts, conv layers and FLOPs."""

from __future__ import annotations

import pytest
import torch

from edgeyolo.config import ModelConfig
from edgeyolo.models import build_model, count_flops, model_info

# Darknet's own figures for the official cfgs at 416x416, 80 classes ("Total BFLOPS").
DARKNET_BFLOPS = {"yolov3": 65.879, "yolov3-tiny": 5.571}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {arch: build_model(ModelConfig(arch=arch)) for arch in ("yolov3", "yolov3-tiny")}


@pytest.mark.parametrize(
    ("arch", "layers", "darknet_params", "strides"),
    [("yolov3", 75, 62_001_757, [32, 16, 8]), ("yolov3-tiny", 13, 8_858_734, [32, 16])],
)
def test_model_info(models, arch: str, layers: int, darknet_params: int, strides) -> None:
    model = models[arch]
    info = model_info(model)
    assert info["arch"] == arch
    assert info["num_classes"] == 80
    assert info["img_size"] == 416
    assert info["layers"] == layers
    assert info["darknet_params"] == darknet_params
    assert info["params"] == sum(p.numel() for p in model.parameters())
    # darknet stores the BN running mean and variance too; we count them as buffers
    n_bn = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert info["darknet_params"] == info["params"] + 2 * n_bn
    assert info["gflops"] == pytest.approx(DARKNET_BFLOPS[arch], rel=0.01)
    assert info["strides"] == strides
    assert info["anchors"] == model.anchors.tolist()


def test_gflops_scale_with_input_area(models) -> None:
    model = models["yolov3-tiny"]
    at_416 = model_info(model)["gflops"]
    at_832 = model_info(model, img_size=832)["gflops"]
    assert at_832 == pytest.approx(4 * at_416, rel=1e-6)
    # non-square: 416 x 832 is half of 832 x 832
    assert count_flops(model, 416, 832) == pytest.approx(count_flops(model, 832) / 2, rel=1e-6)


def test_model_info_leaves_the_model_untouched(models) -> None:
    model = models["yolov3-tiny"]
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_info(model, img_size=64)
    after = model.state_dict()
    assert model.training
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.device.type == "cpu" for v in after.values())
