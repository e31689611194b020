from __future__ import annotations

import cv2
import numpy as np
import pytest

from compkit.data import Polygon, rasterize
from compkit.data.raster import clip_summary, describe_clips, polygon_clips
from compkit.util.errors import CompkitError


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


def competition_fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The competition's ground truth: cv2.fillPoly straight into the image (it clips to the canvas)."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
    return canvas


def uncut_fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """fillPoly on a canvas three times the image's size (nothing clipped), cropped to the image."""
    height, width = shape
    big = np.zeros((3 * height, 3 * width), np.uint8)
    cv2.fillPoly(big, [(points + (width, height)).astype(np.int32)], 1)
    return big[height : 2 * height, width : 2 * width]


def test_polygons_running_out_fill_their_visible_part_as_the_competition_does():
    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(5, 40, 2))
        points = np.stack([rng.integers(-width, 2 * width, 6), rng.integers(-height, 2 * height, 6)], axis=1).astype(
            np.int32
        )
        mask = rasterize([Polygon(0, points)], 1, (height, width))[0]
        np.testing.assert_array_equal(mask, competition_fill(points, (height, width)))
        # The visible part, give or take fillPoly's one-pixel shift of clipped edges: never a different shape.
        uncut = uncut_fill(points, (height, width))
        assert (mask != uncut).sum() <= 2 * (height + width) + 2 * len(points) * max(height, width) // 4 + 4


def test_a_large_polygon_running_out_keeps_its_inside_exactly():
    # A forearm running 14 % out of the bottom: every pixel of the bone inside the frame is filled.
    points = np.array([[30, 40], [60, 40], [64, 110], [26, 108]], np.int32)
    mask, uncut = rasterize([Polygon(0, points)], 1, (96, 96))[0], uncut_fill(points, (96, 96))
    assert (mask != uncut).sum() <= 2 * 96 and mask[40:96, 35:55].all() and not mask[:39].any()


def test_a_clipped_polygon_keeps_the_other_polygons_of_its_class():
    inside, below = square(0, 1, 1, 3, 3), square(0, 5, 6, 7, 12)
    mask = rasterize([inside, below], 1, (8, 8))[0]
    assert mask[1:4, 1:4].all() and mask[6:8, 5:8].all() and mask.sum() == 9 + 6


def test_polygon_clips_say_how_far_each_runs_out():
    polygons = [
        square(0, 1, 1, 3, 3),
        Polygon(1, np.array([[10, 50], [30, 50], [30, 113]], np.int32), 4),
        square(1, -5, 10, 20, 20),
    ]
    clips = polygon_clips(polygons, (100, 50), ["a", "b"], "label.json")  # 50 wide, 100 high
    assert [(c.class_index, c.pixels) for c in clips] == [(0, 0), (1, 14), (1, 5)]
    assert clips[1].fraction == pytest.approx(14 / 100) and clips[2].fraction == pytest.approx(5 / 50)
    summary = clip_summary(clips, ["a", "b"])
    assert summary == {
        "b": {
            "clipped": 2,
            "polygons": 2,
            "max_pixels": 14,
            "median_pixels": 9.5,
            "max_fraction": pytest.approx(0.14),
            "median_fraction": pytest.approx(0.12),
        }
    }
    assert describe_clips(summary) == "b 2 of 2 (up to 14 px, 14.0%; median 9.5 px, 12.0%)"
    assert describe_clips({}) == "none"


def test_the_border_and_the_image_size_are_the_limits():
    shape = (10, 20)  # 20 wide, 10 high
    on_border = Polygon(0, np.array([[0, 0], [19, 0], [19, 9], [0, 9]], np.int32), 0)
    assert polygon_clips([on_border], shape, ["a"], "x")[0].pixels == 0
    assert rasterize([on_border], 1, shape).all()
    furthest = Polygon(
        0, np.array([[-20, 5], [39, 5], [5, -10], [5, 19]], np.int32), 0
    )  # x = -W, 2W - 1; y = -H, 2H - 1
    assert polygon_clips([furthest], shape, ["a"], "x")[0].pixels == 20
    for x, y in ((-21, 5), (40, 5), (5, -11), (5, 20)):
        beyond = Polygon(0, np.array([[3, 3], [6, 3], [x, y]], np.int32), 7)
        with pytest.raises(
            CompkitError,
            match=rf"annotation 7 \(a\): point \({x}, {y}\) lies further out than the 20x10 image's own size",
        ):
            polygon_clips([beyond], shape, ["a"], "x")


def test_a_polygon_with_no_part_inside_is_refused():
    shape = (10, 10)
    right_of = Polygon(1, np.array([[10, 2], [15, 2], [15, 8]], np.int32), 3)  # x = 10: one pixel past the last column
    corner = Polygon(1, np.array([[8, -6], [16, -6], [16, 2]], np.int32), 3)  # its bounds reach in, its fill does not
    for polygon in (right_of, corner):
        with pytest.raises(
            CompkitError, match=r"annotation 3 \(b\): the polygon .* has no part inside the 10x10 image"
        ):
            polygon_clips([polygon], shape, ["a", "b"], "x")
    assert not rasterize([corner], 2, shape).any()
