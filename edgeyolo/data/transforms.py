"""Training and evaluation transforms (torchvision.transforms.v2) over the one letterbox.

The letterbox itself (geometry, :func:`letterbox`, the box mappings, :func:`to_frame`) lives in
:mod:`edgeyolo.data.letterbox`, which needs no torch; it is re-exported here.
:func:`eval_transforms` runs literally the same code as :func:`letterbox` +
:func:`boxes_to_letterbox` (through :class:`Letterbox`), so training, evaluation and the
ONNX/TensorRT backends see the same pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeyolo.config import AugmentConfig
from edgeyolo.data.affine import affine_boxes, letterbox_affine_matrix, warp_letterbox_affine
from edgeyolo.data.letterbox import (
    PAD_VALUE,
    LetterboxParams,
    Size,
    boxes_from_letterbox,
    boxes_to_letterbox,
    letterbox,
    letterbox_params,
    target_hw,
    to_frame,
)

__all__ = [
    "PAD_VALUE",
    "Letterbox",
    "LetterboxAffine",
    "LetterboxParams",
    "Size",
    "boxes_from_letterbox",
    "boxes_to_letterbox",
    "eval_transforms",
    "letterbox",
    "letterbox_params",
    "to_frame",
    "train_transforms",
]


class Letterbox(v2.Transform):
    """v2 transform: :func:`letterbox` on a uint8 ``tv_tensors.Image`` and
    :func:`boxes_to_letterbox` on its ``tv_tensors.BoundingBoxes`` (XYXY); the rest passes."""

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes)

    def __init__(self, size: Size, *, pad_value: int = PAD_VALUE) -> None:
        super().__init__()
        self.size = size
        self.pad_value = pad_value

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError(f"Letterbox expects XYXY boxes, got {inpt.format}")
            height, width = inpt.canvas_size
            lb = letterbox_params(width, height, self.size)
            out = boxes_to_letterbox(inpt.as_subclass(torch.Tensor), lb)
            return tv_tensors.wrap(out, like=inpt, canvas_size=target_hw(self.size))
        if inpt.dtype != torch.uint8 or inpt.ndim != 3:
            raise TypeError(
                f"Letterbox expects a uint8 [C, H, W] image, got {inpt.dtype} {tuple(inpt.shape)}"
            )
        hwc = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).cpu().numpy()
        out, _ = letterbox(hwc, self.size, pad_value=self.pad_value)
        return tv_tensors.wrap(torch.from_numpy(out).permute(2, 0, 1), like=inpt)


class LetterboxAffine(v2.Transform):
    """v2 transform: letterbox to ``size`` and a random affine (``RandomAffine``'s draws: angle
    in ``[-degrees, degrees]``, shift up to ``translate`` of the side in whole pixels, zoom in
    ``scale``) in one ``cv2.warpAffine`` (:mod:`edgeyolo.data.affine`) on a uint8
    ``tv_tensors.Image``; its ``BoundingBoxes`` (XYXY) follow, unclamped. A draw that moves
    nothing gives :func:`letterbox`'s own pixels, as the evaluation sees them."""

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes)

    def __init__(
        self,
        size: int,
        *,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        pad_value: int = PAD_VALUE,
    ) -> None:
        super().__init__()
        self.size, self.degrees, self.translate = size, degrees, translate
        self.scale, self.pad_value = (float(scale[0]), float(scale[1])), pad_value

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u = torch.rand(4).tolist()  # torch's generator, seeded per worker and epoch
        lo, hi = self.scale
        max_shift = self.translate * self.size
        return {
            "angle": (2.0 * u[0] - 1.0) * self.degrees,
            "shift": (round((2.0 * u[1] - 1.0) * max_shift), round((2.0 * u[2] - 1.0) * max_shift)),
            "zoom": lo + (hi - lo) * u[3],
        }

    def _matrix(self, height: int, width: int, params: dict[str, Any]) -> Any:
        return letterbox_affine_matrix(
            width,
            height,
            self.size,
            angle=params["angle"],
            shift=params["shift"],
            zoom=params["zoom"],
        )

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError(f"LetterboxAffine expects XYXY boxes, got {inpt.format}")
            m = self._matrix(*inpt.canvas_size, params)
            out = torch.from_numpy(affine_boxes(inpt.as_subclass(torch.Tensor).cpu().numpy(), m))
            return tv_tensors.wrap(out, like=inpt, canvas_size=target_hw(self.size))
        if inpt.dtype != torch.uint8 or inpt.ndim != 3:
            raise TypeError(
                "LetterboxAffine expects a uint8 [C, H, W] image, "
                f"got {inpt.dtype} {tuple(inpt.shape)}"
            )
        hwc = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).cpu().numpy()
        if params["angle"] == 0 and params["shift"] == (0, 0) and params["zoom"] == 1:
            out, _ = letterbox(hwc, self.size, pad_value=self.pad_value)  # the eval pixels
        else:
            m = self._matrix(hwc.shape[0], hwc.shape[1], params)
            out = warp_letterbox_affine(hwc, m, self.size, pad_value=self.pad_value)
        return tv_tensors.wrap(torch.from_numpy(out).permute(2, 0, 1), like=inpt)


def eval_transforms(size: int) -> v2.Compose:
    """Letterbox to ``size`` and scale to float32 0..1; takes ``(Image, {"boxes", "labels"})``.

    Pixels and boxes are exactly those of :func:`letterbox` and :func:`boxes_to_letterbox`.
    """
    return v2.Compose([Letterbox(size), v2.ToDtype(torch.float32, scale=True)])


def train_transforms(size: int, aug: AugmentConfig) -> v2.Compose:
    """Letterbox and random affine (fill 114) in one warp (:class:`LetterboxAffine`), then
    colour jitter and flips as ``aug`` says; boxes are clamped to the image and those under 2 px
    dropped together with their labels. ``aug.enabled`` False gives :func:`eval_transforms`."""
    if not aug.enabled:
        return eval_transforms(size)
    steps: list[v2.Transform] = [
        LetterboxAffine(size, degrees=aug.degrees, translate=aug.translate, scale=aug.scale),
    ]
    if any((aug.brightness, aug.contrast, aug.saturation, aug.hue)):
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=aug.vflip))
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)
