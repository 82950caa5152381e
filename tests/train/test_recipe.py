"""The small-data recipe options: mosaic schedule, bias prior, bias warmup, multi-scale sizes,
and their way from the command line into the checkpoint's config."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from edgeyolo import cli
from edgeyolo.cli import train as cli_train
from edgeyolo.config import AugmentConfig, ModelConfig, TrainConfig, train_config_from_dict
from edgeyolo.errors import ConfigError
from edgeyolo.models import build_model
from edgeyolo.models.checkpoint import load_checkpoint
from edgeyolo.models.yolov3 import bias_priors
from edgeyolo.train.hooks import Hook
from edgeyolo.train.schedule import (
    augmenting,
    expected_lr,
    mosaic_probability,
    multi_scale_sizes,
    warmup_cosine,
)
from edgeyolo.train.trainer import Trainer
from tests.train.test_trainer import _cfg  # the one small-training config of these tests


# ------------------------------------------------------------------ mosaic schedule
def test_mosaic_probability_follows_close_mosaic():
    aug = AugmentConfig(mosaic=0.8, close_mosaic=2)
    assert [mosaic_probability(aug, e, 5) for e in range(5)] == [0.8, 0.8, 0.8, 0.0, 0.0]
    assert mosaic_probability(AugmentConfig(mosaic=0.8), 4, 5) == 0.8  # close_mosaic 0: to the end
    assert mosaic_probability(dataclasses.replace(aug, enabled=False), 0, 5) == 0.0
    assert mosaic_probability(AugmentConfig(mosaic=0.5, close_mosaic=9), 0, 5) == 0.0


def test_augmenting_follows_close_aug_and_closes_mosaic_with_it():
    aug = AugmentConfig(close_aug=2)
    assert [augmenting(aug, e, 5) for e in range(5)] == [True, True, True, False, False]
    assert augmenting(AugmentConfig(), 4, 5)  # close_aug 0: augmented to the end
    assert not augmenting(AugmentConfig(enabled=False), 0, 5)
    assert not augmenting(AugmentConfig(close_aug=9), 0, 5)
    mosaic = AugmentConfig(mosaic=0.8, close_aug=1)  # close_mosaic 0, but no mosaic unaugmented
    assert [mosaic_probability(mosaic, e, 3) for e in range(3)] == [0.8, 0.8, 0.0]


class _Seen(Hook):
    """Records the dataset's mosaic probability and whether it augments, at each step."""

    def __init__(self):
        self.mosaic: list[float] = []
        self.augmenting: list[bool] = []

    def after_step(self, trainer, metrics):
        self.mosaic.append(trainer.dataset.mosaic)
        self.augmenting.append(trainer.dataset.augmenting)


def test_trainer_turns_mosaic_off_for_the_last_epochs_and_saves_the_options(
    mnist_small_yaml, tmp_path
):
    """6 images, batch 3: two steps an epoch. Mosaic in epoch 1, none in epoch 2; every new
    option is in last.pt's config and reads back equal."""
    cfg = _cfg(
        mnist_small_yaml,
        tmp_path,
        augment=AugmentConfig(mosaic=1.0, close_mosaic=1),
        bias_prior_size=96,
        warmup_bias_lr=0.05,
        multi_scale=True,
        multi_scale_range=(0.5, 1.5),
        eval_interval=2,
    )
    seen = _Seen()
    Trainer(cfg, hooks=[seen], progress=False).train()
    assert seen.mosaic == [1.0, 1.0, 0.0, 0.0]
    assert seen.augmenting == [True] * 4  # close_aug 0: augmented to the end
    saved = load_checkpoint(tmp_path / "last.pt")["train"]
    assert saved["augment"]["mosaic"] == 1.0 and saved["augment"]["close_mosaic"] == 1
    assert train_config_from_dict(saved) == cfg


