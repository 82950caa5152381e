"""A frame's index drawn into its pixels, and read back after a lossy video codec (numpy only).

The index is written as a row of ``BITS`` square blocks at the top-left corner of the frame,
most significant bit first: white (255) for 1, black (0) for 0, and below it the same row
inverted, so that a frame with no counter (a black corner) does not read as index 0. Blocks of
8 px with full contrast survive H.264 at ``speed-preset=ultrafast`` and 4:2:0 chroma.

A sender that draws its frame number into every frame lets the receiver tell how many frames
old the frame it processes is (:mod:`edgeyolo.runtime.latency`). The RTSP test server
(``scripts/rtsp_server.py``, run by the system python, which may not have edgeyolo installed)
loads this file by its path: it must import nothing but numpy (any 1.x or 2.x).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BITS", "BLOCK", "decode_counter", "encode_counter"]

#: Bits in the counter (indices wrap at 2**BITS).
BITS = 32
#: Side of one bit's square block, px.
BLOCK = 8
#: A block whose mean lies strictly between these is unreadable (not a clear black or white).
_DARK, _LIGHT = 80, 175


def encode_counter(image: np.ndarray, index: int, *, bits: int = BITS, block: int = BLOCK) -> None:
    """Draw ``index`` (mod 2**bits) into ``image`` (``uint8[H, W]`` or ``uint8[H, W, C]``), in
    place: ``bits`` blocks of ``block`` px in a row from the top-left corner, the inverted row
    below it.

    Raises:
        ValueError: the image is narrower than ``bits * block`` or shorter than ``2 * block`` px.
    """
    h, w = image.shape[:2]
    if w < bits * block or h < 2 * block:
        raise ValueError(f"a {w}x{h} frame cannot hold 2 rows of {bits} blocks of {block} px")
    value = int(index) % (1 << bits)
    for i in range(bits):
        bit = (value >> (bits - 1 - i)) & 1
        cols = slice(i * block, (i + 1) * block)
        image[:block, cols] = 255 if bit else 0
        image[block : 2 * block, cols] = 0 if bit else 255


def decode_counter(image: np.ndarray, *, bits: int = BITS, block: int = BLOCK) -> int | None:
    """The index :func:`encode_counter` drew into ``image`` (``uint8[H, W]`` or
    ``uint8[H, W, C]``, any channel order), or ``None`` when a block is not clearly black or
    white, or the row below is not its inverse (no counter in this frame, or too damaged to
    trust). Reads only the top-left strip: about 0.1 ms a frame."""
    h, w = image.shape[:2]
    if w < bits * block or h < 2 * block:
        return None
    strip = np.asarray(image[: 2 * block, : bits * block], dtype=np.float32)
    if strip.ndim == 3:
        strip = strip.mean(axis=2)
    inner = block // 4  # the blocks' centres: their edges blur into the neighbours
    core = strip.reshape(2, block, bits, block)[:, inner : block - inner, :, inner : block - inner]
    means = core.mean(axis=(1, 3))  # [2, bits]
    if np.any((means > _DARK) & (means < _LIGHT)):
        return None
    ones = means[0] >= _LIGHT
    if np.any(ones == (means[1] >= _LIGHT)):
        return None
    value = 0
    for bit in ones:
        value = (value << 1) | int(bit)
    return value
