"""Polygon -> multi-hot mask rasterisation, exactly as the competition's baseline does it."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from compkit.data.sample import Polygon
from compkit.errors import CompkitError

MAX_COORDINATE = 1_000_000  # pixels; anything larger is a broken annotation, not an image


def check_points(points: np.ndarray, path, what: str) -> None:
    """A polygon's points must be finite numbers of a sane size (NaN or 1e30 would rasterise to garbage)."""
    if not np.isfinite(points).all():
        raise CompkitError(path, f"{what}: points are not finite numbers (NaN or infinity)")
    if np.abs(points).max(initial=0) > MAX_COORDINATE:
        raise CompkitError(path, f"{what}: a point lies {np.abs(points).max():.3g} pixels out, not in any image")


def check_inside(polygons: Sequence[Polygon], shape: tuple[int, int], classes: Sequence[str], path) -> None:
    """Every polygon must lie in the image, give or take a small margin; one far outside would be filled as
    something else entirely (a polygon around the whole image fills all of it)."""
    height, width = shape
    margin = max(8.0, 0.02 * max(height, width))
    for polygon in polygons:
        low, high = polygon.points.min(axis=0), polygon.points.max(axis=0)
        if low[0] < -margin or low[1] < -margin or high[0] > width - 1 + margin or high[1] > height - 1 + margin:
            x, y = (low if (low < -margin).any() else high).tolist()
            where = f"annotation {polygon.index} ({classes[polygon.class_index]})" if polygon.index >= 0 else classes[polygon.class_index]
            raise CompkitError(path, f"{where}: point ({x}, {y}) lies outside the {width}x{height} image")


def rasterize(polygons: Sequence[Polygon], num_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """Fill each polygon with ``cv2.fillPoly`` into its class's channel.

    Returns a (C, H, W) uint8 array of 0/1. Channels are independent, so overlapping polygons of
    different classes both keep the pixel (multi-hot), as the leaderboard's ground truth does.
    """
    height, width = shape
    mask = np.zeros((num_classes, height, width), dtype=np.uint8)
    for polygon in polygons:
        # fillPoly needs a contiguous array per channel; a view of a C-contiguous (C,H,W) array is one.
        cv2.fillPoly(mask[polygon.class_index], [polygon.points.astype(np.int32)], 1)
    return mask