def test_trainer_turns_augmentation_off_for_the_last_epochs(mnist_small_yaml, tmp_path):
    """close_aug 1 of 2 epochs: the second epoch's samples are the evaluation transform's (and
    no mosaic, though close_mosaic is 0); the option is saved in last.pt's config."""
    cfg = _cfg(
        mnist_small_yaml, tmp_path, augment=AugmentConfig(mosaic=1.0, close_aug=1), eval_interval=2
    )
    seen = _Seen()
    trainer = Trainer(cfg, hooks=[seen], progress=False)
    trainer.train()
    assert seen.augmenting == [True, True, False, False]
    assert seen.mosaic == [1.0, 1.0, 0.0, 0.0]
    plain = trainer.dataset.transform
    trainer.dataset.augmenting = True
    assert trainer.dataset.transform is not plain  # the training transform is back
    saved = load_checkpoint(tmp_path / "last.pt")["train"]
    assert train_config_from_dict(saved).augment.close_aug == 1


def test_a_checkpoint_config_without_the_new_options_reads_as_the_old_recipe():
    old = dataclasses.asdict(TrainConfig(data="d.yaml"))
    for key in ("bias_prior_size", "warmup_bias_lr"):
        del old[key]
    for key in ("mosaic", "close_mosaic", "close_aug"):
        del old["augment"][key]
    cfg = train_config_from_dict(old)
    assert (cfg.bias_prior_size, cfg.warmup_bias_lr) == (640, 0.0)
    assert (cfg.augment.mosaic, cfg.augment.close_mosaic, cfg.augment.close_aug) == (0.0, 0, 0)


# ------------------------------------------------------------------ bias prior
def test_bias_priors_are_yolov5s_values():
    obj, cls = bias_priors(32, 10, 640)
    assert obj == pytest.approx(math.log(8 / 400))  # -3.912
    assert cls == pytest.approx(math.log(0.6 / 9.01))  # -2.709
    assert bias_priors(16, 10, 320)[0] == pytest.approx(math.log(8 / 400))
    assert bias_priors(8, 3, 0) == (0.0, 0.0)


def _head_biases(model) -> list[torch.Tensor]:
    return [conv.bias.detach().view(3, -1).clone() for conv in model.head_convs]


def test_model_is_built_with_the_640_prior_and_can_move_it():
    config = ModelConfig(arch="yolov3-tiny", num_classes=10)
    torch.manual_seed(0)
    model = build_model(config)
    assert model.bias_prior_size == 640
    for b, s, conv in zip(_head_biases(model), model.strides, model.head_convs, strict=True):
        obj, cls = bias_priors(s, 10, 640)
        bound = 1 / math.sqrt(conv.in_channels)  # torch's default bias init is U(-bound, bound)
        assert (b[:, 4] - obj).abs().max() <= bound
        assert (b[:, 5:] - cls).abs().max() <= bound
    torch.manual_seed(0)
    moved = build_model(config)
    moved.set_bias_prior(320)
    assert moved.bias_prior_size == 320
    for a, b in zip(_head_biases(model), _head_biases(moved), strict=True):
        torch.testing.assert_close(b[:, 4] - a[:, 4], torch.full((3,), 2 * math.log(2)))
        torch.testing.assert_close(b[:, :4], a[:, :4], rtol=0, atol=0)
        torch.testing.assert_close(b[:, 5:], a[:, 5:], rtol=0, atol=0)
    moved.set_bias_prior(0)  # no prior: torch's default init is left
    for b, conv in zip(_head_biases(moved), moved.head_convs, strict=True):
        assert b[:, 4:].abs().max() <= 1 / math.sqrt(conv.in_channels) + 1e-6


