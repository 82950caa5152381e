"""Darknet ``.weights`` files: bit-exact round trips, official sizes, partial files, bad files,
the reader epsilon, and ``load_model`` on ``.weights`` (+ ``.cfg``)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from edgeyolo.config import ModelConfig
from edgeyolo.errors import CheckpointError, ConfigError
from edgeyolo.models import build_model, darknet_layers, darknet_param_count
from edgeyolo.models.checkpoint import load_model
from edgeyolo.models.darknet_cfg import COCO_NAMES, write_cfg
from edgeyolo.models.darknet_weights import (
    KNOWN_FILES,
    freeze_backbone,
    read_darknet,
    write_darknet,
    write_darknet_pair,
)
from edgeyolo.models.yolov3 import YOLOv3

HEADER = 20  # int32 major, minor, revision + int64 seen (version 0.2)
OFFICIAL = {"yolov3": 62_001_757, "yolov3-tiny": 8_858_734}
BACKBONE_FLOATS = {"yolov3": 40_620_640, "yolov3-tiny": 6_298_480}  # darknet53.conv.74 / 7 convs


def layer_tensors(model: nn.Module) -> list[list[Tensor]]:
    """Per darknet conv, its tensors in file order."""
    out = []
    for conv, bn in darknet_layers(model):
        if bn is None:
            out.append([conv.bias, conv.weight])
        else:
            out.append([bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight])
    return out


def make(arch: str, classes: int, seed: int) -> YOLOv3:
    """A model whose every darknet tensor (BN statistics included) is random."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, num_classes=classes))
    with torch.no_grad():
        for tensors in layer_tensors(model):
            for t in tensors:
                t.uniform_(0.5, 2.0)  # positive, so running_var stays valid
    return model


def snapshot(model: nn.Module) -> list[list[Tensor]]:
    return [[t.detach().clone() for t in ts] for ts in layer_tensors(model)]


def same_layers(a: list[list[Tensor]], b: list[list[Tensor]]) -> list[bool]:
    pairs = zip(a, b, strict=True)
    return [all(torch.equal(x, y) for x, y in zip(la, lb, strict=True)) for la, lb in pairs]


def cut(src: Path, dst: Path, floats: int) -> Path:
    dst.write_bytes(src.read_bytes()[: HEADER + 4 * floats])
    return dst


@pytest.fixture(scope="module")
def tiny80(tmp_path_factory: pytest.TempPathFactory) -> tuple[YOLOv3, Path]:
    model = make("yolov3-tiny", 80, seed=0)
    path = tmp_path_factory.mktemp("dn") / "yolov3-tiny.weights"
    write_darknet(path, model, seen=123_456)
    return model, path


@pytest.mark.parametrize("classes", [80, 10])
def test_round_trip_tiny_is_bit_exact(tmp_path: Path, classes: int) -> None:
    src = make("yolov3-tiny", classes, seed=0)
    path = tmp_path / "w.weights"
    n = write_darknet(path, src, seen=2**40)
    assert n == darknet_param_count(src)
    if classes == 80:
        assert n == OFFICIAL["yolov3-tiny"]
    assert path.stat().st_size == HEADER + 4 * n
    dst = make("yolov3-tiny", classes, seed=1)
    report = read_darknet(path, dst)
    assert all(same_layers(layer_tensors(dst), layer_tensors(src)))
    assert (report.header.major, report.header.minor, report.header.seen) == (0, 2, 2**40)
    assert report.loaded == tuple(range(13)) and report.skipped == ()
    assert report.file_classes == classes and report.floats_read == n
    assert not report.partial and not report.backbone_only


def test_yolov3_round_trip_official_size_and_darknet53_conv74(tmp_path: Path) -> None:
    """The full 62M-float (248 MB) file, then the same file cut to darknet53.conv.74's size."""
    src = make("yolov3", 80, seed=0)
    path = tmp_path / "yolov3.weights"
    assert write_darknet(path, src) == OFFICIAL["yolov3"]
    assert path.stat().st_size == HEADER + 4 * OFFICIAL["yolov3"]
    dst = make("yolov3", 80, seed=1)
    report = read_darknet(path, dst)
    assert report.loaded == tuple(range(75)) and not report.partial
    assert all(same_layers(layer_tensors(dst), layer_tensors(src)))

    with open(path, "r+b") as f:  # in place: no second 248 MB file
        f.truncate(HEADER + 4 * BACKBONE_FLOATS["yolov3"])
    other = build_model(ModelConfig(arch="yolov3", num_classes=10))
    before = snapshot(other)
    report = read_darknet(path, other)
    assert report.backbone_only and report.partial
    assert report.loaded == tuple(range(52)) and report.layers_in_file == 52
    same = same_layers(layer_tensors(other), layer_tensors(src))
    assert all(same[:52]) and not any(same[52:])
    assert all(same_layers(layer_tensors(other), before)[52:])


