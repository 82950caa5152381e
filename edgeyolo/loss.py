"""The YOLOv3 loss of the seed tutorial (YunYang1994's TF2 YOLOv3), vectorised over the batch.

Per image, summed over predictions, then divided by the batch size ``B`` (the seed's
``reduce_mean(reduce_sum(..., axis=[1, 2, 3, 4]))``)::

    total = lambda_box * box + lambda_obj * obj + lambda_noobj * noobj + lambda_cls * cls

- **Assignment.** Each ground-truth box has exactly one responsible prediction: the anchor with the
  best :func:`~edgeyolo.ops.boxes.wh_iou` among all ``S * A`` anchors (across scales; ties go to
  the first in head order), at the cell ``floor(centre / stride)`` (clamped to the grid) of that
  anchor's head. When two boxes fall on the same (image, head, anchor, cell), the one that comes
  later in ``targets`` wins, as in the seed, where the later box overwrites the label array.
- **box** (responsible predictions only), the decoded prediction against the ground truth, both
  xyxy in input pixels, times the seed's ``bbox_loss_scale = 2 - w * h / (H * W)`` (``w, h``
  the ground-truth size, ``H, W`` the network input size), which weighs small boxes up to 2x:

  - ``giou``: ``1 - GIoU`` (torchvision's ``generalized_box_iou_loss``),
  - ``diou`` / ``ciou``: torchvision's ``distance_box_iou_loss`` / ``complete_box_iou_loss``,
  - ``mse``: darknet's sum-squared error on the t-coordinates,
    ``(s(tx) - tx*)^2 + (s(ty) - ty*)^2 + (tw - tw*)^2 + (th - th*)^2`` with
    ``tx* = cx / stride - cell_x`` and ``tw* = log(w / anchor_w)``.
- **obj**: BCE-with-logits of objectness against 1 at the responsible predictions.
- **noobj**: BCE-with-logits of objectness against 0 at every other prediction, except those
  whose decoded box has IoU ``> ignore_thresh`` with any ground-truth box of the same image (the
  seed's ``respond_bgd`` mask; like darknet, every box of the image counts, not only the boxes
  assigned to that head).
- **cls**: BCE-with-logits of the class logits against the one-hot ground-truth class, at the
  responsible predictions (multi-label, independent sigmoids).

Two parts of the seed are left out on purpose: the focal factor ``(target - sigmoid(obj))^2`` on
the objectness terms and label smoothing of the class targets. The seed also marks every anchor
with IoU > 0.3 as responsible; here one anchor per box is (the original YOLOv3 rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeyolo.config import LossConfig
from edgeyolo.errors import ConfigError
from edgeyolo.ops.boxes import (
    batched_box_iou,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    wh_iou,
)
from edgeyolo.postprocess import decode_boxes, split_head

__all__ = ["COMPONENTS", "Assignment", "YoloLoss", "box_iou_loss"]

#: The loss components, in the order :meth:`YoloLoss.forward` returns and sums them; the trainer
#: logs ``train_<name>`` for each, in this order.
COMPONENTS: tuple[str, ...] = ("box", "obj", "noobj", "cls")


class Assignment(NamedTuple):
    """The responsible predictions of one head, one row per ground-truth box it is given.

    Every field is a ``Tensor[K]`` of int64: the prediction is ``raw[batch, anchor, gy, gx]`` of
    :func:`~edgeyolo.postprocess.split_head`'s output, and ``target`` is the row of ``targets``.
    """

    batch: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    target: Tensor


def box_iou_loss(pred: Tensor, target: Tensor, *, kind: str = "giou") -> Tensor:
    """``1 - IoU``-style loss of paired boxes: GIoU, DIoU or CIoU (torchvision's definitions).

    Args:
        pred (Tensor[K, 4]): xyxy boxes.
        target (Tensor[K, 4]): xyxy boxes, paired with ``pred`` row by row.
        kind: ``"giou"``, ``"diou"`` or ``"ciou"``.

    Returns:
        Tensor[K]: the loss of each pair (0 for identical boxes; GIoU's is in [0, 2]).
    """
    if kind == "giou":
        return generalized_box_iou_loss(pred, target, reduction="none")
    if kind == "diou":
        return distance_box_iou_loss(pred, target, reduction="none")
    if kind == "ciou":
        return complete_box_iou_loss(pred, target, reduction="none")
    raise ValueError(f"unknown IoU loss {kind!r}; use giou, diou or ciou")


class YoloLoss(nn.Module):
    """YOLOv3 loss over raw head maps (see the module docstring for the definition).

    Args:
        anchors (Tensor[S, A, 2]): (w, h) in input pixels, per head in head order (coarsest
            first, so ``anchors[0]`` holds the largest anchors).
        strides: input pixels per cell of each head, e.g. ``(32, 16, 8)``.
        num_classes: ``C``.
        cfg: loss weights, box loss kind and ``ignore_thresh``.
    """

    anchors: Tensor

    def __init__(
        self,
        anchors: Tensor,
        strides: Sequence[int | float],
        num_classes: int,
        cfg: LossConfig = LossConfig(),
    ) -> None:
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors.ndim != 3 or anchors.shape[2] != 2:
            raise ConfigError(f"anchors must have shape [S, A, 2], got {tuple(anchors.shape)}")
        if len(strides) != anchors.shape[0]:
            raise ConfigError(
                f"{len(strides)} strides for {anchors.shape[0]} anchor groups; give one per head"
            )
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.register_buffer("anchors", anchors.clone(), persistent=False)
        self.strides: tuple[float, ...] = tuple(float(s) for s in strides)
        self.num_classes = num_classes
        self.cfg = cfg

    @property
    def num_anchors(self) -> int:
        """``A``, anchors per head."""
        return int(self.anchors.shape[1])

    def assign(self, targets: Tensor, grid_sizes: Sequence[tuple[int, int]]) -> list[Assignment]:
        """Find the responsible prediction of every ground-truth box.

        Args:
            targets (Tensor[M, 6]): rows ``(batch_idx, cls, x1, y1, x2, y2)``, input pixels.
            grid_sizes: ``(h, w)`` of each head map, in head order.

        Returns:
            One :class:`Assignment` per head. A box whose slot is taken by a later box of
            ``targets`` appears nowhere.
        """
        device = targets.device
        anchors = self.anchors.to(device)
        num_a = self.num_anchors
        xyxy = targets[:, 2:6].float()
        wh = xyxy[:, 2:] - xyxy[:, :2]
        centre = 0.5 * (xyxy[:, :2] + xyxy[:, 2:])
        batch = targets[:, 0].long()
        best = wh_iou(wh, anchors.view(-1, 2)).argmax(dim=1)  # [M] in 0..S*A-1
        out: list[Assignment] = []
        for s, ((h, w), stride) in enumerate(zip(grid_sizes, self.strides, strict=True)):
            idx = (best // num_a == s).nonzero().squeeze(1)  # rows of targets on this head
            anchor = best[idx] % num_a
            cell = (centre[idx] / stride).floor().long()
            gx = cell[:, 0].clamp(0, w - 1)
            gy = cell[:, 1].clamp(0, h - 1)
            b = batch[idx]
            # Later boxes win a shared slot: keep the last position of each slot.
            slot = ((b * num_a + anchor) * h + gy) * w + gx
            uniq, inverse = torch.unique(slot, return_inverse=True)
            last = torch.full((uniq.shape[0],), -1, dtype=torch.long, device=device)
            pos = torch.arange(idx.shape[0], device=device)
            last = last.scatter_reduce(0, inverse, pos, reduce="amax").sort().values
            out.append(Assignment(b[last], anchor[last], gy[last], gx[last], idx[last]))
        return out

    def forward(
        self, heads: Sequence[Tensor], targets: Tensor, img_size: tuple[int, int]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a batch.

        Args:
            heads (list of Tensor[B, A*(5+C), h_s, w_s]): raw head maps, coarsest first.
            targets (Tensor[M, 6]): rows ``(batch_idx, cls, x1, y1, x2, y2)`` in pixels of the
                (letterboxed) network input; ``M`` may be 0.
            img_size: ``(H, W)`` of the network input.

        Returns:
            ``(total, components)``: the scalar loss to back-propagate, and the detached scalars
            named in :data:`COMPONENTS` (``"box"``, ``"obj"``, ``"noobj"``, ``"cls"``, in that
            order), each already multiplied by its lambda, so that they sum to ``total``.
        """
        self._check_heads(heads)
        batch_size = heads[0].shape[0]
        device = heads[0].device
        with torch.autocast(device_type=device.type, enabled=False):
            targets = self._check_targets(targets, batch_size, device)
            anchors = self.anchors.to(device)
            assignments = self.assign(targets, [(h.shape[2], h.shape[3]) for h in heads])
            gt_padded = self._pad_targets(targets, batch_size)  # [B, Mmax, 4]
            img_area = float(img_size[0]) * float(img_size[1])

            zero = torch.zeros((), device=device)
            box, obj, noobj, cls = zero, zero, zero, zero
            for s, head in enumerate(heads):
                raw = split_head(head.float(), self.num_anchors)  # [B, A, h, w, 5+C]
                pred_boxes = decode_boxes(raw, anchors[s], self.strides[s])  # [B, A, h, w, 4]
                asg = assignments[s]
                noobj = noobj + self._noobj_term(raw, pred_boxes, asg, gt_padded)
                if asg.target.numel() == 0:
                    continue
                box_s, obj_s, cls_s = self._responsible_terms(
                    raw, pred_boxes, asg, targets, anchors[s], self.strides[s], img_area
                )
                box = box + box_s
                obj = obj + obj_s
                cls = cls + cls_s
            parts = self._weigh({"box": box, "obj": obj, "noobj": noobj, "cls": cls}, batch_size)
            total = parts["box"] + parts["obj"] + parts["noobj"] + parts["cls"]
        return total, {k: v.detach() for k, v in parts.items()}

    def _check_heads(self, heads: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` unless ``heads`` are ``S`` maps of ``[B, A*(5+C), h, w]``."""
        num_s, num_a, num_c = len(self.strides), self.num_anchors, self.num_classes
        if len(heads) != num_s:
            raise ValueError(f"expected {num_s} head maps, got {len(heads)}")
        for s, head in enumerate(heads):
            if head.ndim != 4 or head.shape[1] != num_a * (5 + num_c):
                raise ValueError(
                    f"head {s} has shape {tuple(head.shape)}; expected [B, {num_a * (5 + num_c)}, "
                    f"h, w] for {num_a} anchors and {num_c} classes"
                )

    def _check_targets(self, targets: Tensor, batch_size: int, device: torch.device) -> Tensor:
        """``targets`` as float32 ``Tensor[M, 6]`` on ``device``; ``ValueError`` when a row's
        image index or class is out of range."""
        num_c = self.num_classes
        targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
        if targets.shape[0]:
            bmax, cmax = int(targets[:, 0].max()), int(targets[:, 1].max())
            low = float(targets[:, :2].min())
            if bmax >= batch_size or cmax >= num_c or low < 0:
                raise ValueError(
                    f"targets need batch_idx in [0, {batch_size}) and cls in [0, {num_c}); "
                    f"got batch_idx up to {bmax}, cls up to {cmax}, smallest {low}"
                )
        return targets

    def _noobj_term(
        self, raw: Tensor, pred_boxes: Tensor, asg: Assignment, gt_padded: Tensor
    ) -> Tensor:
        """Summed objectness BCE against 0 over the background predictions of one head.

        Args:
            raw (Tensor[B, A, h, w, 5+C]): the head's raw outputs.
            pred_boxes (Tensor[B, A, h, w, 4]): their decoded xyxy boxes.
            asg: the head's responsible predictions (excluded).
            gt_padded (Tensor[B, Mmax, 4]): ground truth per image; predictions with IoU
                ``> ignore_thresh`` with any of their image's boxes are excluded too.

        Returns:
            Tensor[]: the sum (no lambda, no division by ``B``).
        """
        responsible = torch.zeros(raw.shape[:4], dtype=torch.bool, device=raw.device)
        responsible[asg.batch, asg.anchor, asg.gy, asg.gx] = True
        background = ~responsible
        if gt_padded.shape[1]:
            with torch.no_grad():
                iou = batched_box_iou(pred_boxes.detach().flatten(1, 3), gt_padded)
                ignore = (iou.amax(dim=2) > self.cfg.ignore_thresh).view_as(responsible)
            background &= ~ignore
        obj_logit = raw[..., 4]
        noobj_bce = F.binary_cross_entropy_with_logits(
            obj_logit, torch.zeros_like(obj_logit), reduction="none"
        )
        return (noobj_bce * background).sum()

    def _responsible_terms(
        self,
        raw: Tensor,
        pred_boxes: Tensor,
        asg: Assignment,
        targets: Tensor,
        anchors: Tensor,
        stride: float,
        img_area: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The box, objectness and class sums over the ``K > 0`` responsible predictions of one
        head (no lambdas, no division by ``B``).

        Args:
            raw (Tensor[B, A, h, w, 5+C]): the head's raw outputs.
            pred_boxes (Tensor[B, A, h, w, 4]): their decoded xyxy boxes.
            asg: the head's responsible predictions.
            targets (Tensor[M, 6]): all ground-truth rows; ``asg.target`` indexes them.
            anchors (Tensor[A, 2]): the head's anchors, input pixels.
            stride: the head's input pixels per cell.
            img_area: ``H * W`` of the network input (for the small-box weight).

        Returns:
            ``(box, obj, cls)``, each a ``Tensor[]``.
        """
        p = raw[asg.batch, asg.anchor, asg.gy, asg.gx]  # [K, 5+C]
        gt = targets[asg.target]  # [K, 6]
        gt_xyxy = gt[:, 2:6]
        gt_wh = gt_xyxy[:, 2:] - gt_xyxy[:, :2]
        scale = 2.0 - gt_wh[:, 0] * gt_wh[:, 1] / img_area
        if self.cfg.box_loss == "mse":
            anchor_wh = anchors[asg.anchor]  # [K, 2]
            cell = torch.stack((asg.gx, asg.gy), dim=1).float()
            t_xy = 0.5 * (gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / stride - cell
            t_wh = torch.log(gt_wh.clamp(min=1e-6) / anchor_wh)
            per_box = ((p[:, 0:2].sigmoid() - t_xy) ** 2).sum(1) + ((p[:, 2:4] - t_wh) ** 2).sum(1)
        else:
            pred = pred_boxes[asg.batch, asg.anchor, asg.gy, asg.gx]  # [K, 4]
            per_box = box_iou_loss(pred, gt_xyxy, kind=self.cfg.box_loss)
        box = (per_box * scale).sum()
        obj = F.binary_cross_entropy_with_logits(p[:, 4], torch.ones_like(p[:, 4]), reduction="sum")
        one_hot = F.one_hot(gt[:, 1].long(), self.num_classes).float()
        cls = F.binary_cross_entropy_with_logits(p[:, 5:], one_hot, reduction="sum")
        return box, obj, cls

    def _weigh(self, sums: dict[str, Tensor], batch_size: int) -> dict[str, Tensor]:
        """Each sum times its lambda, over ``B``; keys in :data:`COMPONENTS` order."""
        cfg = self.cfg
        lambdas = {
            "box": cfg.lambda_box,
            "obj": cfg.lambda_obj,
            "noobj": cfg.lambda_noobj,
            "cls": cfg.lambda_cls,
        }
        return {k: lambdas[k] * sums[k] / batch_size for k in COMPONENTS}

    @staticmethod
    def _pad_targets(targets: Tensor, batch_size: int) -> Tensor:
        """Ground-truth boxes per image, padded with all-zero boxes.

        Returns:
            Tensor[B, Mmax, 4]: xyxy; a padding box has IoU 0 with every box, so it never
            reaches ``ignore_thresh`` (which is > 0).
        """
        num = targets.shape[0]
        if num == 0:
            return targets.new_zeros((batch_size, 0, 4))
        batch = targets[:, 0].long()
        counts = torch.bincount(batch, minlength=batch_size)
        order = torch.argsort(batch, stable=True)
        batch_sorted = batch[order]
        starts = counts.cumsum(0) - counts
        rank = torch.arange(num, device=targets.device) - starts[batch_sorted]
        padded = targets.new_zeros((batch_size, int(counts.max()), 4))
        padded[batch_sorted, rank] = targets[order, 2:6]
        return padded
