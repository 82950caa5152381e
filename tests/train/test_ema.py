import math

import pytest
import torch

from edgeyolo.train.ema import make_ema, ramped_decay


def test_ramped_decay_starts_at_zero_and_approaches_decay():
    assert ramped_decay(0, decay=0.999, tau=100) == 0.0
    assert ramped_decay(100, decay=0.999, tau=100) == pytest.approx(0.999 * (1 - math.exp(-1)))
    assert ramped_decay(10_000, decay=0.999, tau=100) == pytest.approx(0.999, rel=1e-6)


def test_ema_follows_the_ramped_formula_for_params_and_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = make_ema(model, decay=0.9, tau=2.0)
    values = [1.0, 3.0, -2.0]
    expected = None
    for n, v in enumerate(values):
        with torch.no_grad():
            model[0].weight.fill_(v)
            model[1].running_mean.fill_(v)
        ema.update_parameters(model)
        if expected is None:
            expected = v  # first update copies
        else:
            d = ramped_decay(n, decay=0.9, tau=2.0)
            expected = d * expected + (1 - d) * v
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), expected))
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), expected))
    # integer buffers are copied, not averaged
    model[1].num_batches_tracked.fill_(7)
    ema.update_parameters(model)
    assert int(ema.module[1].num_batches_tracked) == 7
