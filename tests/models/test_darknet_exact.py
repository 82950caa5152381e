"""Darknet files out, run by an independent reader: :mod:`tests.models.darknet_reference`.

The reference parses the written ``.cfg`` itself, reads the ``.weights`` in darknet's load
order and runs darknet's layers in float64 with the BatchNorm epsilon as a parameter. The model
is "trained-looking": running statistics are those of its own activations, with running
variances rescaled into [1e-3, 3e-3] (as a trained yolov3-tiny's, near 0.002), where the reader
epsilon matters. Figures measured on these tests are in the README's "Darknet models".
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.config import ModelConfig
from edgeyolo.models import build_model, darknet_layers
from edgeyolo.models.checkpoint import load_model
from edgeyolo.models.darknet_weights import write_darknet_pair
from edgeyolo.models.yolov3 import YOLOv3
from tests.models.darknet_reference import DarknetReference

DATA = Path(__file__).parent / "data"
#: Largest |reference - PyTorch| of a head map when the reader epsilon is the file's: float32
#: rounding of the PyTorch model (heads are O(1..5)); measured 1.4e-5 (tiny), 4.8e-5 (yolov3).
SAME = 1e-4
#: Smallest difference that shows the wrong reader epsilon (measured 0.1 .. 1.5).
WRONG = 1e-3


def trained_looking(model: YOLOv3, seed: int = 0) -> YOLOv3:
    """Random convs, BatchNorm running statistics set from the model's own activations on random
    images (so activations stay O(1) through the layers, as in a trained model), then each
    channel's conv weights, running mean and variance rescaled so that the variance is a random
    value in [1e-3, 3e-3]: the function is unchanged (up to the epsilon), the variances are small.
    """
    g = torch.Generator().manual_seed(seed)
    size = model.config.img_size
    with torch.no_grad():
        for conv, bn in darknet_layers(model):
            conv.weight.normal_(0.0, conv.weight[0].numel() ** -0.5, generator=g)
            if bn is None:
                conv.bias.uniform_(-1.0, 1.0, generator=g)
            else:
                bn.weight.uniform_(0.8, 1.2, generator=g)
                bn.bias.uniform_(-0.2, 0.2, generator=g)
                bn.momentum = 1.0  # running statistics := this batch's
        model.train()
        model(torch.rand(4, 3, size, size, generator=g))
        model.eval()
        for conv, bn in darknet_layers(model):
            if bn is not None:
                target = torch.empty_like(bn.running_var).uniform_(1e-3, 3e-3, generator=g)
                k = (target / bn.running_var).sqrt()
                conv.weight.mul_(k.view(-1, 1, 1, 1))
                bn.running_mean.mul_(k)
                bn.running_var.copy_(target)
                bn.momentum = 0.03
    return model


def heads_of(model: YOLOv3, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        return [h[0].double().numpy() for h in model(x)]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [x.shape for x in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def tiny() -> tuple[YOLOv3, torch.Tensor]:
    """yolov3-tiny, 80 classes, at its official 416 input."""
    model = trained_looking(build_model(ModelConfig(arch="yolov3-tiny", num_classes=80)))
    return model, torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def yolov3() -> tuple[YOLOv3, torch.Tensor]:
    """yolov3 (75 convs, all of darknet's layer kinds but maxpool) at 96 px, 3 classes, own
    anchors: numpy runs it in a fraction of a second."""
    anchors = [(4 + 5 * i, 6 + 4 * i) for i in range(9)]
    config = ModelConfig(arch="yolov3", num_classes=3, img_size=96, anchors=anchors)
    model = trained_looking(build_model(config), seed=2)
    return model, torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))


def reference(folder: Path, arch: str) -> DarknetReference:
    return DarknetReference((folder / f"{arch}.cfg").read_text(), folder / f"{arch}.weights")


@pytest.mark.parametrize("net", ["tiny", "yolov3"])
def test_default_file_is_reproduced_by_1e5_readers_only(
    net: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model, x = request.getfixturevalue(net)
    write_darknet_pair(tmp_path, model, seen=4242)
    ref = reference(tmp_path, model.config.arch)
    assert ref.header == {"major": 0, "minor": 2, "revision": 0, "seen": 4242}
    ours = heads_of(model, x)
    assert max_diff(ref.forward(x[0].numpy(), eps=1e-5), ours) < SAME
    assert max_diff(ref.forward(x[0].numpy(), eps=1e-6), ours) > WRONG  # the issue, shown


@pytest.mark.parametrize("net", ["tiny", "yolov3"])
def test_1e6_file_is_reproduced_by_1e6_readers_only(
    net: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model, x = request.getfixturevalue(net)
    write_darknet_pair(tmp_path, model, eps=1e-6)
    assert "darknet-eps=1e-06" in (tmp_path / f"{model.config.arch}.cfg").read_text()
    ref = reference(tmp_path, model.config.arch)
    ours = heads_of(model, x)
    assert max_diff(ref.forward(x[0].numpy(), eps=1e-6), ours) < SAME
    assert max_diff(ref.forward(x[0].numpy(), eps=1e-5), ours) > WRONG


def test_pjreddie_cpu_normalisation_is_reproduced_by_neither_file(tiny, tmp_path: Path) -> None:
    """pjreddie's ``normalize_cpu`` divides by ``sqrt(var) + 1e-6``: the README says neither
    file reproduces it; the 1e-6 file comes about ten times closer."""
    model, x = tiny
    ours = heads_of(model, x)
    diffs = []
    for eps in (1e-5, 1e-6):
        folder = tmp_path / f"{eps:g}"
        write_darknet_pair(folder, model, eps=eps)
        diffs.append(
            max_diff(reference(folder, "yolov3-tiny").forward(x[0].numpy(), 1e-6, "cpu"), ours)
        )
    assert diffs[1] > WRONG and diffs[0] > 5 * diffs[1]


def test_written_cfg_runs_as_the_official_cfg(tiny, tmp_path: Path) -> None:
    """80 classes, 416, darknet's anchors: the reference runs our weights with darknet's own
    ``yolov3-tiny.cfg`` exactly as with the cfg we wrote."""
    model, x = tiny
    write_darknet_pair(tmp_path, model)
    official = DarknetReference(
        (DATA / "yolov3-tiny.cfg").read_text(), tmp_path / "yolov3-tiny.weights"
    )
    ours = reference(tmp_path, "yolov3-tiny").forward(x[0].numpy(), 1e-5)
    assert max_diff(official.forward(x[0].numpy(), 1e-5), ours) == 0.0


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_pair_read_back_reproduces_the_model(yolov3, tmp_path: Path, eps: float) -> None:
    """Out and in again: load_model on the pair (the cfg found beside the weights, its recorded
    epsilon applied) rebuilds the same model: config, and state within float32 rounding of the
    variance shift (exact at 1e-5)."""
    model, x = yolov3
    write_darknet_pair(tmp_path, model, eps=eps)
    back, info = load_model(tmp_path / "yolov3.weights")
    assert info["cfg"] == str(tmp_path / "yolov3.cfg") and info["eps"] == eps
    assert back.config.arch == "yolov3" and back.config.img_size == 96
    assert back.config.anchors == model.config.anchors and back.config.num_classes == 3
    theirs, ours = back.state_dict(), model.state_dict()
    for key, value in ours.items():
        if "num_batches" in key:
            continue
        if eps == 1e-5 or "running_var" not in key:
            assert torch.equal(theirs[key], value), key
        else:
            torch.testing.assert_close(theirs[key], value, rtol=0, atol=1e-9)
    assert max_diff(heads_of(back, x), heads_of(model, x)) < 1e-5


def test_export_from_weights_to_darknet_pair_for_opencv(tiny, tmp_path: Path) -> None:
    """`edgeyolo export --weights X.weights --darknet --darknet-eps 1e-6`: the darknet-read
    model goes out as an ONNX graph (parity checked by the export) and as a pair that a 1e-6
    reader runs as the original model; the manifest lists both files with their epsilon."""
    model = trained_looking(
        build_model(ModelConfig(arch="yolov3-tiny", num_classes=3, img_size=64))
    )
    src = tmp_path / "src"
    write_darknet_pair(src, model, seen=99)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(calib / f"{i}.png"), (rng.random((60, 80, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    args = ["export", "--weights", str(src / "yolov3-tiny.weights"), "--out", str(out), "--calib"]
    args += [str(calib), "--darknet", "--darknet-eps", "1e-6", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {a["kind"]: a for a in manifest["artifacts"]}
    assert entries["darknet"]["file"] == "yolov3-tiny.weights" and entries["darknet"]["eps"] == 1e-6
    assert (
        entries["darknet_cfg"]["file"] == "yolov3-tiny.cfg"
        and "OpenCV" in entries["darknet_cfg"]["readers"]
    )
    assert manifest["classes"] == ["class0", "class1", "class2"]
    ref = reference(out, "yolov3-tiny")
    assert ref.header["seen"] == 99
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert max_diff(ref.forward(x[0].numpy(), 1e-6), heads_of(model, x)) < SAME


def test_eval_and_info_take_a_darknet_pair(mnist_small_yaml: Path, tmp_path: Path) -> None:
    """`eval --weights X.weights` (X.cfg beside it) scores the darknet model; `info` counts it."""
    config = ModelConfig(arch="yolov3-tiny", num_classes=10, img_size=96)
    write_darknet_pair(tmp_path, trained_looking(build_model(config)))
    weights = str(tmp_path / "yolov3-tiny.weights")
    r = CliRunner().invoke(app, ["eval", "--weights", weights, "--data", str(mnist_small_yaml)])
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output
    r = CliRunner().invoke(app, ["info", "--weights", weights, "--json"])
    assert r.exit_code == 0, r.output
    assert (
        json.loads(r.output)["darknet_params"]
        == (tmp_path / "yolov3-tiny.weights").stat().st_size // 4 - 5
    )
