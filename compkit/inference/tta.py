"""Model inference: test-time augmentation (the views of :mod:`compkit.inference.views`) averaged in logit space,
and Gaussian-weighted sliding windows."""

from __future__ import annotations

from collections.abc import Callable

import torch

from compkit.inference.views import TTA_VIEWS


def segmentation_logits(output):
    """A model with an auxiliary classification head returns (masks, labels): keep the masks."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: str = "none"
) -> torch.Tensor:
    """Mean logits over the TTA views. Views of one input size go through the model as one batch."""
    views = TTA_VIEWS[tta]
    inputs = [forward(images) for forward, _ in views]
    outputs: list[torch.Tensor | None] = [None] * len(views)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for indices in by_shape.values():
        out = segmentation_logits(model(torch.cat([inputs[i] for i in indices]))).float()
        for i, part in zip(indices, out.split(images.shape[0]), strict=True):
            outputs[i] = views[i][1](part)
    return torch.stack(outputs).mean(0)


def gaussian_weights(window: int, sigma_scale: float = 0.125, device: torch.device | None = None) -> torch.Tensor:
    """(window, window) importance map peaking at the centre, as nnU-Net blends its tiles."""
    coords = torch.arange(window, dtype=torch.float32, device=device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * (sigma_scale * window) ** 2))
    weights = torch.outer(g, g)
    weights = weights / weights.max()
    return weights.clamp_min(1e-3)  # edges still count where only one window covers a pixel


def window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    window: int | None,
    overlap: float = 0.5,
    tta: str = "none",
    batch_size: int = 4,
) -> torch.Tensor:
    """Logits of (B, 3, H, W) images, tiled by ``window`` with ``overlap`` and Gaussian blending.

    Where one window covers the image this is exactly whole-image inference.
    """
    height, width = images.shape[-2:]
    if window is None or (height <= window and width <= window):
        return predict_logits(model, images, tta)
    stride = max(1, int(window * (1 - overlap)))
    tiles = [(y, x) for y in window_starts(height, window, stride) for x in window_starts(width, window, stride)]
    weights = gaussian_weights(window, device=images.device)
    total = None
    norm = torch.zeros((height, width), device=images.device)
    for b in range(images.shape[0]):
        image = images[b : b + 1]
        for start in range(0, len(tiles), batch_size):
            chunk = tiles[start : start + batch_size]
            crops = torch.cat([image[..., y : y + window, x : x + window] for y, x in chunk])
            logits = predict_logits(model, crops, tta)
            if total is None:
                total = torch.zeros((images.shape[0], logits.shape[1], height, width), device=images.device)
            for (y, x), tile in zip(chunk, logits, strict=True):
                total[b, :, y : y + window, x : x + window] += tile * weights
                if b == 0:
                    norm[y : y + window, x : x + window] += weights
    return total / norm
