"""Image kinds of real medical data: 16-bit PNG/TIFF windowed to 8 bits, DICOM (rescale, window, MONOCHROME1),
GIF and 1-bit BMP masks, JPEG masks with noise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from compkit.data.masks import binary_foreground, read_binary_mask
from compkit.training.recipe import load_recipe
from compkit.util.errors import CompkitError
from compkit.util.imageio import (
    LabelImage,
    apply_orientation,
    describe_image,
    exif_orientation,
    image_size,
    read_image,
    read_label,
    read_label_image,
    to_uint8,
)
from tests.layouts import write, write_bmp_1bit, write_dicom, write_gif, write_jpeg_mask


@pytest.fixture
def twelve_bit(tmp_path):
    """A 12-bit X-ray in a 16-bit PNG: values 1000..3000 with two hot pixels at 4095."""
    values = np.tile(np.linspace(1000, 3000, 50), (40, 1)).astype(np.uint16)
    values[0, :2] = 4095
    path = tmp_path / "xray.png"
    write(path, values)
    return path, values


def test_sixteen_bit_rules(tmp_path, twelve_bit):
    path, values = twelve_bit
    auto = read_image(path)
    assert auto.shape == (40, 50, 3) and auto.dtype == np.uint8
    grey = auto[..., 0]
    # auto = per-image 0.5..99.5 percentile window: the ramp spans (almost) the full 8-bit range, hot pixels clipped
    assert grey[5, 0] <= 2 and grey[5, -1] >= 253 and grey[0, 0] == 255
    full = read_image(path, intensity="full")[..., 0]
    assert full[5, 0] == round(1000 / 257) and full[5, -1] == round(3000 / 257), "full: value / 257"
    minmax = read_image(path, intensity="minmax")[..., 0]
    assert minmax[5, -1] == round((3000 - 1000) / (4095 - 1000) * 255)
    assert cv2.imread(str(path), cv2.IMREAD_COLOR)[5, -1, 0] == 3000 >> 8, "what OpenCV alone would give: a dark image"
    tif = tmp_path / "xray.tif"
    write(tif, values)
    assert np.array_equal(read_image(tif), auto), "16-bit TIFF read like 16-bit PNG"
    eight = tmp_path / "photo.png"
    write(eight, np.full((4, 4, 3), 77, np.uint8))
    assert read_image(eight, intensity="minmax").max() == 77, "8-bit images are never rescaled"


def test_to_uint8_float_full_range():
    assert to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32), "full").tolist() == [[0, 128, 255]]


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    stored = np.zeros((30, 40), np.uint16)
    stored[:, 20:] = 4000
    path = tmp_path / "a.dcm"
    write_dicom(path, stored)  # slope 2, intercept -100, window centre 3900 width 8000 -> -100..7900
    image = read_image(path)
    assert image.shape == (30, 40, 3)
    # left: 2*0-100 = -100 -> window low -> 0 -> MONOCHROME1 inverted -> 255; right: 7900 -> 255 -> 0
    assert image[0, 0, 0] == 255 and image[0, -1, 0] == 0
    assert image_size(path) == (30, 40)
    assert describe_image(path) == "DICOM 12-bit MONOCHROME1"
    write_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME2")
    assert read_image(tmp_path / "b.dcm")[0, 0, 0] == 0, "MONOCHROME2 is not inverted"
    full = read_image(path, intensity="full", flags=cv2.IMREAD_GRAYSCALE)
    # full: the 12 stored bits through the rescale, -100 .. -100 + 2 * 4095, inverted
    assert full.shape == (30, 40) and full[0, 0] == 255 and full[0, -1] == 255 - round(8000 * 255 / 8190)
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom")
    with pytest.raises(CompkitError, match="unreadable DICOM"):
        read_image(tmp_path / "bad.dcm")


def test_mask_kinds(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 1
    write_gif(tmp_path / "m.gif", mask)
    write_bmp_1bit(tmp_path / "m.bmp", mask)
    write_jpeg_mask(tmp_path / "m.jpg", mask)
    write(tmp_path / "m.png", mask * 255)
    noisy = read_label_image(tmp_path / "m.jpg")
    assert len(np.unique(noisy)) > 2, "a JPEG mask carries compression noise"
    for name in ("m.gif", "m.bmp", "m.jpg", "m.png"):
        assert np.array_equal(read_binary_mask(tmp_path / name, (20, 30)), mask), name
    assert read_label_image(tmp_path / "m.gif").ndim == 2, "GIF decodes as 3 equal channels: read as one"
    assert describe_image(tmp_path / "m.bmp") == "1-bit BMP"
    write(tmp_path / "ones.png", mask)
    assert np.array_equal(read_binary_mask(tmp_path / "ones.png", (20, 30)), mask), "a 0/1 mask is foreground where 1"
    assert np.array_equal(read_binary_mask(tmp_path / "ones.png", (20, 30), threshold=1), mask)


def test_recipe_intensity_is_validated(tmp_path):
    assert load_recipe("tiny", ["data.intensity=full"]).data.intensity == "full"
    with pytest.raises(
        CompkitError, match=r"data.intensity: unknown intensity rule 'percentil' \(did you mean 'percentile'\?\)"
    ):
        load_recipe("tiny", ["data.intensity=percentil"])


def test_palette_labels_are_read_by_index(tmp_path):
    from PIL import Image

    indices = np.zeros((10, 12), np.uint8)
    indices[2:5, 3:9], indices[6:9, 1:4] = 1, 2
    colour = Image.fromarray(indices, "P")
    colour.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    colour.save(tmp_path / "voc.png")
    grey = Image.fromarray(indices, "P")
    grey.putpalette([255, 255, 255, 0, 0, 0, 90, 90, 90])  # greys only: read as the grey it shows
    grey.save(tmp_path / "grey.png")
    label = read_label(tmp_path / "voc.png")
    np.testing.assert_array_equal(label.values, indices)
    assert label.colours()[3, 4].tolist() == [0, 0, 128], "palette colour, BGR"
    assert read_label(tmp_path / "grey.png").palette is None
    np.testing.assert_array_equal(read_label_image(tmp_path / "grey.png"), np.array([255, 0, 90], np.uint8)[indices])
    expected = (indices != 0).astype(np.uint8)
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "voc.png", (10, 12)), expected)


def test_alpha_and_16_bit_masks(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:7, 3:9] = 1
    black_on_transparent = np.dstack([np.zeros((10, 12, 3), np.uint8), mask * 255])
    write(tmp_path / "alpha.png", black_on_transparent)
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "alpha.png", (10, 12)), mask)
    two_colours = np.zeros((10, 12, 4), np.uint8)
    two_colours[2:7, 3:6] = (0, 0, 255, 255)
    two_colours[2:7, 6:9] = (0, 255, 0, 255)
    two_colours[~mask.astype(bool)] = (255, 255, 255, 0)  # transparent white: background, not white
    write(tmp_path / "colours.png", two_colours)
    assert read_label_image(tmp_path / "colours.png")[0, 0].tolist() == [0, 0, 0]
    assert read_label_image(tmp_path / "colours.png")[3, 4].tolist() == [0, 0, 255]
    sixteen = mask.astype(np.uint16) * 65535
    sixteen[0, 0] = 30000  # under half the range: background
    write(tmp_path / "sixteen.png", sixteen)
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "sixteen.png", (10, 12)), mask)
    write(tmp_path / "low16.png", mask.astype(np.uint16) * 255)  # 8-bit values in a 16-bit file
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "low16.png", (10, 12)), mask)
    noise = np.eye(10, 12, dtype=np.uint8)  # a JPEG's stray 1s are compression noise, a PNG's 1s the foreground
    assert not binary_foreground(LabelImage(tmp_path / "noise.jpg", noise)).any()
    assert binary_foreground(LabelImage(tmp_path / "ones.png", noise)).sum() == 10


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_and_applied_as_opencv_would(tmp_path, orientation):
    from PIL import Image

    stored = np.random.default_rng(orientation).integers(0, 255, (6, 9, 3)).astype(np.uint8)
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "tagged.jpg"
    pil.save(path, exif=exif, quality=100)
    data = np.fromfile(str(path), np.uint8)
    as_stored = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    assert exif_orientation(path) == orientation
    np.testing.assert_array_equal(read_image(path), as_stored)
    grey = read_image(path, flags=cv2.IMREAD_GRAYSCALE)  # libjpeg decodes grey from the luma: close, not equal
    assert grey.shape == (6, 9) and np.abs(grey.astype(int) - cv2.cvtColor(as_stored, cv2.COLOR_BGR2GRAY)).mean() < 2
    assert image_size(path) == (6, 9)
    np.testing.assert_array_equal(apply_orientation(as_stored, orientation), cv2.imdecode(data, cv2.IMREAD_COLOR))
    assert exif_orientation(tmp_path / "missing.jpg") == 1
