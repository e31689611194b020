"""The fingerprint's structure widths: exact on drawn shapes, and thin where real structures are thin (DRIVE's
vessels: large in area, a few pixels wide)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from compkit.planning.fingerprint import Fingerprint, structure_widths
from tests.test_real_data import DRIVE


@pytest.mark.parametrize("width", [1, 3, 5, 9, 21])
def test_a_bar_is_as_wide_as_drawn(width):
    mask = np.zeros((80, 200), np.uint8)
    mask[30 : 30 + width, 20:180] = 1
    assert np.median(structure_widths(mask)) == pytest.approx(width, abs=0.01)


def test_a_disc_is_its_diameter_wide_and_nothing_has_no_width():
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 40, 1, -1)
    assert structure_widths(mask).max() == pytest.approx(81, abs=2)
    assert structure_widths(np.zeros((10, 10), np.uint8)).size == 0
    edge = np.zeros((20, 20), np.uint8)
    edge[:, :3] = 1  # against the border: measured to it, not beyond
    assert np.median(structure_widths(edge)) == pytest.approx(3, abs=0.01)


def test_per_class_widths_tell_thin_from_wide_where_areas_agree():
    fp = Fingerprint(("thin", "wide"))
    mask = np.zeros((2, 200, 200), np.uint8)
    for row in range(10, 190, 20):  # nine 3 x 160 px lines: 4320 px
        mask[0, row : row + 3, 20:180] = 1
    mask[1, 60:108, 40:130] = 1  # one 48 x 90 block: 4320 px
    fp.add("a", np.zeros((200, 200), np.uint8), mask)
    thin, wide = (fp.width_quantile(c, 0.5) for c in (0, 1))
    assert mask[0].sum() == mask[1].sum() and thin == pytest.approx(3, abs=0.5) and wide > 30


def test_drive_vessels_are_a_few_pixels_wide():
    if not (DRIVE / "training" / "1st_manual").is_dir():
        pytest.skip("../shared/data/DRIVE is absent (see ../shared/data/README.md)")
    from PIL import Image

    fp = Fingerprint(("vessel",))
    for path in sorted((DRIVE / "training" / "1st_manual").glob("*.gif"))[:4]:
        mask = (np.asarray(Image.open(path).convert("L")) > 127).astype(np.uint8)
        fp.add(path.name, np.zeros(mask.shape, np.uint8), mask[None])
    vessels = fp.width_quantile(0, 0.5), fp.width_quantile(0, 0.1)
    # Published: 1-10 px at 565 px wide (the thinnest capillaries one pixel); the area (~28,000 px) says nothing of it.
    assert 1 <= vessels[1] <= vessels[0] <= 6
