"""Darknet ``.cfg`` text: the official files are read, ours match them, anything else is refused.

``data/yolov3.cfg`` and ``data/yolov3-tiny.cfg`` are darknet's own (pjreddie/darknet ``cfg/``,
commit f6afaab, public domain), byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeyolo.config import YOLOV3_ANCHORS, ExportConfig, ModelConfig
from edgeyolo.errors import ConfigError
from edgeyolo.models import build_model, darknet_layers
from edgeyolo.models.common import BN_EPS
from edgeyolo.models.darknet import DARKNET53_BLOCKS
from edgeyolo.models.darknet_cfg import (
    _DARKNET53_BLOCKS,
    COCO_NAMES,
    MAX_EPS,
    MODEL_EPS,
    cfg_text,
    check_eps,
    describe_cfg,
    official_layers,
    parse_cfg,
    read_cfg,
    recorded_eps,
    write_cfg,
)

DATA = Path(__file__).parent / "data"
OFFICIAL = {arch: (DATA / f"{arch}.cfg").read_text() for arch in ("yolov3", "yolov3-tiny")}
TINY = OFFICIAL["yolov3-tiny"]


def test_constants_match_the_models() -> None:
    assert MODEL_EPS == BN_EPS and _DARKNET53_BLOCKS == DARKNET53_BLOCKS
    assert len(COCO_NAMES) == 80 and COCO_NAMES[0] == "person" and COCO_NAMES[-1] == "toothbrush"
    assert COCO_NAMES[62] == "tvmonitor"  # darknet's coco.names spelling


@pytest.mark.parametrize(("arch", "size"), [("yolov3", 608), ("yolov3-tiny", 416)])
def test_official_cfgs_are_read(arch: str, size: int) -> None:
    d = read_cfg(DATA / f"{arch}.cfg")
    assert (d.arch, d.classes, d.img_size, d.eps) == (arch, 80, size, None)
    config = d.model_config()
    assert config.anchors is None and config.names == COCO_NAMES
    assert (config.arch, config.num_classes, config.img_size) == (arch, 80, size)
    if arch == "yolov3":  # head 0 (stride 32) takes mask 6,7,8: the three largest
        assert d.anchors[0] == tuple(YOLOV3_ANCHORS[6:]) and d.anchors[2] == tuple(
            YOLOV3_ANCHORS[:3]
        )


@pytest.mark.parametrize("arch", ["yolov3", "yolov3-tiny"])
def test_official_layer_lists_are_the_models_convs(arch: str) -> None:
    """Each [convolutional] of the official list is, in order, the conv of our model that a
    .weights file fills: filters, size, stride, BatchNorm or bias."""
    model = build_model(ModelConfig(arch=arch, num_classes=7))
    convs = [s for s in official_layers(arch, 7) if s.kind == "convolutional"]
    ours = darknet_layers(model)
    assert len(convs) == len(ours) == (75 if arch == "yolov3" else 13)
    for s, (conv, bn) in zip(convs, ours, strict=True):
        o = s.options
        assert int(o["filters"]) == conv.out_channels and int(o["size"]) == conv.kernel_size[0]
        assert int(o["stride"]) == conv.stride[0]
        assert (o.get("batch_normalize") == "1") == (bn is not None)


def test_written_cfg_is_the_official_text_for_the_official_model() -> None:
    """80 classes, darknet's anchors: every section after [net] has exactly the official keys
    and values (blanks aside); [net] matches yolov3-tiny.cfg's whole (batch=1), and yolov3.cfg's
    but for its training batch and 608 input."""
    for arch, text in OFFICIAL.items():
        size = 608 if arch == "yolov3" else 416
        ours = parse_cfg(cfg_text(ModelConfig(arch=arch), img_size=size))
        theirs = parse_cfg(text)
        assert [s.kind for s in ours] == [s.kind for s in theirs]
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            assert a.options == b.options, (a.line, b.line)
        net = {k: v for k, v in theirs[0].options.items() if k not in ("batch", "subdivisions")}
        assert {k: v for k, v in ours[0].options.items() if k not in net} == {
            "batch": "1",
            "subdivisions": "1",
        }
        assert {k: ours[0].options[k] for k in net} == net


def test_written_cfg_layout_suits_line_oriented_readers() -> None:
    """NVIDIA's yolov3_onnx parser splits sections at blank lines, drops everything before the
    first '[' and parses [net] up to its first blank line: so each section ends with a blank
    line, the header comments hold no '[', and steps/scales (lists) follow [net]'s blank line."""
    text = cfg_text(ModelConfig(arch="yolov3-tiny", num_classes=5), eps=1e-6)
    comments, rest = text.split("[net]", 1)
    assert "[" not in comments and all(line.startswith("#") for line in comments.split("\n")[:3])
    assert text.endswith("\n\n")
    blocks = ("[net]" + rest).split("\n\n")
    assert blocks[-1] == "" and "steps" not in blocks[0] and blocks[1].startswith("learning_rate")
    assert all(b.startswith("[") for b in blocks[2:-1])
    assert all(line.count("=") == 1 for line in text.splitlines() if line and line[0] not in "#[")


