"""Drawing detections on images with OpenCV."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeyolo.lazy import CV2 as cv2

# One colour per class, cycled (RGB). A fixed palette keeps a class's colour stable across runs.
PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (255, 56, 56),
    (255, 157, 151),
    (255, 112, 31),
    (255, 178, 29),
    (207, 210, 49),
    (72, 249, 10),
    (146, 204, 23),
    (61, 219, 134),
    (26, 147, 52),
    (0, 212, 187),
    (44, 153, 168),
    (0, 194, 255),
    (52, 69, 147),
    (100, 115, 255),
    (0, 24, 236),
    (132, 56, 255),
    (82, 0, 133),
    (203, 56, 255),
    (255, 149, 200),
    (255, 55, 199),
)


def class_color(label: int, *, bgr: bool = False) -> tuple[int, int, int]:
    """The palette colour of class ``label``, as RGB (or BGR when ``bgr``)."""
    r, g, b = PALETTE_RGB[int(label) % len(PALETTE_RGB)]
    return (b, g, r) if bgr else (r, g, b)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    bgr: bool = False,
    thickness: int = 2,
) -> np.ndarray:
    """Draw boxes with ``"<class name> <score>"`` captions on a copy of ``image``.

    Args:
        image: ``uint8[H, W, 3]``, RGB unless ``bgr`` is true (the channel order only changes
            which colours land where; the input is never modified).
        boxes: ``float[K, 4]`` xyxy in pixels of ``image``.
        scores: ``float[K]``.
        labels: ``int[K]``; a label without a name in ``names`` is written as its number.
        names: class names.
        bgr: ``image`` is in OpenCV's BGR order.
        thickness: box line width in pixels.

    Returns:
        ``uint8[H, W, 3]``, a new array in the same channel order as ``image``.
    """
    out = np.ascontiguousarray(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    h, w = out.shape[:2]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(h, w) / 1000)
    font_thickness = max(1, thickness - 1)
    for box, score, label in zip(boxes, scores, labels, strict=True):
        if not np.isfinite(box).all():
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = class_color(int(label), bgr=bgr)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, lineType=cv2.LINE_AA)
        name = names[label] if 0 <= label < len(names) else str(label)
        caption = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(caption, font, font_scale, font_thickness)
        # Caption above the box when there is room, else just inside its top edge.
        top = y1 - th - base - thickness if y1 - th - base - thickness >= 0 else y1
        left = min(max(x1, 0), max(w - tw, 0))
        cv2.rectangle(out, (left, top), (left + tw, top + th + base), color, cv2.FILLED)
        cv2.putText(
            out,
            caption,
            (left, top + th),
            font,
            font_scale,
            (255, 255, 255),
            font_thickness,
            lineType=cv2.LINE_AA,
        )
    return out
