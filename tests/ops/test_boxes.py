from __future__ import annotations

import pytest
import torch

from edgeyolo.ops import (
    batched_box_iou,
    box_iou,
    cxcywh_to_xyxy,
    make_grid,
    wh_iou,
    xyxy_to_cxcywh,
)


def test_xywh_xyxy_round_trip_by_hand() -> None:
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    xyxy = torch.tensor([[8.0, 17.0, 12.0, 23.0], [-1.0, -1.0, 1.0, 1.0]])
    torch.testing.assert_close(cxcywh_to_xyxy(xywh), xyxy)
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), xywh)


def test_box_conversions_keep_leading_dims() -> None:
    boxes = torch.rand(2, 3, 5, 4)
    assert cxcywh_to_xyxy(boxes).shape == (2, 3, 5, 4)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(boxes)), boxes)


def test_wh_iou_by_hand() -> None:
    wh1 = torch.tensor([[4.0, 4.0], [4.0, 2.0]])
    wh2 = torch.tensor([[2.0, 2.0], [2.0, 4.0], [4.0, 4.0]])
    # [4x4 vs 2x2] inter 4, union 16 -> 1/4; [4x4 vs 2x4] inter 8, union 16 -> 1/2; identical -> 1
    # [4x2 vs 2x2] inter 4, union 8 -> 1/2; [4x2 vs 2x4] inter 4, union 12 -> 1/3;
    # [4x2 vs 4x4] inter 8, union 16 -> 1/2
    expected = torch.tensor([[0.25, 0.5, 1.0], [0.5, 1.0 / 3.0, 0.5]])
    torch.testing.assert_close(wh_iou(wh1, wh2), expected)


def test_wh_iou_of_empty_boxes_is_zero() -> None:
    out = wh_iou(torch.zeros(1, 2), torch.zeros(1, 2))
    assert out.item() == 0.0


def test_batched_box_iou_by_hand_and_against_torchvision() -> None:
    a = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    b = torch.tensor([[[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]]])
    # overlap 1x1 = 1, union 4 + 4 - 1 = 7; disjoint -> 0; all-zero padding box -> 0
    torch.testing.assert_close(batched_box_iou(a, b), torch.tensor([[[1.0 / 7.0, 0.0, 0.0]]]))

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 7, 2, generator=gen) * 50
    boxes1 = torch.cat((xy, xy + 1 + torch.rand(3, 7, 2, generator=gen) * 30), dim=-1)
    xy = torch.rand(3, 4, 2, generator=gen) * 50
    boxes2 = torch.cat((xy, xy + 1 + torch.rand(3, 4, 2, generator=gen) * 30), dim=-1)
    out = batched_box_iou(boxes1, boxes2)
    for i in range(3):
        torch.testing.assert_close(out[i], box_iou(boxes1[i], boxes2[i]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_make_grid(dtype: torch.dtype) -> None:
    grid = make_grid(2, 3, dtype=dtype)
    assert grid.shape == (2, 3, 2)
    assert grid.dtype == dtype
    for y in range(2):
        for x in range(3):
            assert grid[y, x].tolist() == [x, y]