def test_round_trip_of_classes_size_anchors_and_eps(tmp_path: Path) -> None:
    anchors = tuple((3.5 + i, 4.25 + 2 * i) for i in range(6))
    config = ModelConfig(arch="yolov3-tiny", num_classes=7, img_size=320, anchors=anchors)
    path = write_cfg(tmp_path / "m.cfg", config, eps=1e-6)
    d = read_cfg(path)
    assert (d.arch, d.classes, d.img_size, d.eps, d.source) == (
        "yolov3-tiny",
        7,
        320,
        1e-6,
        str(path),
    )
    back = d.model_config()
    assert back.anchors == anchors and back.names == tuple(f"class{i}" for i in range(7))
    assert "filters=36" in path.read_text()  # 3 * (5 + 7)
    assert d.model_config(names=list("abcdefg")).names == tuple("abcdefg")
    assert [p.name for p in tmp_path.iterdir()] == ["m.cfg"]  # atomic: no temporary left


def test_first_tiny_release_mask_123_maps_to_its_anchors() -> None:
    """yolov3-tiny.cfg as first released said ``mask = 1,2,3`` for its second head: that head
    runs on anchors 23,27 37,58 81,82, which edgeyolo's sorted anchors express exactly."""
    d = describe_cfg(TINY.replace("mask = 0,1,2", "mask = 1,2,3"))
    assert d.anchors[1] == ((23.0, 27.0), (37.0, 58.0), (81.0, 82.0))
    config = d.model_config()
    assert config.anchors == ((23, 27), (37, 58), (81, 82), (81, 82), (135, 169), (344, 319))
    model = build_model(config)
    assert model.anchors[1].tolist() == [[23, 27], [37, 58], [81, 82]]  # head 1 (stride 16)


TOPOLOGY_IDS = ["size", "route", "pool", "activation", "key"]
TOPOLOGY_IDS += ["kind", "extra", "filters", "from", "region"]