def test_80_class_file_into_10_class_model_skips_only_heads(tiny80) -> None:
    src, path = tiny80
    dst = make("yolov3-tiny", 10, seed=1)
    before = snapshot(dst)
    report = read_darknet(path, dst)
    heads = [i for i, (_, bn) in enumerate(darknet_layers(dst)) if bn is None]
    assert heads == [9, 12]
    assert [i for i, _ in report.skipped] == heads
    assert "file 80, model 10" in report.skipped[0][1]
    assert report.loaded == tuple(i for i in range(13) if i not in heads)
    assert report.file_classes == 80 and report.floats_read == OFFICIAL["yolov3-tiny"]
    loaded = same_layers(layer_tensors(dst), layer_tensors(src))
    kept = same_layers(layer_tensors(dst), before)
    assert [i for i, ok in enumerate(loaded) if not ok] == heads
    assert all(kept[i] for i in heads)
    assert "loaded 11/13" in report.summary()


def test_file_class_count_is_inferred_or_given(tmp_path: Path) -> None:
    path = tmp_path / "voc.weights"
    write_darknet(path, make("yolov3-tiny", 20, seed=0))
    report = read_darknet(path, make("yolov3-tiny", 80, seed=1))
    assert report.file_classes == 20 and [i for i, _ in report.skipped] == [9, 12]
    with pytest.raises(CheckpointError, match=r"with 10 classes holds .* too many"):
        read_darknet(path, make("yolov3-tiny", 80, seed=1), file_classes=10)


def test_backbone_only_and_conv15_files(tiny80, tmp_path: Path) -> None:
    src, path = tiny80
    backbone = cut(path, tmp_path / "tiny.backbone", BACKBONE_FLOATS["yolov3-tiny"])
    dst = make("yolov3-tiny", 10, seed=1)
    before = snapshot(dst)
    report = read_darknet(backbone, dst)
    assert report.backbone_only and report.loaded == tuple(range(7)) and report.skipped == ()
    assert "backbone only" in report.summary()
    loaded = same_layers(layer_tensors(dst), layer_tensors(src))
    assert all(loaded[:7]) and all(same_layers(layer_tensors(dst), before)[7:])

    conv15 = cut(path, tmp_path / "yolov3-tiny.conv.15", 7_743_344)
    assert KNOWN_FILES[7_743_344][0] == "yolov3-tiny.conv.15"
    report = read_darknet(conv15, make("yolov3-tiny", 10, seed=1))
    assert report.loaded == tuple(range(9)) and report.partial and not report.backbone_only


def test_truncated_mid_layer_states_expected_and_left(tiny80, tmp_path: Path) -> None:
    _, path = tiny80
    bad = cut(path, tmp_path / "cut.weights", BACKBONE_FLOATS["yolov3-tiny"] + 1000)
    dst = make("yolov3-tiny", 80, seed=1)
    before = snapshot(dst)
    with pytest.raises(CheckpointError) as e:
        read_darknet(bad, dst)
    msg = str(e.value)
    need = 4 * 256 + 256 * 1024  # conv 7: 1x1 1024->256 with BN
    assert str(bad) in msg and "conv 7 of 13" in msg
    assert f"needs {need:,} floats, 1,000 are left" in msg
    assert f"{BACKBONE_FLOATS['yolov3-tiny'] + 1000:,}" in msg and "8,858,734" in msg
    assert all(same_layers(layer_tensors(dst), before))  # all or nothing


def test_too_large_and_ragged_files(tiny80, tmp_path: Path) -> None:
    _, path = tiny80
    big = tmp_path / "big.weights"
    big.write_bytes(path.read_bytes() + bytes(4 * 12))
    with pytest.raises(CheckpointError, match=r"8,858,746 floats .* holds 8,858,734 \(12 too many"):
        read_darknet(big, make("yolov3-tiny", 80, seed=1))
    ragged = tmp_path / "ragged.weights"
    ragged.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(CheckpointError, match="not a whole number of float32s"):
        read_darknet(ragged, make("yolov3-tiny", 80, seed=1))
    empty = tmp_path / "empty.weights"
    empty.write_bytes(path.read_bytes()[:HEADER])
    with pytest.raises(CheckpointError, match="no weights"):
        read_darknet(empty, make("yolov3-tiny", 80, seed=1))
    with pytest.raises(CheckpointError, match="shorter than a darknet header"):
        read_darknet(cut(path, tmp_path / "h", -4), make("yolov3-tiny", 80, seed=1))


