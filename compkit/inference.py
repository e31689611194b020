"""Model inference: test-time augmentation averaged in logit space."""
from __future__ import annotations

from collections.abc import Callable

import torch

# Each TTA view is (forward transform, inverse transform) on (B, C, H, W) tensors.
View = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _flip(dims: tuple[int, ...]) -> View:
    return (lambda x: x.flip(dims), lambda x: x.flip(dims))


def _rot(k: int, flip: bool) -> View:
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, k, (2, 3))
        return x.flip(3) if flip else x

    def inverse(x: torch.Tensor) -> torch.Tensor:
        x = x.flip(3) if flip else x
        return torch.rot90(x, -k, (2, 3))

    return (forward, inverse)


TTA_VIEWS: dict[str, list[View]] = {
    "none": [(_identity, _identity)],
    "hflip": [(_identity, _identity), _flip((3,))],
    "vflip": [(_identity, _identity), _flip((2,))],
    "d4": [_rot(k, f) for f in (False, True) for k in range(4)],
}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Mean logits over the TTA views; all views of the batch go through the model as one batch."""
    views = TTA_VIEWS[tta]
    batch = torch.cat([forward(images) for forward, _ in views])
    out = model(batch).float()
    parts = out.split(images.shape[0])
    return torch.stack([inverse(p) for (_, inverse), p in zip(views, parts, strict=True)]).mean(0)
