"""edgeyolo.build.references: the floors, the comparison with the stored references on made-up
detections, batching, and ``check_against_references`` on a real export's ONNX graphs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeyolo.build import references as br
from edgeyolo.detections import Detections
from edgeyolo.errors import EngineBuildError, ExportError
from edgeyolo.export import pipeline
from edgeyolo.runtime.references import References, load_references


def made_up(seed: int, n: int) -> Detections:
    """``n`` random boxes (30..60 px) in a 128 px image, scores 0.3..1, 3 classes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(30, 60, (n, 2))
    return Detections(
        boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32),
        scores=np.sort(rng.uniform(0.3, 1.0, n))[::-1].astype(np.float32),
        labels=rng.integers(0, 3, n).astype(np.int64),
    )


REFERENCE = [made_up(i, n) for i, n in enumerate([5, 0, 7, 3, 6])]  # 21 boxes on 5 images
REFS = References(
    Path("references.npz"),
    np.zeros((5, 3, 32, 32), np.uint8),
    ("0" * 64,) * 5,
    REFERENCE,
    {"conf_thres": 0.3},
)


def moved(dets: list[Detections], dx: float = 0.0, dscore: float = 0.0) -> list[Detections]:
    """``dets`` with each image's first box moved ``dx`` px (x and y), its score ``dscore``."""
    out = []
    for d in dets:
        boxes, scores = d.boxes.copy(), d.scores.copy()
        if len(d):
            boxes[0] += dx
            scores[0] += dscore
        out.append(Detections(boxes=boxes, scores=scores, labels=d.labels.copy()))
    return out


def dropped(dets: list[Detections], every: int = 0, images: int = 99) -> list[Detections]:
    """``dets`` without the first ``images`` images' first box (``every`` 0) or every
    ``every``-th box, the first included."""

    def gone(n: int, i: int) -> bool:
        return n < images and (i == 0 if every == 0 else i % every == 0)

    keep = [np.array([not gone(n, i) for i in range(len(d))], bool) for n, d in enumerate(dets)]
    pairs = zip(dets, keep, strict=True)
    return [Detections(d.boxes[k], d.scores[k], d.labels[k]) for d, k in pairs]


# ---------------------------------------------------------------------------------- batching


def test_detections_run_in_batches_and_a_short_batch_is_padded_to_the_minimum() -> None:
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    seen: list[list[float]] = []

    def run(batch: np.ndarray) -> list[Detections]:
        seen.append(batch.ravel().tolist())
        return [REFERENCE[int(v)] for v in batch.ravel()]

    got = br.detect_in_batches(run, images, max_batch=2)
    assert seen == [[0, 1], [2, 3], [4]] and got == REFERENCE
    seen.clear()
    got = br.detect_in_batches(run, images, max_batch=2, min_batch=2)  # a DLA engine: fixed 2
    assert seen == [[0, 1], [2, 3], [4, 4]] and got == REFERENCE  # the copy's result dropped


def test_detections_refuse_outputs_of_another_batch_and_empty_ranges() -> None:
    images = np.zeros((4, 3, 32, 32), np.float32)
    with pytest.raises(ExportError, match="detections for 1 images from a batch of 2"):
        br.detect_in_batches(lambda x: REFERENCE[:1], images, max_batch=2)
    with pytest.raises(ExportError, match="batch range 3..2 is empty"):
        br.detect_in_batches(lambda x: REFERENCE, images, max_batch=2, min_batch=3)


# ----------------------------------------------------------------------- the comparison alone


def test_an_fp32_engine_that_reproduces_pytorch_passes() -> None:
    result = br.references_parity(REFS, moved(REFERENCE, 1e-3, 2e-5), precision="fp32")
    assert result.passed and result.summary["matched_fraction"] == 1.0
    assert result.summary["matched"] == 21 and result.floor == br.FP32_FLOOR
    record = result.to_dict()
    assert record["floor"] == br.FP32_FLOOR.to_dict() and record["against"] == "references.npz"
    lines: list[str] = []
    br.check_parity(result, Path("model_fp32.engine"), lines.append)
    assert lines == []


