"""The CPU speed options of the trainer (issue 22): bfloat16 autocast where it is native,
channels-last memory, torch's fused Adam, and the decoded-image cache."""

from __future__ import annotations

import pytest
import torch

from edgeyolo.config import TrainConfig
from edgeyolo.errors import ConfigError
from edgeyolo.models.checkpoint import load_checkpoint
from edgeyolo.train import trainer as trainer_module
from edgeyolo.train.trainer import Trainer
from tests.train.test_trainer import _cfg  # the one small-training config of these tests


@pytest.mark.parametrize(
    ("flags", "onednn", "want"),
    [
        (frozenset({"avx2"}), True, False),  # AVX2 only: bf16 is emulated, keep fp32
        (frozenset({"avx2", "avx512f"}), True, False),  # AVX-512 without BF16: emulated too
        (frozenset({"avx2", "avx512f", "avx512_bf16"}), True, True),
        (frozenset({"avx2", "avx512f", "amx_bf16"}), True, True),
        (frozenset({"avx2", "avx512f", "amx_bf16"}), False, False),  # ONEDNN_MAX_CPU_ISA=AVX2
    ],
)
def test_cpu_bf16_is_fast_only_where_native(monkeypatch, flags, onednn, want):
    monkeypatch.setattr(trainer_module, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert trainer_module.cpu_bf16_fast() is want


@pytest.mark.parametrize(("mode", "fast", "want"), [
    ("off", True, torch.float32), ("on", False, torch.bfloat16),
    ("auto", True, torch.bfloat16), ("auto", False, torch.float32),
])  # fmt: skip
def test_training_forward_runs_in_the_dtype_cpu_bf16_says(
    mnist_small_yaml, tmp_path, monkeypatch, mode, fast, want
):
    monkeypatch.setattr(trainer_module, "cpu_bf16_fast", lambda: fast)
    t = Trainer(_cfg(mnist_small_yaml, tmp_path, device="cpu", cpu_bf16=mode), progress=False)
    seen: dict[str, list[torch.dtype]] = {"train": [], "val": []}
    for key, model in (("train", t.model), ("val", t.eval_model)):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, args, out, key=key: seen[key].append(out.dtype))
    images, targets, _ = next(iter(t._loader(0)))
    metrics = t.run_step(images, targets)
    assert seen["train"] == [want] and torch.isfinite(torch.tensor(metrics["loss"]))
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # weights stay fp32
    t.evaluate()  # validation runs in float32 whatever the training forward did
    assert seen["val"] and set(seen["val"]) == {torch.float32}


def test_bf16_run_saves_float32_checkpoints(mnist_small_yaml, tmp_path):
    t = Trainer(_cfg(mnist_small_yaml, tmp_path, device="cpu", cpu_bf16="on", epochs=1))
    assert t.amp and t.amp_dtype == torch.bfloat16
    t.train()
    best = load_checkpoint(tmp_path / "best.pt")
    assert {v.dtype for v in best["model"].values() if v.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_on_the_cpu(mnist_small_yaml, tmp_path, channels_last):
    t = Trainer(_cfg(mnist_small_yaml, tmp_path, device="cpu", channels_last=channels_last))
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert t.optimizer.defaults.get("fused") is True  # torch's fused Adam on the CPU


def test_cpu_bf16_mode_is_checked():
    with pytest.raises(ConfigError, match="--cpu-bf16"):
        TrainConfig(cpu_bf16="yes")


def test_cache_decodes_the_training_images_before_the_first_epoch(mnist_small_yaml, tmp_path):
    t = Trainer(_cfg(mnist_small_yaml, tmp_path, device="cpu", cache=True), progress=False)
    assert len(t.dataset._images) == len(t.dataset) == 6