def test_file_of_another_architecture_is_named(tiny80) -> None:
    _, path = tiny80
    with pytest.raises(CheckpointError, match=r"yolov3-tiny\.weights, a yolov3-tiny file"):
        read_darknet(path, build_model(ModelConfig(arch="yolov3")))


def test_version_01_header_with_int32_seen(tiny80, tmp_path: Path) -> None:
    src, path = tiny80
    old = tmp_path / "v01.weights"
    old.write_bytes(struct.pack("<4i", 0, 1, 0, 5000) + path.read_bytes()[HEADER:])
    dst = make("yolov3-tiny", 80, seed=1)
    report = read_darknet(old, dst)
    assert (report.header.major, report.header.minor, report.header.seen) == (0, 1, 5000)
    assert all(same_layers(layer_tensors(dst), layer_tensors(src)))


def test_pytorch_checkpoint_is_not_taken_for_darknet(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"a": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="PyTorch/pickle file"):
        read_darknet(path, make("yolov3-tiny", 80, seed=0))


def test_write_is_atomic(tiny80, tmp_path: Path) -> None:
    _, path = tiny80
    dst = tmp_path / "out.weights"
    dst.write_bytes(path.read_bytes())
    bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1, bias=False))
    with pytest.raises(CheckpointError, match="neither BatchNorm nor a bias"):
        write_darknet(dst, bad)
    assert dst.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.weights"]


def test_freeze_backbone() -> None:
    model = build_model(ModelConfig(arch="yolov3-tiny", num_classes=10))
    n_backbone = len(list(model.backbone.parameters()))
    assert freeze_backbone(model) == n_backbone == 21  # 7 x (conv weight, BN gamma, BN beta)
    assert freeze_backbone(model) == 0
    assert all(p.requires_grad for p in model.stages.parameters())
    sum(o.sum() for o in model(torch.zeros(1, 3, 64, 64))).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.stages.parameters())
    assert freeze_backbone(model, frozen=False) == n_backbone
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ reader epsilon, load_model


def file_variances(path: Path, model: nn.Module, layer: int) -> np.ndarray:
    """The running variances of conv ``layer`` (with BatchNorm) as stored in ``path``."""
    offset = HEADER // 4
    for conv, bn in darknet_layers(model)[:layer]:
        offset += conv.weight.numel() + (
            4 * bn.num_features if bn is not None else conv.out_channels
        )
    n = darknet_layers(model)[layer][1].num_features
    floats = np.fromfile(path, "<f4")
    return floats[offset + 3 * n : offset + 4 * n]


