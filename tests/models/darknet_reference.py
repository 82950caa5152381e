"""An independent darknet forward pass in numpy (float64), for tests only.

Written from darknet's C sources (pjreddie/darknet ``src/parser.c``, ``convolutional_layer.c``,
``batchnorm_layer.c``, ``blas.c``, ``im2col.c``, ``maxpool_layer.c``, ``upsample_layer.c``,
``route_layer.c``, ``shortcut_layer.c``, ``yolo_layer.c``), not from edgeyolo's code: it parses
the cfg text itself, reads the ``.weights`` in ``load_weights_upto``'s order and runs the
layers. It imports nothing from edgeyolo, so a test that compares the two compares two
implementations.

What it does, per darknet:

- cfg: blanks dropped from every line, ``#``/``;`` comments, ``[section]`` then ``key=value``.
- ``.weights``: int32 major, minor, revision; ``seen`` as size_t (8 bytes) when
  ``major * 10 + minor >= 2`` and both are < 1000, else int32; then per ``[convolutional]``, in
  cfg order: biases[n], and with ``batch_normalize``: scales[n], rolling_mean[n],
  rolling_variance[n]; then weights[n * c * size * size]. float32 little-endian.
- convolution: zero padding ``size / 2`` when ``pad=1`` (else ``padding``), output
  ``(h + 2 * pad - size) / stride + 1``.
- BatchNorm at inference: ``(x - rolling_mean) / sqrt(rolling_variance + eps) * scales +
  biases``; ``eps`` is a parameter (``form="cpu"`` gives pjreddie's CPU ``normalize_cpu``:
  ``/ (sqrt(var) + eps)``). Without BatchNorm: ``x + biases``.
- ``leaky``: ``x > 0 ? x : 0.1 * x``; ``linear``: ``x``.
- maxpool: ``padding`` defaults to ``size - 1``, output ``(h + padding - size) / stride + 1``,
  windows start at ``-padding / 2`` (C division) and cells outside the input are ignored
  (``-FLT_MAX``); so the size-2 stride-1 pool of yolov3-tiny keeps the size.
- upsample: nearest, ``out[y][x] = in[y / stride][x / stride]``.
- route: the listed layers' outputs concatenated along channels (negative = relative).
- shortcut: ``out = previous + layers[from]``, then ``activation`` (linear).
- yolo: the test compares the layer's input, the raw head map (darknet's yolo layer then applies
  the logistic to x, y, objectness and classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np


def parse(text: str) -> list[tuple[str, dict[str, str]]]:
    """``[(section, {key: value})]`` in file order."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append((line[1:-1], {}))
        else:
            key, value = line.split("=", 1)
            sections[-1][1][key] = value
    return sections


@dataclass
class Layer:
    kind: str
    opts: dict[str, str]
    in_shape: tuple[int, int, int]  # c, h, w
    out_shape: tuple[int, int, int] = (0, 0, 0)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def integer(self, key: str, default: int) -> int:
        return int(self.opts.get(key, default))


def _index(i: int, ref: str) -> int:
    n = int(ref)
    return i + n if n < 0 else n


