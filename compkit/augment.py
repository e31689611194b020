"""Augmentation: an albumentations pipeline built from the recipe's ``aug`` list of transforms by name."""
from __future__ import annotations

from typing import Any

from compkit.errors import CompkitError
from compkit.recipe import did_you_mean


def create_augmentation(items: list[dict[str, Any]], seed: int | None = None):
    """``[{name: HorizontalFlip, p: 0.5}, ...]`` -> ``A.Compose``; None when the list is empty."""
    import albumentations as A

    if not items:
        return None
    transforms = []
    for item in items:
        params = {k: v for k, v in item.items() if k != "name"}
        name = item["name"]
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            known = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
            raise CompkitError("aug", f"unknown albumentations transform {name!r}{did_you_mean(name, known)}")
        try:
            transforms.append(cls(**params))
        except (TypeError, ValueError) as e:
            raise CompkitError("aug", f"{name}: bad parameters {params}: {str(e).splitlines()[0]}") from None
    return A.Compose(transforms, seed=seed)