def test_eps_1e6_file_shifts_variances_by_9e6_and_reads_back(tmp_path: Path) -> None:
    src = make("yolov3-tiny", 5, seed=0)
    path = tmp_path / "w.weights"
    write_darknet(path, src, eps=1e-6)
    for layer in (0, 7):
        var = darknet_layers(src)[layer][1].running_var.numpy()
        np.testing.assert_array_equal(file_variances(path, src, layer), var + np.float32(9e-6))
    dst = make("yolov3-tiny", 5, seed=1)
    report = read_darknet(path, dst, eps=1e-6)
    assert report.eps == 1e-6
    for (key, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        if "running_var" in key:
            torch.testing.assert_close(b, a, rtol=0, atol=2.5e-7)  # float32 steps of ~2
        elif "num_batches" not in key:
            assert torch.equal(a, b), key
    plain = make("yolov3-tiny", 5, seed=1)
    read_darknet(path, plain)  # read as a 1e-5 file: the shift stays
    assert torch.equal(darknet_layers(plain)[0][1].running_var, torch.from_numpy(
        file_variances(path, src, 0)))  # fmt: skip


def test_reading_as_1e6_clamps_variances_at_zero(tmp_path: Path) -> None:
    src = make("yolov3-tiny", 5, seed=0)
    bn = darknet_layers(src)[3][1]
    with torch.no_grad():
        bn.running_var[:4] = torch.tensor([0.0, 1e-6, 8.9e-6, 1e-3])
    path = tmp_path / "w.weights"
    write_darknet(path, src)  # for 1e-5 readers: unchanged
    dst = make("yolov3-tiny", 5, seed=1)
    read_darknet(path, dst, eps=1e-6)
    got = darknet_layers(dst)[3][1].running_var[:4]
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    assert got[3].item() == pytest.approx(1e-3 - 9e-6, abs=1e-10)


def test_skipped_heads_keep_their_variances_and_bad_eps_is_refused(tiny80, tmp_path) -> None:
    _, path = tiny80
    with pytest.raises(ConfigError, match=r"eps must be in \(0, 0.001\]"):
        read_darknet(path, make("yolov3-tiny", 80, seed=1), eps=0.0)
    with pytest.raises(ConfigError, match=r"--darknet-eps must be in"):
        write_darknet(tmp_path / "x.weights", make("yolov3-tiny", 80, seed=1), eps=1.0)
    assert not (tmp_path / "x.weights").exists()


def test_load_model_reads_an_official_file_by_its_size(tiny80) -> None:
    src, path = tiny80  # yolov3-tiny.weights, no cfg beside it
    model, info = load_model(path)
    assert isinstance(model, YOLOv3) and not model.training
    c = model.config
    assert (c.arch, c.num_classes, c.img_size, c.anchors) == ("yolov3-tiny", 80, 416, None)
    assert c.names == COCO_NAMES and model.num_classes == 80
    assert info["format"] == "darknet" and info["cfg"] is None and info["eps"] == 1e-5
    assert info["seen"] == 123_456 and info["floats"] == OFFICIAL["yolov3-tiny"]
    assert all(same_layers(layer_tensors(model), layer_tensors(src)))


def test_load_model_without_cfg_refuses_other_sizes(tmp_path: Path) -> None:
    path = tmp_path / "voc.weights"
    n = write_darknet(path, make("yolov3-tiny", 20, seed=0))
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert f"{n:,} floats after the header" in msg and "62,001,757" in msg and "8,858,734" in msg
    assert "--cfg (or put voc.cfg beside it)" in msg
    conv15 = tmp_path / "yolov3-tiny.conv.15.weights"
    conv15.write_bytes(path.read_bytes()[: HEADER + 4 * 7_743_344])
    with pytest.raises(CheckpointError, match=r"yolov3-tiny.conv.15, a backbone only: train"):
        load_model(conv15)


def test_load_model_with_cfg_named_or_beside(tmp_path: Path) -> None:
    anchors = tuple((5.0 + i, 7.0 + 2 * i) for i in range(6))
    src = make("yolov3-tiny", 20, seed=0)
    src.config = ModelConfig(arch="yolov3-tiny", num_classes=20, img_size=320, anchors=anchors)
    weights, cfg, _ = write_darknet_pair(tmp_path / "pair", src)
    moved = tmp_path / "elsewhere.cfg"
    cfg.rename(moved)
    with pytest.raises(CheckpointError, match="the size of neither"):
        load_model(weights)  # no cfg beside it any more
    model, info = load_model(weights, moved)
    assert info["cfg"] == str(moved)
    assert model.config == ModelConfig(
        arch="yolov3-tiny",
        num_classes=20,
        img_size=320,
        anchors=anchors,
        names=tuple(f"class{i}" for i in range(20)),
    )
    assert all(same_layers(layer_tensors(model), layer_tensors(src)))
    moved.rename(cfg)
    model, info = load_model(weights, darknet_eps=1e-6)  # beside it; an explicit eps wins
    assert info["cfg"] == str(cfg) and info["eps"] == 1e-6
    assert torch.equal(
        darknet_layers(model)[0][1].running_var,
        (darknet_layers(src)[0][1].running_var - 9e-6).clamp_min(0),
    )


def test_load_model_refuses_a_pair_that_does_not_fit(tmp_path: Path) -> None:
    src = make("yolov3-tiny", 20, seed=0)
    weights, cfg, _ = write_darknet_pair(tmp_path, src)
    other = tmp_path / "c10.cfg"
    write_cfg(other, ModelConfig(arch="yolov3-tiny", num_classes=10))
    with pytest.raises(CheckpointError, match=r"with 10 classes holds .* too many"):
        load_model(weights, other)
    cut = tmp_path / "cut.weights"
    cut.write_bytes(weights.read_bytes()[: HEADER + 4 * BACKBONE_FLOATS["yolov3-tiny"]])
    with pytest.raises(CheckpointError, match=r"holds 7 of the 13 conv layers .* --pretrained"):
        load_model(cut, cfg)
    bad = tmp_path / "bad.cfg"
    bad.write_text(cfg.read_text().replace("activation=leaky", "activation=mish", 1))
    with pytest.raises(ConfigError, match=r"layer 0 \[convolutional\] .*activation"):
        load_model(weights, bad)
    with pytest.raises(ConfigError, match=r"missing.cfg: cannot read the cfg"):
        load_model(weights, tmp_path / "missing.cfg")
    with pytest.raises(CheckpointError, match=r"nope.weights: no such darknet .weights file"):
        load_model(tmp_path / "nope.weights")


def test_load_model_cfg_with_a_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    torch.save({"a": torch.zeros(1)}, ckpt)
    with pytest.raises(CheckpointError, match=r"best.pt: an edgeyolo checkpoint.*drop it"):
        load_model(ckpt, tmp_path / "x.cfg")
