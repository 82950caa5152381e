"""Export fixtures: a YOLOv3-tiny whose random weights give many overlapping, multi-class boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeyolo.config import ModelConfig, to_dict
from edgeyolo.models import build_model
from edgeyolo.models.checkpoint import save_checkpoint

SIZE = 128
NAMES = tuple(str(i) for i in range(10))


def busy_model(seed: int = 0) -> torch.nn.Module:
    """Random tiny model with objectness biases at 0 and spread class logits: at conf 0.3 it
    yields dozens of overlapping candidates of several classes per image, which stresses NMS."""
    torch.manual_seed(seed)
    net = build_model(ModelConfig(arch="yolov3-tiny", num_classes=10, img_size=SIZE, names=NAMES))
    with torch.no_grad():
        for conv in net.head_convs:
            b = conv.bias.view(3, -1)
            b[:, 4] = 0.0
            b[:, 5:] = torch.randn_like(b[:, 5:])
    return net.eval()


@pytest.fixture(scope="session")
def busy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = busy_model()
    path = tmp_path_factory.mktemp("ckpt") / "busy.pt"
    save_checkpoint(path, {"model_config": to_dict(net.config), "model": net.state_dict()})
    return path


@pytest.fixture(scope="session")
def mnist_images(mnist_small_yaml: Path) -> np.ndarray:
    """``float32[4, 3, 128, 128]``: real MNIST-detection images, letterboxed like inference, with a
    fixed faint noise texture: on a uniform white canvas a random-weight model gives exactly tied
    scores at every background cell, and tie order is not something two NMS implementations share.
    """
    import cv2

    from edgeyolo.data.transforms import letterbox

    files = sorted((mnist_small_yaml.parent / "images").rglob("*.jpg"))[:4]
    ims = [letterbox(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), SIZE)[0] for f in files]
    x = np.stack(ims).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    noise = np.random.default_rng(0).normal(0.0, 0.03, x.shape).astype(np.float32)
    return np.clip(x + noise, 0.0, 1.0)


@pytest.fixture(scope="session")
def calib_folder(mnist_small_yaml: Path) -> Path:
    return mnist_small_yaml.parent / "images" / "train"
