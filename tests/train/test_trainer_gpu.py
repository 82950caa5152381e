"""The CUDA path of the trainer: AMP (float16 autocast + GradScaler) and channels-last.

Marked ``gpu``: skipped with a reason where no CUDA device is present (see tests/conftest.py).
"""

import pytest
import torch

from edgeyolo.config import AugmentConfig, TrainConfig
from edgeyolo.data.dataset import collate
from edgeyolo.train.trainer import Trainer


@pytest.mark.gpu
def test_amp_channels_last_step_on_cuda(mnist_small_yaml, tmp_path):
    cfg = TrainConfig(
        data=str(mnist_small_yaml),
        out=str(tmp_path),
        img_size=96,
        epochs=1,
        batch=3,
        workers=0,
        device="cuda",
        amp=True,
        channels_last=True,
        tensorboard=False,
        augment=AugmentConfig(enabled=False),
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.amp and trainer.scaler.is_enabled()
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    images, targets, _ = collate([trainer.dataset[i] for i in range(3)])
    before = first_conv.weight.detach().clone()
    scale0 = trainer.scaler.get_scale()
    # GradScaler starts at 2**16 and skips the steps whose fp16 gradients overflow, halving its
    # scale each time (seen on an H100: the first 3 steps of this model); then steps go through.
    for _ in range(30):
        metrics = trainer.run_step(images, targets)
        assert torch.isfinite(torch.tensor(metrics["loss"]))
        if not torch.equal(before, first_conv.weight.detach()):
            break
    assert not torch.equal(before, first_conv.weight.detach())  # the scaler let a step through
    assert trainer.scaler.get_scale() <= scale0
    result = trainer.evaluate()
    assert 0.0 <= result.map50 <= 1.0
