from __future__ import annotations

import math

import pytest
import torch

from edgeyolo.config import YOLOV3_ANCHORS, LossConfig
from edgeyolo.loss import COMPONENTS, YoloLoss, box_iou_loss
from edgeyolo.ops import generalized_box_iou

A = 3
C = 2  # classes in the one-head setup
CH = 5 + C
STRIDE = 32
IMG = (128, 128)  # one 4x4 head
#: One head, anchors (w, h): 20x30, 50x40, 100x110.
ANCHORS = torch.tensor([[[20.0, 30.0], [50.0, 40.0], [100.0, 110.0]]])
#: A ground-truth box of exactly anchor 1's size, centred on cell (x=1, y=2): centre (48, 80).
GT_BOX = [23.0, 60.0, 73.0, 100.0]


def _heads(batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, A * CH, 4, 4)]


def _set(head: torch.Tensor, b: int, a: int, y: int, x: int, k: int, value: float) -> None:
    """Set channel ``k`` (0..4 = tx, ty, tw, th, obj; 5.. = classes) of one prediction."""
    head[b, a * CH + k, y, x] = value


def _targets(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def _loss(**cfg: float | str) -> YoloLoss:
    return YoloLoss(ANCHORS, (STRIDE,), C, LossConfig(**cfg))


def _softplus(x: float) -> float:
    """BCE-with-logits of logit ``x`` against target 0."""
    return math.log1p(math.exp(x))


# ------------------------------------------------------------------------------------- IoU losses


def test_giou_of_disjoint_nested_and_overlapping_boxes_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    gt = torch.tensor([[3.0, 0.0, 5.0, 2.0], [1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 3.0]])
    # disjoint: IoU 0, union 4 + 4 = 8, hull (0,0)-(5,2) = 10 -> GIoU = 0 - (10 - 8) / 10 = -0.2
    # nested: inter 4, union 16, IoU 1/4, hull = the outer box (16) -> GIoU = 0.25
    # overlapping: inter 1, union 7, hull (0,0)-(3,3) = 9 -> GIoU = 1/7 - 2/9 = -5/63
    giou = torch.tensor([-0.2, 0.25, -5.0 / 63.0])
    torch.testing.assert_close(generalized_box_iou(pred, gt).diagonal(), giou)
    torch.testing.assert_close(box_iou_loss(pred, gt, kind="giou"), 1.0 - giou)


def test_box_iou_loss_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="mse"):
        box_iou_loss(torch.zeros(1, 4), torch.zeros(1, 4), kind="mse")


# ----------------------------------------------------------------------------------------- box


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou", "mse"])
def test_exact_prediction_has_zero_box_loss(kind: str) -> None:
    # Zero logits decode to a box of the anchor's size centred on the cell: exactly GT_BOX.
    _, parts = _loss(box_loss=kind)(_heads(), _targets([0, 1, *GT_BOX]), IMG)
    assert parts["box"].item() <= 1e-6


