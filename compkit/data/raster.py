"""Polygon -> multi-hot mask rasterisation, exactly as the competition's baseline does it."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from compkit.data.sample import Polygon


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
