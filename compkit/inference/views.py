"""The test-time augmentation views a recipe (``infer.tta``) or ``compkit predict --tta`` names: a registry of view
sets, each view a (forward transform of the input batch, inverse transform of the output logits) pair.

Light on purpose: the views use tensor methods, so importing this module (the CLI's ``--tta`` choices, the recipe
schema) does not import torch; :mod:`compkit.inference.tta` applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from compkit.util.registry import Registry

if TYPE_CHECKING:
    import torch

# A TTA view: (forward transform of the input batch, inverse transform of the output logits).
View = tuple[Callable[["torch.Tensor"], "torch.Tensor"], Callable[["torch.Tensor"], "torch.Tensor"]]
TTA_SCALES = (0.75, 1.0, 1.25)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _flip(dims: tuple[int, ...]) -> View:
    return (lambda x: x.flip(dims), lambda x: x.flip(dims))


def _rot(k: int, flip: bool) -> View:
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.rot90(k, (2, 3))
        return x.flip(3) if flip else x

    def inverse(x: torch.Tensor) -> torch.Tensor:
        x = x.flip(3) if flip else x
        return x.rot90(-k, (2, 3))

    return (forward, inverse)


def _scale(factor: float) -> View:
    if factor == 1.0:
        return (_identity, _identity)
    size: list[tuple[int, int]] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        from torch.nn.functional import interpolate

        size[:] = [tuple(x.shape[-2:])]
        # Multiples of 32 keep every encoder's strides aligned.
        h, w = (max(32, int(round(s * factor / 32)) * 32) for s in x.shape[-2:])
        return interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    def inverse(x: torch.Tensor) -> torch.Tensor:
        from torch.nn.functional import interpolate

        return interpolate(x, size=size[0], mode="bilinear", align_corners=False)

    return (forward, inverse)


TTA_VIEWS: Registry[list[View]] = Registry("TTA", option="infer.tta")
TTA_VIEWS.register("none", [(_identity, _identity)], "the image only")
TTA_VIEWS.register("hflip", [(_identity, _identity), _flip((3,))], "the image and its left-right mirror")
TTA_VIEWS.register("vflip", [(_identity, _identity), _flip((2,))], "the image and its upside-down mirror")
TTA_VIEWS.register(
    "d4", [_rot(k, f) for f in (False, True) for k in range(4)], "the 8 rotations and mirrors of the square"
)
TTA_VIEWS.register(
    "scales", [_scale(s) for s in TTA_SCALES] + [_flip((3,))], f"scaled by {TTA_SCALES}, and left-right mirrored"
)
