"""Augmentation: an albumentations pipeline built from the recipe's ``aug`` list of transforms by name."""

from __future__ import annotations

import inspect
import os
from typing import Any

from compkit.util.errors import CompkitError, first_line
from compkit.util.registry import did_you_mean


def create_augmentation(items: list[dict[str, Any]], seed: int | None = None):
    """``[{name: HorizontalFlip, p: 0.5}, ...]`` -> ``A.Compose``; None when the list is empty."""
    # albumentations checks PyPI for a newer version when imported: compkit never touches the network unasked.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    if not items:
        return None
    transforms = []
    for item in items:
        params = {k: v for k, v in item.items() if k != "name"}
        name = item["name"]
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            known = [
                n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)
            ]
            raise CompkitError("aug", f"unknown albumentations transform {name!r}{did_you_mean(name, known)}")
        accepted = inspect.signature(cls).parameters
        unknown = [k for k in params if k not in accepted]
        if unknown:  # albumentations only warns about unknown arguments and ignores them
            raise CompkitError(
                "aug",
                f"{name}: unknown parameter {unknown[0]!r}{did_you_mean(unknown[0], [p for p in accepted if p not in ('args', 'kwargs')])}",
            )
        try:
            transforms.append(cls(**params))
        except (TypeError, ValueError) as e:
            raise CompkitError("aug", f"{name}: bad parameters {params}: {first_line(e)}") from None
    return A.Compose(transforms, seed=seed)


def check_crops(items: list[dict[str, Any]], image_size: int) -> None:
    """A crop larger than the images it crops (``data.image_size``, e.g. lowered after planning) fails now in one
    line, not in the first batch; RandomCrop with ``pad_if_needed`` pads instead."""
    for item in items:
        side = max(int(item.get("height", 0)), int(item.get("width", 0)))
        if "Crop" in item["name"] and side > image_size and not item.get("pad_if_needed"):
            raise CompkitError(
                "aug",
                f"{item['name']} crops {side} px from {image_size} px images (data.image_size): lower its height and "
                "width, or raise data.image_size",
            )
