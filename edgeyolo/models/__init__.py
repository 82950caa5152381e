"""YOLOv3 / YOLOv3-tiny models (darknet topology), anchor fitting and model summaries."""

from edgeyolo.models.anchors import (
    anchor_iou,
    anchors_for_boxes,
    best_possible_recall,
    kmeans_anchors,
    mean_best_iou,
)
from edgeyolo.models.common import ConvBNAct
from edgeyolo.models.darknet import Darknet53, DarknetTiny, darknet_layers
from edgeyolo.models.info import count_flops, darknet_param_count, model_info
from edgeyolo.models.yolov3 import YOLOv3, build_model

__all__ = [
    "ConvBNAct",
    "Darknet53",
    "DarknetTiny",
    "YOLOv3",
    "anchor_iou",
    "anchors_for_boxes",
    "best_possible_recall",
    "build_model",
    "count_flops",
    "darknet_layers",
    "darknet_param_count",
    "kmeans_anchors",
    "mean_best_iou",
    "model_info",
]
