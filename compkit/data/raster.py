"""Polygon -> multi-hot mask rasterisation, exactly as the competition's baseline does it; a polygon running out of
the image is clipped to its visible part (how far each ran out: :func:`polygon_clips`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from compkit.data.sample import Polygon
from compkit.util.errors import CompkitError

MAX_COORDINATE = 1_000_000  # pixels; anything larger is a broken annotation, not an image


def check_points(points: np.ndarray, path, what: str) -> None:
    """A polygon's points must be finite numbers of a sane size (NaN or 1e30 would rasterise to garbage)."""
    if not np.isfinite(points).all():
        raise CompkitError(path, f"{what}: points are not finite numbers (NaN or infinity)")
    if np.abs(points).max(initial=0) > MAX_COORDINATE:
        raise CompkitError(path, f"{what}: a point lies {np.abs(points).max():.3g} pixels out, not in any image")


@dataclass(frozen=True)
class Clip:
    """How far one polygon runs out of its image (0 when it lies wholly inside)."""

    class_index: int
    pixels: int  # its farthest point's distance beyond the image's edge
    fraction: float  # the same, as a fraction of the image's width or height (the side it crosses)


def _where(polygon: Polygon, classes: Sequence[str]) -> str:
    name = classes[polygon.class_index]
    return f"annotation {polygon.index} ({name})" if polygon.index >= 0 else name


def polygon_clips(polygons: Sequence[Polygon], shape: tuple[int, int], classes: Sequence[str], path) -> list[Clip]:
    """How far each polygon runs out of the image; the part outside is clipped, as fillPoly, ultralytics and CVAT
    do (forearms run out of a hand X-ray). Refused: a polygon with no part inside (it would fill nothing) and one
    reaching further out than the image's own size (x < -W or x > 2W - 1, likewise y): a coordinate-system error,
    e.g. a polygon drawn around the whole image."""
    height, width = shape
    clips = []
    for polygon in polygons:
        low, high = polygon.points.min(axis=0), polygon.points.max(axis=0)
        out = np.maximum.reduce([np.zeros(2, np.int64), -low, high - (width - 1, height - 1)])  # (x, y) pixels out
        if (out > (width, height)).any():
            beyond = np.maximum(-polygon.points, polygon.points - (width - 1, height - 1)) / (width, height)
            x, y = polygon.points[int(np.argmax(beyond.max(axis=1)))].tolist()
            raise CompkitError(
                path,
                f"{_where(polygon, classes)}: point ({x}, {y}) lies further out than the {width}x{height} image's own size "
                "(a coordinate-system error?)",
            )
        if out.any() and not _fills_inside(polygon.points, shape):
            raise CompkitError(
                path,
                f"{_where(polygon, classes)}: the polygon (x {low[0]}..{high[0]}, y {low[1]}..{high[1]}) has no part "
                f"inside the {width}x{height} image",
            )
        fraction = max(out[0] / width, out[1] / height)
        clips.append(Clip(polygon.class_index, int(out.max()), float(fraction)))
    return clips


def _fills_inside(points: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether fillPoly leaves any pixel of the polygon inside the image."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
    return bool(canvas.any())


def clip_summary(clips: Sequence[Clip], classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class with clipped polygons: how many of its polygons were clipped and how far they ran out (max and
    median, in pixels and as a fraction of the image's size), for ``check-data`` and ``eda``."""
    summary = {}
    for c, name in enumerate(classes):
        mine = [clip for clip in clips if clip.class_index == c]
        out = [clip for clip in mine if clip.pixels > 0]
        if out:
            pixels, fractions = np.array([o.pixels for o in out]), np.array([o.fraction for o in out])
            summary[name] = {
                "clipped": len(out),
                "polygons": len(mine),
                "max_pixels": int(pixels.max()),
                "median_pixels": float(np.median(pixels)),
                "max_fraction": float(fractions.max()),
                "median_fraction": float(np.median(fractions)),
            }
    return summary


def describe_clips(summary: dict[str, dict[str, float]]) -> str:
    """One line: "Radius 3 of 4 (up to 14 px, 14.6%; median 9 px, 9.4%), Ulna ..." or "none"."""
    return (
        ", ".join(
            f"{name} {s['clipped']} of {s['polygons']} (up to {s['max_pixels']} px, {s['max_fraction']:.1%}; median "
            f"{s['median_pixels']:g} px, {s['median_fraction']:.1%})"
            for name, s in summary.items()
        )
        or "none"
    )


def rasterize(polygons: Sequence[Polygon], num_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """Fill each polygon with ``cv2.fillPoly`` into its class's channel.

    Returns a (C, H, W) uint8 array of 0/1. Channels are independent, so overlapping polygons of
    different classes both keep the pixel (multi-hot), as the leaderboard's ground truth does. A polygon running
    out of the image fills what fillPoly draws of it on the image: the competition's ground truth is made exactly
    so (fillPoly clips the edges to the canvas, which can shift the clipped edges' boundary pixels by one against
    a fill on a larger canvas; matching the scorer's masks matters more than that pixel).
    """
    height, width = shape
    mask = np.zeros((num_classes, height, width), dtype=np.uint8)
    for polygon in polygons:
        # fillPoly needs a contiguous array per channel; a view of a C-contiguous (C,H,W) array is one.
        cv2.fillPoly(mask[polygon.class_index], [polygon.points.astype(np.int32)], 1)
    return mask
