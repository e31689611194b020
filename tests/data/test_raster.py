from __future__ import annotations

import numpy as np

from compkit.data import Polygon, rasterize


def square(cls: int, x0: int, y0: int, x1: int, y1: int) -> Polygon:
    return Polygon(cls, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.int32))


def test_square_fills_its_boundary_pixels():
    mask = rasterize([square(0, 1, 1, 3, 3)], 1, (6, 6))
    expected = np.zeros((6, 6), np.uint8)
    expected[1:4, 1:4] = 1  # fillPoly includes the vertices' rows and columns
    np.testing.assert_array_equal(mask[0], expected)


def test_triangle_matches_hand_computed_mask():
    tri = Polygon(0, np.array([[0, 0], [4, 0], [0, 4]], dtype=np.int32))
    mask = rasterize([tri], 1, (5, 5))[0]
    expected = np.array(
        [
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(mask, expected)


def test_overlapping_classes_keep_both_pixels():
    mask = rasterize([square(0, 0, 0, 2, 2), square(2, 1, 1, 3, 3)], 3, (5, 5))
    assert mask.shape == (3, 5, 5)
    assert mask.dtype == np.uint8
    both = (mask[0] == 1) & (mask[2] == 1)
    expected_both = np.zeros((5, 5), bool)
    expected_both[1:3, 1:3] = True
    np.testing.assert_array_equal(both, expected_both)
    assert not mask[1].any()
    assert mask[0].sum() == 9 and mask[2].sum() == 9


def test_two_polygons_of_one_class_union():
    mask = rasterize([square(0, 0, 0, 1, 1), square(0, 3, 3, 4, 4)], 1, (5, 5))
    assert mask[0].sum() == 8