def test_box_loss_scale_by_hand() -> None:
    # The responsible prediction (anchor 1, cell x=1 y=2) twice as wide as the ground truth:
    # pred (-2, 60, 98, 100), 100 x 40, holds the 50 x 40 GT -> IoU = 2000 / 4000 = 0.5, and the
    # hull is pred itself -> GIoU = 0.5, DIoU = 0.5 (same centre).
    heads = _heads()
    _set(heads[0], 0, 1, 2, 1, 2, math.log(2.0))
    scale = 2.0 - (50.0 * 40.0) / (128.0 * 128.0)  # = 1.8779296875
    targets = _targets([0, 1, *GT_BOX])

    _, parts = _loss(box_loss="giou")(heads, targets, IMG)
    assert parts["box"].item() == pytest.approx((1.0 - 0.5) * scale, rel=1e-6)
    _, parts = _loss(box_loss="diou")(heads, targets, IMG)
    assert parts["box"].item() == pytest.approx((1.0 - 0.5) * scale, rel=1e-6)
    # CIoU adds alpha * v, v = 4 / pi^2 * (atan(50/40) - atan(100/40))^2, alpha = v / (1 - IoU + v)
    v = 4.0 / math.pi**2 * (math.atan(50.0 / 40.0) - math.atan(100.0 / 40.0)) ** 2
    alpha = v / (1.0 - 0.5 + v)
    _, parts = _loss(box_loss="ciou")(heads, targets, IMG)
    assert parts["box"].item() == pytest.approx((1.0 - 0.5 + alpha * v) * scale, rel=1e-5)
    # mse: tw* = log(50 / 50) = 0, tw = log 2; x, y, h exact
    _, parts = _loss(box_loss="mse")(heads, targets, IMG)
    assert parts["box"].item() == pytest.approx(math.log(2.0) ** 2 * scale, rel=1e-6)

    # A non-square input changes only the scale: H * W = 128 * 256.
    _, parts = _loss(box_loss="giou")(heads, targets, (128, 256))
    assert parts["box"].item() == pytest.approx(0.5 * (2.0 - 2000.0 / 32768.0), rel=1e-6)


def test_mse_targets_by_hand() -> None:
    # GT 50x40 centred at (40, 72): cell (1, 2), sigmoid(tx)* = 40/32 - 1 = 0.25,
    # sigmoid(ty)* = 72/32 - 2 = 0.25; zero logits give 0.5 -> 2 * 0.25^2 = 0.125.
    scale = 2.0 - 2000.0 / 16384.0
    _, parts = _loss(box_loss="mse")(_heads(), _targets([0, 0, 15, 52, 65, 92]), IMG)
    assert parts["box"].item() == pytest.approx(0.125 * scale, rel=1e-6)


# ----------------------------------------------------------------------------------- objectness


def _noobj_with_logit(iou_height: float, logit: float) -> float:
    """noobj when anchor 0 (20x30) at the GT's cell decodes to a 50 x ``iou_height`` box inside
    the GT (same centre, so IoU = iou_height / 40) and has objectness logit ``logit``."""
    heads = _heads()
    _set(heads[0], 0, 0, 2, 1, 2, math.log(50.0 / 20.0))
    _set(heads[0], 0, 0, 2, 1, 3, math.log(iou_height / 30.0))
    _set(heads[0], 0, 0, 2, 1, 4, logit)
    _, parts = _loss()(heads, _targets([0, 1, *GT_BOX]), IMG)
    return parts["noobj"].item()


def test_ignore_mask_skips_predictions_overlapping_a_gt() -> None:
    # IoU 24 / 40 = 0.6 > ignore_thresh 0.5: its objectness does not enter noobj.
    assert _noobj_with_logit(24.0, 3.0) == pytest.approx(_noobj_with_logit(24.0, 0.0), abs=1e-5)
    # IoU 16 / 40 = 0.4: it is background, noobj grows by BCE(3, 0) - BCE(0, 0).
    diff = _noobj_with_logit(16.0, 3.0) - _noobj_with_logit(16.0, 0.0)
    assert diff == pytest.approx(_softplus(3.0) - _softplus(0.0), abs=1e-4)


def test_responsible_prediction_is_never_background() -> None:
    # Make the responsible prediction's box bad (IoU 0.25 with the GT, under ignore_thresh):
    # its objectness still goes only to obj.
    def parts(logit: float) -> dict[str, float]:
        heads = _heads()
        _set(heads[0], 0, 1, 2, 1, 2, math.log(2.0))
        _set(heads[0], 0, 1, 2, 1, 3, math.log(2.0))
        _set(heads[0], 0, 1, 2, 1, 4, logit)
        _, p = _loss()(heads, _targets([0, 1, *GT_BOX]), IMG)
        return {k: v.item() for k, v in p.items()}

    low, high = parts(0.0), parts(3.0)
    assert high["noobj"] == pytest.approx(low["noobj"], abs=1e-5)
    assert low["obj"] == pytest.approx(_softplus(-0.0), rel=1e-6)
    assert high["obj"] == pytest.approx(_softplus(-3.0), rel=1e-6)


