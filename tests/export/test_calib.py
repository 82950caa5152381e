"""The calibration set: real images, the inference letterbox, loud failures, provenance."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeyolo.data.dataset import DetectionDataset
from edgeyolo.data.letterbox import letterbox, to_input
from edgeyolo.data.records import ImageRecord
from edgeyolo.errors import CalibrationError
from edgeyolo.export.calib import CalibReader, find_images, load_calibration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def odd_images(tmp_path: Path, calib_folder: Path) -> Path:
    """Real MNIST-detection crops of unlike sizes and formats (so the letterbox pads), nested,
    tinted so that a swap of colour channels would show."""
    src = np.array(Image.open(sorted(calib_folder.glob("*.jpg"))[0]).convert("RGB"))
    src = (src * np.array([1.0, 0.7, 0.4])).astype(np.uint8)
    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(src[:, :70]).save(folder / "b_tall.png")
    Image.fromarray(src[:50, :]).save(folder / "sub" / "c_wide.bmp")
    Image.fromarray(src).save(folder / "a_square.JPG", quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_find_images_is_recursive_sorted_and_filters_suffixes(odd_images: Path) -> None:
    names = [p.relative_to(odd_images).as_posix() for p in find_images(odd_images)]
    assert names == ["a_square.JPG", "b_tall.png", "sub/c_wide.bmp"]


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_missing_or_empty_folder_names_it_and_the_readme(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "frames"
    if kind == "empty":
        folder.mkdir()
        (folder / "labels.txt").write_text("no images here")
    elif kind == "file":
        folder.write_text("a file")
    with pytest.raises(CalibrationError) as err:
        load_calibration(folder, img_size=64, progress=False)
    assert str(folder) in str(err.value)
    assert "calib_data/README.md" in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_raises_naming_the_file(
    tmp_path: Path, calib_folder: Path, damage: str
) -> None:
    folder = tmp_path / "calib"
    shutil.copytree(calib_folder, folder)
    good = sorted(folder.glob("*.jpg"))[0]
    bad = folder / "zz_bad.jpg"
    data = good.read_bytes()
    bad.write_bytes(b"\x00not a jpeg" * 50 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CalibrationError) as err:
        load_calibration(folder, img_size=64, progress=False)
    assert str(bad) in str(err.value)


def test_letterbox_equals_inference_and_evaluation_preprocessing(odd_images: Path) -> None:
    size = 96
    calib = load_calibration(odd_images, img_size=size, progress=False)
    assert calib.images.shape == (3, 3, size, size) and calib.images.dtype == np.float32
    for image, file in zip(calib.images, calib.files, strict=True):
        rgb = np.array(Image.open(file).convert("RGB"))
        # The inference input (edgeyolo.data.letterbox.to_input), literally.
        boxed, _ = letterbox(rgb, size)
        np.testing.assert_array_equal(image, to_input(boxed))
        # The evaluation dataset's transform (torchvision v2 pipeline), an independent path:
        # the same floats, bit for bit.
        h, w = rgb.shape[:2]
        rec = ImageRecord(Path(file), np.zeros((0, 4)), np.zeros(0), w, h)
        eval_input = DetectionDataset([rec], img_size=size)[0][0].numpy()
        np.testing.assert_array_equal(image, eval_input)
        assert not np.allclose(image[0], image[2])  # tinted: RGB order is checked
    assert calib.images[1, :, :, 0].max() == pytest.approx(114 / 255)  # the tall one is padded


def test_sha256_is_the_files_in_sorted_order_and_max_images_cuts(odd_images: Path) -> None:
    calib = load_calibration(odd_images, img_size=64, progress=False)
    files = find_images(odd_images)
    expected = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    assert calib.sha256 == expected and calib.files == tuple(map(str, files))
    two = load_calibration(odd_images, img_size=64, max_images=2, progress=False)
    assert len(two) == 2 and two.files == calib.files[:2] and two.sha256 != calib.sha256
    np.testing.assert_array_equal(two.images, calib.images[:2])


def test_reader_feeds_single_images_then_none(odd_images: Path) -> None:
    calib = load_calibration(odd_images, img_size=64, progress=False)
    reader = CalibReader(calib, "images")
    batches = list(iter(reader.get_next, None))
    assert len(batches) == len(reader) == 3
    assert all(set(b) == {"images"} and b["images"].shape == (1, 3, 64, 64) for b in batches)
    np.testing.assert_array_equal(batches[2]["images"][0], calib.images[2])
    reader.set_range(1, 2)
    assert len(reader) == 1
    np.testing.assert_array_equal(reader.get_next()["images"][0], calib.images[1])
    assert reader.get_next() is None


def test_shipped_calibration_set_is_real_small_and_loads() -> None:
    folder = REPO / "calib_data" / "mnist"
    files = find_images(folder)
    assert len(files) == 64 and all(p.suffix == ".jpg" for p in files)
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert all(Image.open(p).size == (416, 416) for p in files)
    calib = load_calibration(folder, img_size=64, max_images=4, progress=False)
    # White canvas with dark digits: mostly bright, but real strokes are present.
    assert calib.images.mean() > 0.8 and calib.images.min() < 0.2