def test_trainer_builds_the_heads_with_the_configured_prior(mnist_small_yaml, tmp_path):
    torch.manual_seed(0)
    default = Trainer(_cfg(mnist_small_yaml, tmp_path / "a"), progress=False).model
    prior = Trainer(_cfg(mnist_small_yaml, tmp_path / "b", bias_prior_size=96), progress=False)
    assert prior.model.bias_prior_size == 96 and default.bias_prior_size == 640
    for a, b in zip(_head_biases(default), _head_biases(prior.model), strict=True):
        torch.testing.assert_close(b[:, 4] - a[:, 4], torch.full((3,), 2 * math.log(640 / 96)))


# ------------------------------------------------------------------ bias warmup
def test_bias_group_warms_down_from_its_start_while_the_others_warm_up():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = torch.optim.Adam([{"params": [p]} for p in params], lr=1e-3)
    sched = warmup_cosine(opt, total_steps=30, warmup_steps=10, lr_end=1e-5, warmup_start={2: 0.1})
    lrs = []
    for _ in range(30):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0][2] == pytest.approx(0.1 + (1e-3 - 0.1) / 10)
    assert lrs[0][0] == lrs[0][1] == pytest.approx(1e-3 / 10)
    assert all(b[2] < a[2] for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    for i, (w, _, b) in enumerate(lrs):
        kw = dict(lr_init=1e-3, lr_end=1e-5, total_steps=30, warmup_steps=10)
        assert w == pytest.approx(expected_lr(i + 1, **kw))
        assert b == pytest.approx(expected_lr(i + 1, **kw, warmup_start=0.1))
        if i >= 9:  # after the warmup every group follows the same cosine
            assert b == pytest.approx(w)


def test_warmup_start_of_a_missing_group_is_an_error():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ConfigError, match="param group 2: the optimizer has 1 groups"):
        warmup_cosine(opt, total_steps=10, warmup_steps=2, lr_end=0.0, warmup_start={2: 0.1})


def test_warmup_bias_lr_puts_every_bias_in_a_third_group(mnist_small_yaml, tmp_path):
    plain = Trainer(_cfg(mnist_small_yaml, tmp_path / "a"), progress=False)
    assert len(plain.optimizer.param_groups) == 2  # the default recipe is unchanged
    t = Trainer(_cfg(mnist_small_yaml, tmp_path / "b", warmup_bias_lr=0.05), progress=False)
    groups = t.optimizer.param_groups
    biases = {id(p) for n, p in t.model.named_parameters() if n.endswith(".bias")}
    assert len(groups) == 3 and {id(p) for p in groups[2]["params"]} == biases
    assert not biases & {id(p) for g in groups[:2] for p in g["params"]}
    steps = round(0.5 * t.steps_per_epoch)
    assert groups[2]["lr"] == pytest.approx(0.05 + (1e-3 - 0.05) / steps)
    assert groups[0]["lr"] == pytest.approx(1e-3 / steps)


# ------------------------------------------------------------------ multi-scale
@pytest.mark.parametrize(
    ("size", "scale_range"), [(320, (0.5, 1.5)), (416, (0.75, 1.25)), (96, (0.5, 1.5))]
)
def test_multi_scale_sizes_are_multiples_of_32_within_range(size, scale_range):
    sizes = multi_scale_sizes(size, scale_range)
    lo, hi = scale_range
    assert sizes and all(s % 32 == 0 and lo * size <= s <= hi * size for s in sizes)
    assert sizes == sorted(set(sizes)) and size in sizes
    # every multiple of 32 in the range is offered
    assert len(sizes) == int(hi * size) // 32 - math.ceil(lo * size / 32) + 1


def test_multi_scale_sizes_examples():
    assert multi_scale_sizes(320, (0.5, 1.5)) == [
        160,
        192,
        224,
        256,
        288,
        320,
        352,
        384,
        416,
        448,
        480,
    ]
    assert multi_scale_sizes(32, (0.5, 0.9)) == [32]  # never below 32
    assert multi_scale_sizes(64, (1.1, 1.2)) == [64]  # no multiple in range: the size itself


