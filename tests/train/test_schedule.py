import math

import pytest
import torch

from edgeyolo.errors import ConfigError
from edgeyolo.train.schedule import expected_lr, warmup_cosine


def _run(total: int, warmup: int, lr_init: float = 1e-3, lr_end: float = 1e-6) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr_init)
    sched = warmup_cosine(opt, total_steps=total, warmup_steps=warmup, lr_end=lr_end)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_is_linear_and_reaches_lr_init_at_its_end():
    lrs = _run(total=100, warmup=20)
    assert lrs[0] == pytest.approx(1e-3 / 20)
    assert lrs[9] == pytest.approx(10 / 20 * 1e-3)
    # the last warmup step uses exactly lr_init
    assert lrs[19] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:19], lrs[1:20], strict=True))


def test_cosine_decays_to_lr_end_at_the_last_step():
    lrs = _run(total=100, warmup=20, lr_end=1e-6)
    assert lrs[-1] == pytest.approx(1e-6, rel=1e-6)
    # half-way through the cosine part the lr is the mean of the two ends
    mid = 20 + 40
    assert lrs[mid - 1] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * 0.5)))
    assert all(b <= a for a, b in zip(lrs[19:-1], lrs[20:], strict=True))


def test_closed_form_matches_every_step():
    total, warmup = 37, 7
    lrs = _run(total=total, warmup=warmup, lr_init=2e-3, lr_end=1e-5)
    for i, lr in enumerate(lrs):
        assert lr == pytest.approx(
            expected_lr(i + 1, lr_init=2e-3, lr_end=1e-5, total_steps=total, warmup_steps=warmup)
        )


def test_no_warmup_starts_at_lr_init():
    lrs = _run(total=10, warmup=0)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[0]


def test_state_dict_round_trip_continues_the_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = warmup_cosine(opt, total_steps=50, warmup_steps=10, lr_end=0.0)
    for _ in range(23):
        opt.step()
        sched.step()
    state_o, state_s = opt.state_dict(), sched.state_dict()
    reference = []
    for _ in range(5):
        opt.step()
        sched.step()
        reference.append(opt.param_groups[0]["lr"])

    p2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.Adam([p2], lr=1e-3)
    sched2 = warmup_cosine(opt2, total_steps=50, warmup_steps=10, lr_end=0.0)
    opt2.load_state_dict(state_o)
    sched2.load_state_dict(state_s)
    resumed = []
    for _ in range(5):
        opt2.step()
        sched2.step()
        resumed.append(opt2.param_groups[0]["lr"])
    assert resumed == pytest.approx(reference)


def test_bad_settings_are_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ConfigError, match="lr_end"):
        warmup_cosine(opt, total_steps=10, warmup_steps=2, lr_end=1.0)
    with pytest.raises(ConfigError, match="total_steps"):
        warmup_cosine(opt, total_steps=0, warmup_steps=0, lr_end=0.0)
