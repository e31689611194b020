"""Pictures of masks on images, one colour per class with a legend: ``compkit predict --source``'s overlays, the
validation overlays of a run (``val_overlays.png``) and the EDA gallery share these colours and this drawing."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FILL_ALPHA = 0.4  # how much of a class's colour covers the pixels it predicts
LEGEND_ROW_PX = 18


def class_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 RGB, one distinct colour per class in class order (matplotlib's tab20, tab20b and tab20c,
    then evenly spaced hues): the same class has the same colour in every picture."""
    from matplotlib import colormaps

    table = [colormaps[name](i)[:3] for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    colours = [tuple(round(255 * v) for v in rgb) for rgb in table]
    for k in range(max(0, count - len(colours))):
        hue = int(180 * k / max(1, count - len(table)))
        bgr = cv2.cvtColor(np.uint8([[[hue, 200, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
        colours.append(tuple(int(v) for v in bgr[::-1]))
    return np.array(colours[:count], np.uint8).reshape(count, 3)


def overlay(
    image_rgb: np.ndarray, masks: np.ndarray, colours: np.ndarray, outline: np.ndarray | None = None
) -> np.ndarray:
    """``image_rgb`` (H, W, 3) uint8 with each class of ``masks`` (C, H, W) bool filled in its colour; ``outline``
    (C, H, W) bool, e.g. the label, drawn as a 1-px contour in the same colour."""
    out = image_rgb.astype(np.float32)
    for c in range(masks.shape[0]):
        where = masks[c]
        if where.any():
            out[where] = (1 - FILL_ALPHA) * out[where] + FILL_ALPHA * colours[c].astype(np.float32)
    picture = np.ascontiguousarray(out.round().astype(np.uint8))
    if outline is not None:
        for c in range(outline.shape[0]):
            if outline[c].any():
                contours, _ = cv2.findContours(outline[c].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(picture, contours, -1, tuple(int(v) for v in colours[c]), 1)
    return picture


def legend(
    classes: Sequence[str], colours: np.ndarray, width: int, present: Sequence[bool] | None = None
) -> np.ndarray:
    """An RGB strip ``width`` wide naming each class beside its colour (as many per row as fit); a class not
    ``present`` is drawn greyed."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    cells = []
    for c, name in enumerate(classes):
        text_width = cv2.getTextSize(name, font, scale, 1)[0][0]
        cells.append((c, name, 14 + text_width + 12))
    rows: list[list[tuple[int, str, int]]] = [[]]
    used = 0
    for cell in cells:
        if rows[-1] and used + cell[2] > width:
            rows.append([])
            used = 0
        rows[-1].append(cell)
        used += cell[2]
    strip = np.full((LEGEND_ROW_PX * len(rows) + 4, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x, y = 4, 4 + r * LEGEND_ROW_PX
        for c, name, cell_width in row:
            shown = present is None or present[c]
            colour = tuple(int(v) for v in colours[c]) if shown else (200, 200, 200)
            cv2.rectangle(strip, (x, y + 2), (x + 10, y + 12), colour, -1)
            cv2.putText(
                strip, name, (x + 14, y + 11), font, scale, (0, 0, 0) if shown else (160, 160, 160), 1, cv2.LINE_AA
            )
            x += cell_width
    return strip


def with_legend(
    picture_rgb: np.ndarray, classes: Sequence[str], colours: np.ndarray, masks: np.ndarray | None = None
) -> np.ndarray:
    """``picture_rgb`` above its legend (classes absent from ``masks`` greyed)."""
    present = None if masks is None else [bool(m.any()) for m in masks]
    strip = legend(classes, colours, picture_rgb.shape[1], present)
    return np.concatenate([picture_rgb, strip], axis=0)
