"""The frame counter drawn into frames by a sender and read back by the receiver: exact round
trips, reads through noise and blur like a lossy codec's, and ``None`` where there is none."""

from __future__ import annotations

import numpy as np
import pytest

from edgeyolo.runtime.framecounter import BITS, BLOCK, decode_counter, encode_counter

INDICES = (0, 1, 2, 255, 65_537, 2**31 + 5, 2**32 - 1)


@pytest.mark.parametrize("shape", [(48, 320, 3), (240, 320, 3), (16, 256), (480, 640, 4)])
def test_round_trip(shape: tuple[int, ...]) -> None:
    image = np.full(shape, 128, np.uint8)
    for index in INDICES:
        encode_counter(image, index)
        assert decode_counter(image) == index
    encode_counter(image, 2**32 + 7)  # wraps
    assert decode_counter(image) == 7


def test_draws_only_the_corner() -> None:
    image = np.full((64, 320, 3), 77, np.uint8)
    encode_counter(image, 12345)
    assert (image[2 * BLOCK :] == 77).all() and (image[:, BITS * BLOCK :] == 77).all()


def _blur(image: np.ndarray) -> np.ndarray:
    """A 3x3 box blur: the blocks' edges smear into each other, as after H.264."""
    f = np.pad(image.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    out = sum(f[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9
    return np.clip(out, 0, 255).astype(np.uint8)


def test_reads_through_noise_and_blur() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # a busy picture around it
    for index in rng.integers(0, 2**32, 50):
        image = base.copy()
        encode_counter(image, int(index))
        noisy = image.astype(np.int16) + rng.normal(0, 20, image.shape).round().astype(np.int16)
        noisy = _blur(np.clip(noisy, 0, 255).astype(np.uint8))
        assert decode_counter(noisy) == int(index)
        assert decode_counter(noisy[..., ::-1]) == int(index)  # RGB as well as BGR


def test_none_without_a_counter() -> None:
    rng = np.random.default_rng(1)
    assert decode_counter(np.zeros((48, 320, 3), np.uint8)) is None  # black: not "0"
    assert decode_counter(np.full((48, 320, 3), 255, np.uint8)) is None
    assert decode_counter(np.full((48, 320), 128, np.uint8)) is None
    for _ in range(20):  # a camera's picture
        assert decode_counter(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) is None
    assert decode_counter(np.zeros((8, 320), np.uint8)) is None  # too small to hold one
    assert decode_counter(np.zeros((48, 200, 3), np.uint8)) is None


def test_none_when_damaged() -> None:
    image = np.full((48, 320, 3), 128, np.uint8)
    encode_counter(image, 0xA5A5A5A5)
    grey = image.copy()
    grey[:BLOCK, 3 * BLOCK : 4 * BLOCK] = 128  # one block neither black nor white
    assert decode_counter(grey) is None
    same = image.copy()
    same[BLOCK : 2 * BLOCK, :BLOCK] = same[:BLOCK, :BLOCK]  # a bit that is not inverted below
    assert decode_counter(same) is None


def test_refuses_a_frame_too_small() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        encode_counter(np.zeros((48, 200), np.uint8), 1)
    with pytest.raises(ValueError, match="cannot hold"):
        encode_counter(np.zeros((15, 320), np.uint8), 1)