@pytest.mark.parametrize(
    ("got", "what"),
    [
        (moved(REFERENCE, dx=0.5), "21 of 21 boxes matched, min IoU 0.9"),  # 0.5 px off
        (moved(REFERENCE, dscore=1e-3), "max |score diff| 0.001"),
        (dropped(REFERENCE, images=4), "18 of 21 boxes matched"),  # image 1 has none
    ],
)
def test_an_fp32_engine_that_does_not_reproduce_pytorch_fails(
    got: list[Detections], what: str
) -> None:
    result = br.references_parity(REFS, got, precision="fp32", tf32=False)
    assert not result.passed
    with pytest.raises(EngineBuildError, match="does not reproduce the PyTorch model") as info:
        br.check_parity(result, Path("/x/model_fp32.engine"), print)
    message = str(info.value)
    assert "/x/model_fp32.engine" in message and what in message and "TF32 was off" in message
    assert "on 5 reference images" in message


def test_tf32_fp16_and_int8_are_held_to_their_floors_and_fail_below_them() -> None:
    near = moved(REFERENCE, dx=0.5, dscore=1e-3)  # fails fp32, fine for the others
    for precision, tf32 in (("fp32", True), ("fp16", False), ("int8", False)):
        result = br.references_parity(REFS, near, precision=precision, tf32=tf32)
        assert result.passed, (precision, tf32)
        assert result.floor == br.floor_for(precision, tf32) != br.FP32_FLOOR
    half = dropped(REFERENCE, every=2)  # 12 of 21 boxes gone
    for precision, tf32, advice in (
        ("fp16", False, "try the other --typing"),
        ("int8", False, "try the other --typing"),
        ("fp32", True, "build without --tf32"),
    ):
        result = br.references_parity(REFS, half, precision=precision, tf32=tf32)
        assert not result.passed
        with pytest.raises(EngineBuildError, match="below its parity floor") as info:
            br.check_parity(result, Path(f"model_{precision}.engine"), print)
        assert result.floor.rule in str(info.value) and advice in str(info.value)
    some = dropped(REFERENCE, images=3)  # 19 of 21: int8's floor holds, fp16's does not
    assert br.references_parity(REFS, some, precision="int8").passed
    assert not br.references_parity(REFS, some, precision="fp16").passed


def test_no_box_on_either_side_passes_with_a_note() -> None:
    empty = [made_up(0, 0)] * 5
    refs = References(REFS.path, REFS.images, REFS.image_sha256, empty, REFS.nms)
    result = br.references_parity(refs, empty, precision="fp32")
    assert result.passed and result.summary["matched_fraction"] is None
    lines: list[str] = []
    br.check_parity(result, Path("model_fp32.engine"), lines.append)
    assert len(lines) == 1 and "parity is unchecked" in lines[0]
    assert not br.references_parity(REFS, empty, precision="int8").passed  # found nothing


def test_the_count_of_detection_lists_must_match_the_references() -> None:
    with pytest.raises(ExportError, match="4 detection lists for the 5 reference images"):
        br.references_parity(REFS, REFERENCE[:4], precision="fp32")


def test_fp32_floor_is_the_fp32_graphs_tolerance() -> None:
    assert br.FP32_FLOOR.min_iou == pipeline.FP32_MIN_IOU
    assert br.FP32_FLOOR.max_score_diff == pipeline.FP32_MAX_SCORE_DIFF
    assert br.FP32_FLOOR.matched_fraction == 1.0
    with pytest.raises(ExportError, match="no parity floor for precision 'int4'"):
        br.floor_for("int4", False)


# -------------------------------------------------------------- artifacts of a real export (ORT)


def test_check_against_references_runs_the_exports_graphs(exported: Path, tmp_path: Path) -> None:
    """The fp32 graph reproduces the stored PyTorch detections; fp16 reaches its floor."""
    refs = load_references(exported)
    assert sum(len(d) for d in refs.detections) > 0
    fp32 = br.check_against_references(exported / "model_fp32.onnx", refs, "fp32")
    assert fp32.passed and fp32.summary["matched_fraction"] == 1.0, fp32.summary
    assert fp32.summary["images"] == len(refs) and fp32.floor == br.FP32_FLOOR
    fp16 = br.check_against_references(exported / "model_fp16.onnx", refs, "fp16")
    assert fp16.passed and fp16.floor.rule.startswith("fp16"), fp16.summary
    copy = Path(shutil.copytree(exported, tmp_path / "copy"))
    other = References(refs.path, refs.images, refs.image_sha256, moved(refs.detections, 3.0), {})
    moved_result = br.check_against_references(copy / "model_fp32.onnx", other, "fp32")
    assert not moved_result.passed  # the comparison bites on this export's boxes