def edit(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text
    return text.replace(old, new, count)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            edit(TINY, "filters=512\nsize=3", "filters=512\nsize=1"),
            r"yolov3-tiny topology .*layer 10 \[convolutional\] \(line 85\): size: yolov3-tiny "
            r"has 3, the cfg 1",
        ),
        (
            edit(TINY, "layers = -1, 8", "layers = -1, 9"),
            r"layer 20 \[route\] \(line 156\): layers: yolov3-tiny has 19, 8, the cfg 19, 9",
        ),
        (
            edit(TINY, "[maxpool]\nsize=2\nstride=1", "[maxpool]\nsize=2\nstride=2"),
            r"layer 11 \[maxpool\] \(line 93\): stride: yolov3-tiny has 1, the cfg 2",
        ),
        (
            edit(TINY, "filters=1024\nsize=3\nstride=1\npad=1\nactivation=leaky", "filters=1024"
                 "\nsize=3\nstride=1\npad=1\nactivation=mish"),
            r"layer 12 \[convolutional\] \(line 97\): activation: yolov3-tiny has leaky, the "
            r"cfg mish",
        ),
        (
            edit(TINY, "size=2\nstride=1", "size=2\nstride=1\nmaxpool_depth=1"),
            r"layer 11 \[maxpool\] .*key 'maxpool_depth' is not in yolov3-tiny.cfg",
        ),
        (
            edit(TINY, "[upsample]", "[avgpool]"),
            r"layer 19 \[avgpool\] \(line 153\): yolov3-tiny has a \[upsample\] layer here",
        ),
        (TINY + "\n[convolutional]\nfilters=3\n", r"layer 24 \[convolutional\] \(line 184\): "
         r"yolov3-tiny ends before it"),
        (
            edit(TINY, "classes=80", "classes=20", 2),
            r"layer 15 \[convolutional\] \(line 123\): filters: yolov3-tiny has 75, the cfg 255 "
            r"\(a head conv: 3 \* \(5 \+ classes\), \[yolo\] classes=20\)",
        ),
        (
            OFFICIAL["yolov3"].replace("from=-3", "from=-2", 1),
            r"not darknet's yolov3 topology .*layer 4 \[shortcut\] \(line 59\): from: yolov3 has "
            r"1, the cfg 2",
        ),
        (
            OFFICIAL["yolov3"].replace("[yolo]", "[region]"),
            r"layer 82 \[region\] \(line \d+\): yolov3 has a \[yolo\] layer here",
        ),
    ],
    ids=TOPOLOGY_IDS,
)  # fmt: skip
def test_other_topologies_are_refused_at_the_first_layer_that_differs(
    text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        describe_cfg(text, source="my.cfg")
    assert str(e.value).startswith("my.cfg: not darknet's")


def test_a_cfg_cut_short_is_refused() -> None:
    cut = TINY[: TINY.index("[route]")]
    with pytest.raises(ConfigError, match=r"the cfg ends after layer 16; yolov3-tiny goes on"):
        describe_cfg(cut)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (edit(TINY, "width=416", "width=320"), r"cfg:1: \[net\]: width=320, height=416; .*square"),
        (
            edit(edit(TINY, "width=416", "width=400"), "height=416", "height=400"),
            r"width=400 is not a positive multiple of 32",
        ),
        (edit(TINY, "channels=3", "channels=1"), r"channels=1; edgeyolo's models take 3"),
        (
            edit(TINY, "classes=80", "classes=20"),
            r"disagree on classes= \(layer 16: 20, layer 23: 80\)",
        ),
        (edit(TINY, "classes=80", "classes=0", 2), r"classes=0; a model needs at least 1 class"),
        (
            edit(TINY, "mask = 0,1,2", "mask = 0,1,6"),
            r"layer 23 \[yolo\]: mask=0, 1, 6 has an index outside 0..5",
        ),
        (
            edit(TINY, "mask = 0,1,2", "mask = 4,1,2"),
            r"anchors the \[yolo\] masks pick.*not sorted by area",
        ),
        (
            edit(TINY, "344,319\n", "344\n"),
            r"layer 16 \[yolo\]: anchors= must be num=6 positive \(w, h\) pairs; it has 11",
        ),
        (edit(TINY, "[net]", "[convolutional]"), r"cfg:1: the first section is \[convolutional\]"),
        (
            edit(TINY, "filters=16", "filters=sixteen"),
            r"cfg:25: layer 0 \[convolutional\]: filters='sixteen' is not an integer",
        ),
    ],
    ids=["square", "multiple", "channels", "classes", "zero"]
    + ["mask", "order", "anchors", "net", "int"],
)
def test_cfgs_edgeyolo_cannot_build_are_refused(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        describe_cfg(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"x.cfg: no \[section\] in it"),
        ("# only a comment\n", r"no \[section\]"),
        ("width=3\n[net]\n", r"x.cfg:1: option 'width' before the first \[section\]"),
        ("[net]\nwidth=3\nwidth=4\n", r"x.cfg:3: 'width' given twice in \[net\]"),
        ("[net]\nwidth 416\n", r"x.cfg:2: 'width 416' is not key=value"),
        ("[net\n", r"x.cfg:1: '\[net' is not a \[section\] header"),
    ],
)
def test_unparsable_text_names_the_line(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_cfg(text, source="x.cfg")


def test_parsing_follows_darknet_read_cfg() -> None:
    text = "[network]\n ; note\nwidth = 4 16\n\t# c\n[conv]\nfilters=1\n[max]\n"
    sections = parse_cfg(text)
    assert [s.kind for s in sections] == ["net", "convolutional", "maxpool"]
    assert sections[0].options == {"width": "416"} and sections[1].line == 5


def test_training_only_keys_are_ignored() -> None:
    extra = "max_delta=5\niou_loss=ciou\ncls_normalizer=1.0\n"
    d = describe_cfg(edit(TINY, "random=1\n", "random=1\n" + extra) + "\n")
    assert d.arch == "yolov3-tiny"


def test_recorded_eps() -> None:
    assert recorded_eps(cfg_text(ModelConfig(), eps=1e-6)) == 1e-6
    assert recorded_eps(cfg_text(ModelConfig())) == MODEL_EPS
    assert recorded_eps(TINY) is None
    with pytest.raises(ConfigError, match="darknet-eps comment 'x1' is not a number"):
        recorded_eps("# edgeyolo darknet-eps=x1\n")
    with pytest.raises(ConfigError, match=r"must be in \(0, 0.001\]"):
        recorded_eps("# edgeyolo darknet-eps=0.5\n")


@pytest.mark.parametrize("eps", [0.0, -1e-6, 2e-3, float("nan")])
def test_bad_eps_is_refused_by_the_writer_and_the_export(eps: float) -> None:
    with pytest.raises(ConfigError, match=r"must be in \(0, 0.001\]"):
        check_eps(eps)
    with pytest.raises(ConfigError, match=r"--darknet-eps must be in \(0, 0.001\]"):
        ExportConfig(weights="w.pt", darknet=True, darknet_eps=eps)
    assert check_eps(MAX_EPS) == MAX_EPS
    ExportConfig(weights="w.pt", darknet=True, darknet_eps=MAX_EPS)


def test_darknet_eps_without_darknet_is_refused() -> None:
    with pytest.raises(ConfigError, match="--darknet-eps sets the epsilon of --darknet's files"):
        ExportConfig(weights="w.pt", darknet_eps=1e-6)


def test_unreadable_cfg(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.cfg: cannot read the cfg"):
        read_cfg(tmp_path / "nope.cfg")