def test_no_targets_gives_only_noobj() -> None:
    gen = torch.Generator().manual_seed(1)
    heads = [torch.randn(2, A * CH, 4, 4, generator=gen, requires_grad=True)]
    total, parts = _loss()(heads, torch.zeros(0, 6), IMG)
    assert parts["box"].item() == parts["obj"].item() == parts["cls"].item() == 0.0
    obj_logits = heads[0].detach().view(2, A, CH, 4, 4)[:, :, 4]
    expected = torch.nn.functional.softplus(obj_logits).sum().item() / 2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert heads[0].grad is not None


def test_class_loss_by_hand() -> None:
    # Class logits (2, -1) at the responsible prediction, GT class 1:
    # BCE(2, 0) + BCE(-1, 1) = softplus(2) + softplus(1).
    heads = _heads()
    _set(heads[0], 0, 1, 2, 1, 5, 2.0)
    _set(heads[0], 0, 1, 2, 1, 6, -1.0)
    _, parts = _loss()(heads, _targets([0, 1, *GT_BOX]), IMG)
    assert parts["cls"].item() == pytest.approx(_softplus(2.0) + _softplus(1.0), rel=1e-6)


# ----------------------------------------------------------------------------------- assignment


def _yolov3_loss() -> YoloLoss:
    # Heads coarsest first: the largest anchors belong to stride 32.
    anchors = torch.tensor(YOLOV3_ANCHORS, dtype=torch.float32).view(3, 3, 2).flip(0)
    return YoloLoss(anchors, (32, 16, 8), 1)


def test_assignment_picks_the_best_anchor_across_scales() -> None:
    loss = _yolov3_loss()
    targets = _targets(
        [0, 0, 200 - 186.5, 300 - 163, 200 + 186.5, 300 + 163],  # 373x326 -> stride 32, anchor 2
        [0, 0, 100, 100, 110, 113],  # 10x13 centred (105, 106.5) -> stride 8, anchor 0
        [0, 0, 0, 0, 62, 45],  # 62x45 centred (31, 22.5) -> stride 16, anchor 1
        [1, 0, 400, 400, 416, 416],  # 16x16 -> 16x30 (IoU 256/480) -> stride 8, anchor 1, cell 51
    )
    asg = loss.assign(targets, [(13, 13), (26, 26), (52, 52)])
    got = [
        [
            (int(t), int(b), int(a), int(y), int(x))
            for t, b, a, y, x in zip(s.target, s.batch, s.anchor, s.gy, s.gx, strict=True)
        ]
        for s in asg
    ]
    assert got == [
        [(0, 0, 2, 9, 6)],  # floor(300/32) = 9, floor(200/32) = 6
        [(2, 0, 1, 1, 1)],  # floor(22.5/16) = 1, floor(31/16) = 1
        [(1, 0, 0, 13, 13), (3, 1, 1, 51, 51)],  # floor(106.5/8) = 13, floor(105/8) = 13
    ]

    # Through forward: with zero logits, obj = 4 responsible predictions x BCE(0, 1) / B = 2.
    heads = [torch.zeros(2, 18, s, s) for s in (13, 26, 52)]
    _, parts = loss(heads, targets, (416, 416))
    assert parts["obj"].item() == pytest.approx(4 * math.log(2.0) / 2, rel=1e-6)


def test_centre_on_the_far_edge_is_clamped_to_the_grid() -> None:
    asg = _loss().assign(_targets([0, 0, 108, 108, 128, 128]), [(4, 4)])
    assert (asg[0].gy.item(), asg[0].gx.item()) == (3, 3)  # floor(118/32) = 3
    asg = _loss().assign(_targets([0, 0, 118, 118, 138, 138]), [(4, 4)])  # centre 128 -> 4 -> 3
    assert (asg[0].gy.item(), asg[0].gx.item()) == (3, 3)


