"""What one dataset image becomes: a Sample with its polygons and meta values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Polygon:
    """One labelled polygon: a class index and (N, 2) integer (x, y) pixel points; ``index``: its annotation's
    position in the label file (for error messages)."""

    class_index: int
    points: np.ndarray
    index: int = -1


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``image_id`` is the image's path relative to the split's image folder, in POSIX form
    (``ID001/image1661130828152_R.png``): it names the image in ``splits.json``, probability stores and
    submissions. ``patient`` groups the images that must stay in one fold.
    """

    image_id: str
    patient: str
    image_path: Path
    label_path: Path | None = None
    polygons: tuple[Polygon, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image_name(self) -> str:
        """The file's base name, as the submission's ``image_name`` column wants it."""
        return Path(self.image_id).name