class DarknetReference:
    """``DarknetReference(cfg_text, weights_path)``; ``forward(image, eps)`` -> head maps."""

    def __init__(self, cfg_text: str, weights: str | Path) -> None:
        sections = parse(cfg_text)
        kind, net = sections[0]
        assert kind in ("net", "network"), kind
        shape = (int(net["channels"]), int(net["height"]), int(net["width"]))
        self.input_shape = shape
        self.layers: list[Layer] = []
        for i, (kind, opts) in enumerate(sections[1:]):
            layer = Layer(kind, opts, shape)
            layer.out_shape = self._out_shape(i, layer)
            self.layers.append(layer)
            shape = layer.out_shape
        self.header = self._load(Path(weights))

    def _out_shape(self, i: int, ly: Layer) -> tuple[int, int, int]:
        c, h, w = ly.in_shape
        if ly.kind == "convolutional":
            size, stride = ly.integer("size", 1), ly.integer("stride", 1)
            pad = size // 2 if ly.integer("pad", 0) else ly.integer("padding", 0)
            n = ly.integer("filters", 1)
            return n, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
        if ly.kind == "maxpool":
            stride = ly.integer("stride", 1)
            size = ly.integer("size", stride)
            padding = ly.integer("padding", size - 1)
            return c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
        if ly.kind == "upsample":
            s = ly.integer("stride", 2)
            return c, h * s, w * s
        if ly.kind == "route":
            refs = [_index(i, r) for r in ly.opts["layers"].split(",")]
            shapes = [self.layers[r].out_shape for r in refs]
            assert all(s[1:] == shapes[0][1:] for s in shapes), shapes
            return sum(s[0] for s in shapes), shapes[0][1], shapes[0][2]
        if ly.kind in ("shortcut", "yolo"):
            return c, h, w
        raise ValueError(f"layer {i}: [{ly.kind}] is not a yolov3 layer")

    def _load(self, path: Path) -> dict[str, int]:
        with open(path, "rb") as f:
            major, minor, revision = (int(v) for v in np.fromfile(f, "<i4", 3))
            wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
            seen = int(np.fromfile(f, "<u8" if wide else "<i4", 1)[0])
            for ly in self.layers:
                if ly.kind != "convolutional":
                    continue
                n, c = ly.out_shape[0], ly.in_shape[0]
                size = ly.integer("size", 1)
                names = ["biases"]
                if ly.integer("batch_normalize", 0):
                    names += ["scales", "rolling_mean", "rolling_variance"]
                for name in names:
                    ly.params[name] = _read(f, n)
                ly.params["weights"] = _read(f, n * c * size * size).reshape(n, c, size, size)
            rest = f.read()
        assert not rest, f"{len(rest)} bytes left after the last layer"
        return {"major": major, "minor": minor, "revision": revision, "seen": seen}

    def forward(self, image: np.ndarray, eps: float, form: str = "sqrt(var+eps)") -> list:
        """``image: float[3, H, W]`` -> the input of every ``[yolo]`` layer, ``float64[C, h, w]``.

        ``form``: ``"sqrt(var+eps)"`` (darknet's CUDA ``normalize_kernel``, OpenCV, TensorRT
        samples) or ``"cpu"`` (pjreddie's ``normalize_cpu``: ``sqrt(var) + eps``).
        """
        x = np.asarray(image, dtype=np.float64)
        assert x.shape == self.input_shape, (x.shape, self.input_shape)
        outputs: list[np.ndarray] = []
        heads: list[np.ndarray] = []
        for i, ly in enumerate(self.layers):
            if ly.kind == "convolutional":
                x = _convolutional(ly, x, eps, form)
            elif ly.kind == "maxpool":
                x = _maxpool(ly, x)
            elif ly.kind == "upsample":
                s = ly.integer("stride", 2)
                x = x.repeat(s, axis=1).repeat(s, axis=2)
            elif ly.kind == "route":
                refs = [_index(i, r) for r in ly.opts["layers"].split(",")]
                x = np.concatenate([outputs[r] for r in refs], axis=0)
            elif ly.kind == "shortcut":
                x = x + outputs[_index(i, ly.opts["from"])]
                x = _activate(x, ly.opts.get("activation", "linear"))
            elif ly.kind == "yolo":
                heads.append(x)
            assert x.shape == ly.out_shape, (i, ly.kind, x.shape, ly.out_shape)
            outputs.append(x)
        return heads


def _read(f: BinaryIO, n: int) -> np.ndarray:
    values = np.fromfile(f, "<f4", n)
    assert values.size == n, f"file ends early: {values.size} of {n} floats"
    return values.astype(np.float64)


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if activation == "linear":
        return x
    raise ValueError(f"activation {activation} is not a yolov3 one")


def _convolutional(ly: Layer, x: np.ndarray, eps: float, form: str) -> np.ndarray:
    p = ly.params
    size, stride = ly.integer("size", 1), ly.integer("stride", 1)
    pad = size // 2 if ly.integer("pad", 0) else ly.integer("padding", 0)
    n, out_h, out_w = ly.out_shape
    c = x.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))  # im2col: zeros outside the image
    windows = np.lib.stride_tricks.sliding_window_view(xp, (size, size), axis=(1, 2))
    windows = windows[:, : stride * out_h : stride, : stride * out_w : stride]  # c, oh, ow, k, k
    cols = windows.transpose(0, 3, 4, 1, 2).reshape(c * size * size, out_h * out_w)
    out = (p["weights"].reshape(n, -1) @ cols).reshape(n, out_h, out_w)
    if ly.integer("batch_normalize", 0):
        mean, var = p["rolling_mean"][:, None, None], p["rolling_variance"][:, None, None]
        if form == "cpu":
            out = (out - mean) / (np.sqrt(var) + eps)
        else:
            out = (out - mean) / np.sqrt(var + eps)
        out = out * p["scales"][:, None, None]
    out = out + p["biases"][:, None, None]
    return _activate(out, ly.opts.get("activation", "logistic"))


def _maxpool(ly: Layer, x: np.ndarray) -> np.ndarray:
    stride = ly.integer("stride", 1)
    size = ly.integer("size", stride)
    padding = ly.integer("padding", size - 1)
    c, h, w = x.shape
    _, out_h, out_w = ly.out_shape
    offset = math.trunc(-padding / 2)  # C: w_offset = -l.pad / 2
    big = np.full((c, h + padding + size, w + padding + size), -np.inf)
    big[:, -offset : -offset + h, -offset : -offset + w] = x  # -FLT_MAX outside: never chosen
    out = np.full((c, out_h, out_w), -np.inf)
    for dy in range(size):
        for dx in range(size):
            cells = big[:, dy : dy + stride * out_h : stride, dx : dx + stride * out_w : stride]
            out = np.maximum(out, cells)
    return out
