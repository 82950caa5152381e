"""The torch Dataset of annotated images, and its collate function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeyolo.config import AugmentConfig
from edgeyolo.data.images import read_rgb
from edgeyolo.data.mosaic import mosaic4, mosaic_centre_range
from edgeyolo.data.records import ImageRecord
from edgeyolo.data.transforms import (
    LetterboxParams,
    eval_transforms,
    letterbox_params,
    train_transforms,
)

Sample = tuple[Tensor, Tensor, int]


class DetectionDataset(Dataset[Sample]):
    """Letterboxed (and, for training, augmented) images with their boxes.

    ``dataset[i]`` is ``(image, targets, i)``: ``image`` float32[3, S, S] RGB in 0..1,
    ``targets`` float32[N, 5] rows ``(cls, x1, y1, x2, y2)`` in letterboxed pixels.
    ``augment`` None or with ``enabled=False`` gives the evaluation transform (letterbox only).
    ``cache=True`` keeps decoded images in memory (one cache per DataLoader worker process);
    :meth:`preload` decodes them all at once, in this process, so that loader workers started
    after it (forked) share the one decoded copy instead of each decoding every epoch.

    With probability :attr:`mosaic` (``augment.mosaic``; 0 when augmentation is off) a sample
    is a :func:`~edgeyolo.data.mosaic.mosaic4` of image ``i`` and three others drawn at random,
    then the same transform. Its draws come from torch's generator, as the v2 transforms' do,
    and none is made when :attr:`mosaic` is 0. The trainer sets :attr:`mosaic` to 0 for the
    last ``augment.close_mosaic`` epochs, and :attr:`augmenting` to False (the evaluation
    transform, no mosaic) for the last ``augment.close_aug``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        img_size: int = 416,
        augment: AugmentConfig | None = None,
        cache: bool = False,
    ) -> None:
        self.records = list(records)
        self.img_size = img_size
        self.augment = augment
        self.cache = cache
        self._images: dict[int, np.ndarray] = {}
        self.mosaic = augment.mosaic if augment is not None and augment.enabled else 0.0
        self._eval_transform = eval_transforms(img_size)
        self._train_transform = (
            train_transforms(img_size, augment)
            if augment is not None and augment.enabled
            else self._eval_transform
        )
        self.augmenting = True

    @property
    def transform(self) -> v2.Compose:
        """The training transform while :attr:`augmenting` (and augmentation is on), else the
        evaluation transform (letterbox only)."""
        return self._train_transform if self.augmenting else self._eval_transform

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> np.ndarray:
        """The original image of record ``i``, ``uint8[H, W, 3]`` RGB."""
        if i in self._images:
            return self._images[i]
        r = self.records[i]
        image = read_rgb(str(r.path), width=r.width, height=r.height)
        if self.cache:
            self._images[i] = image
        return image

    def preload(self) -> int:
        """Decode every image now and keep it (``uint8[H, W, 3]``, turns :attr:`cache` on);
        returns the bytes held. Raises DataError naming the first file that cannot be read."""
        self.cache = True
        for i in range(len(self)):
            self.load_image(i)
        return sum(a.nbytes for a in self._images.values())

    def __getitem__(self, i: int) -> Sample:
        i = range(len(self))[i]  # IndexError and negative indices as for a list
        if self.augmenting and self.mosaic > 0 and float(torch.rand(())) < self.mosaic:
            array, boxes, classes = self.mosaic_sample(i)
        else:
            r = self.records[i]
            array, boxes, classes = self.load_image(i), r.boxes.copy(), r.classes.copy()
        image, targets = from_v2(*self.transform(*to_v2(array, boxes, classes)))
        return image, targets, i

    def mosaic_sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``i`` and three others drawn at random (torch's generator), tiled by
        :func:`~edgeyolo.data.mosaic.mosaic4` around a random point of the canvas's middle half:
        ``(uint8[S, S, 3], float32[K, 4] xyxy, int64[K])`` at ``S = img_size``."""
        others = torch.randint(len(self), (3,)).tolist()
        low, high = mosaic_centre_range(self.img_size)
        centre = torch.randint(low, high + 1, (2,)).tolist()
        picks = [i, *others]
        return mosaic4(
            [self.load_image(k) for k in picks],
            [self.records[k].boxes for k in picks],
            [self.records[k].classes for k in picks],
            size=self.img_size,
            centre=(centre[0], centre[1]),
        )

    def letterbox_meta(self, i: int) -> LetterboxParams:
        """``(scale, pad_x, pad_y)`` of image ``i``: map predictions back to original pixels
        with :func:`~edgeyolo.data.transforms.boxes_from_letterbox`."""
        r = self.records[i]
        return letterbox_params(r.width, r.height, self.img_size)


def to_v2(
    array: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """An image (``uint8[H, W, 3]``), its xyxy boxes (``float[N, 4]``, pixels) and classes
    (``int[N]``) as the v2 transforms take them: ``(Image, {"boxes", "labels"})``. The tensors
    share the arrays' memory."""
    image = tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.from_numpy(boxes), format="XYXY", canvas_size=tuple(array.shape[:2])
        ),
        "labels": torch.from_numpy(classes),
    }
    return image, target


def from_v2(image: Any, target: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A transformed ``(Image, {"boxes", "labels"})`` as the sample's ``(image, targets)``:
    ``targets`` float32[N, 5] rows ``(cls, x1, y1, x2, y2)``."""
    boxes = target["boxes"].as_subclass(Tensor).float()
    targets = torch.cat([target["labels"].float()[:, None], boxes], dim=1)
    return image.as_subclass(Tensor), targets


def collate(batch: Sequence[Sample]) -> tuple[Tensor, Tensor, list[int]]:
    """Stack samples: ``(float32[B, 3, S, S], float32[M, 6] rows (batch_idx, cls, x1, y1, x2,
    y2), [dataset indices])``."""
    images = torch.stack([image for image, _, _ in batch])
    targets = torch.cat(
        [
            torch.cat([torch.full((len(t), 1), float(b)), t], dim=1)
            for b, (_, t, _) in enumerate(batch)
        ]
    ).reshape(-1, 6)
    return images, targets, [index for _, _, index in batch]