def test_later_target_wins_a_shared_slot() -> None:
    targets = _targets([0, 0, *GT_BOX], [0, 1, 24, 61, 72, 99], [1, 0, *GT_BOX])
    (asg,) = _loss().assign(targets, [(4, 4)])
    assert asg.target.tolist() == [1, 2]  # row 0 lost its slot to row 1; row 2 is image 1
    assert asg.batch.tolist() == [0, 1]


# ----------------------------------------------------------------------------- totals and shapes


def _random_case(batch: int = 2, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    heads = [torch.randn(batch, A * CH, 4, 4, generator=gen) * 0.5]
    targets = _targets(
        [0, 0, 10, 10, 40, 60], [0, 1, 50, 20, 120, 100], [1, 1, *GT_BOX], [1, 0, 5, 90, 30, 120]
    )
    return heads, targets


def test_components_sum_to_total_and_lambdas_scale_them() -> None:
    heads, targets = _random_case()
    total, parts = _loss()(heads, targets, IMG)
    assert tuple(parts) == COMPONENTS == ("box", "obj", "noobj", "cls")  # the one order
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())
    assert total.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)
    assert all(v.item() > 0 for v in parts.values())

    lambdas = {"box": 2.0, "obj": 3.0, "noobj": 0.5, "cls": 4.0}
    total2, parts2 = _loss(**{f"lambda_{k}": v for k, v in lambdas.items()})(heads, targets, IMG)
    for k, lam in lambdas.items():
        assert parts2[k].item() == pytest.approx(lam * parts[k].item(), rel=1e-6)
    assert total2.item() == pytest.approx(sum(v.item() for v in parts2.values()), rel=1e-6)


def test_loss_does_not_depend_on_batch_size() -> None:
    heads, targets = _random_case()
    total, parts = _loss()(heads, targets, IMG)
    doubled = torch.cat((targets, targets + torch.tensor([2.0, 0, 0, 0, 0, 0])))
    total2, parts2 = _loss()([torch.cat((heads[0], heads[0]))], doubled, IMG)
    assert total2.item() == pytest.approx(total.item(), rel=1e-6)
    for k in parts:
        assert parts2[k].item() == pytest.approx(parts[k].item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["giou", "mse"])
def test_optimizer_steps_reduce_the_loss(kind: str) -> None:
    heads, targets = _random_case()
    param = torch.nn.Parameter(heads[0].clone())
    loss_fn = _loss(box_loss=kind)
    opt = torch.optim.Adam([param], lr=0.1)
    first, first_parts = loss_fn([param], targets, IMG)
    for _ in range(10):
        opt.zero_grad()
        total, _ = loss_fn([param], targets, IMG)
        total.backward()
        opt.step()
    last, parts = loss_fn([param], targets, IMG)
    assert last.item() < 0.7 * first.item()
    for k in parts:
        assert parts[k].item() < first_parts[k].item(), k


def test_runs_in_float32_under_autocast() -> None:
    heads, targets = _random_case()
    low = [heads[0].to(torch.bfloat16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = _loss()(low, targets, IMG)
    assert total.dtype == torch.float32
    ref, _ = _loss()([low[0].float()], targets, IMG)
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="cls"):
        _loss()(_heads(), _targets([0, 5, *GT_BOX]), IMG)
    with pytest.raises(ValueError, match="batch_idx"):
        _loss()(_heads(), _targets([1, 0, *GT_BOX]), IMG)
    with pytest.raises(ValueError, match="head 0"):
        _loss()([torch.zeros(1, 20, 4, 4)], _targets(), IMG)
    with pytest.raises(ValueError, match="head maps"):
        _loss()(_heads() * 2, _targets(), IMG)