def test_multi_scale_draws_every_size_from_torchs_generator(mnist_small_yaml, tmp_path):
    cfg = _cfg(mnist_small_yaml, tmp_path, multi_scale=True, multi_scale_range=(0.5, 1.5))
    trainer = Trainer(cfg, progress=False)
    images, targets = torch.zeros(1, 3, 96, 96), torch.zeros(0, 6)
    torch.manual_seed(0)
    first = [trainer._multi_scale(images, targets)[0].shape[-1] for _ in range(30)]
    torch.manual_seed(0)
    again = [trainer._multi_scale(images, targets)[0].shape[-1] for _ in range(30)]
    assert first == again and set(first) == {64, 96, 128}


# ------------------------------------------------------------------ config and CLI
@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        (dict(augment=AugmentConfig(mosaic=1.0)), None),
        (dict(bias_prior_size=-1), "--bias-prior-size"),
        (dict(warmup_bias_lr=-0.1), "--warmup-bias-lr"),
        (dict(multi_scale_range=(1.5, 0.5)), "--multi-scale-range"),
        (dict(multi_scale_range=(0.0, 1.5)), "--multi-scale-range"),
        (dict(ema_decay=1.0), "--ema-decay"),
        (dict(ema_decay=-0.1), "--ema-decay"),
    ],
)
def test_train_config_checks_the_recipe_options(kw, flag):
    if flag is None:
        TrainConfig(**kw)
        return
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        (dict(mosaic=1.5), "--mosaic"),
        (dict(close_mosaic=-1), "--close-mosaic"),
        (dict(close_aug=-1), "--close-aug"),
        (dict(scale=(1.2, 0.8)), "--scale"),
        (dict(scale=(0.0, 1.0)), "--scale"),
        (dict(translate=1.0), "--translate"),
        (dict(brightness=-0.1), "--colour-jitter"),
    ],
)
def test_augment_config_checks_mosaic_options(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        AugmentConfig(**kw)


def test_train_command_passes_the_recipe_options(tmp_path, monkeypatch):
    got = []

    def fake_train(cfg, **_kw):
        got.append(cfg)
        return SimpleNamespace(
            wall_s=1.0, images_per_s=1.0, best_map50=0.5, best=tmp_path, is_main=True
        )

    monkeypatch.setattr(cli_train, "_TRAINER", SimpleNamespace(train=fake_train))
    args = ["train", "--data", str(tmp_path / "d.yaml"), "--mosaic", "0.7", "--close-mosaic", "2"]
    args += ["--close-aug", "3", "--scale", "0.8", "1.2", "--translate", "0.02"]
    args += ["--colour-jitter", "0.3"]
    args += ["--bias-prior-size", "320", "--warmup-bias-lr", "0.05"]
    args += ["--multi-scale", "--multi-scale-range", "0.5", "1.5"]
    args += ["--cache", "--ema-decay", "0.99"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    cfg = got[0]
    assert (cfg.augment.mosaic, cfg.augment.close_mosaic, cfg.augment.close_aug) == (0.7, 2, 3)
    assert (cfg.augment.scale, cfg.augment.translate) == ((0.8, 1.2), 0.02)
    aug = cfg.augment
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (0.3, 0.3, 0.3, 0.0)
    plain = CliRunner().invoke(cli.app, ["train", "--data", str(tmp_path / "d.yaml")])
    assert plain.exit_code == 0, plain.output
    assert got[1].augment == AugmentConfig()  # no flag: the config's defaults, all of them
    assert (cfg.bias_prior_size, cfg.warmup_bias_lr) == (320, 0.05)
    assert cfg.multi_scale and cfg.multi_scale_range == (0.5, 1.5)
    assert cfg.cache and cfg.ema_decay == 0.99
    assert not got[1].cache and got[1].ema_decay == TrainConfig().ema_decay
    bad = CliRunner().invoke(cli.app, ["train", "--data", "d.yaml", "--mosaic", "2"])
    assert bad.exit_code == 1 and bad.output.startswith("error: --mosaic")
