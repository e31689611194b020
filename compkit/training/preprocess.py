"""Preprocessing shared by training and prediction: the recipe's cache of an image set, and normalisation."""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache, build_cache
from compkit.pretrained.weights import encoder_normalisation
from compkit.training.recipe import Recipe


def cache_for(dataset: SegmentationDataset, recipe: Recipe, console: Console | None = None) -> SampleCache:
    """The preprocessing cache of ``dataset`` under the recipe's data settings (size, CLAHE, border crop, intensity)."""
    data = recipe.data
    clahe = data.clahe.model_dump() if data.clahe else None
    return build_cache(
        dataset, data.image_size, clahe, data.cache_dir, console, crop=data.crop_border, intensity=data.intensity
    )


def normalisation(recipe: Recipe) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The recipe's ``data.mean``/``data.std``, or for null ones the encoder's (its pretrained config's)."""
    mean, std = recipe.data.mean, recipe.data.std
    if mean is None or std is None:
        encoder_mean, encoder_std = encoder_normalisation(recipe.model)
        mean, std = mean or encoder_mean, std or encoder_std
    return tuple(mean), tuple(std)


class Normaliser:
    """uint8 RGB -> float, ``(x - mean) / std`` with the recipe's mean and std (fractions of 255; null: the encoder's,
    which `compkit train` resolves once and writes into the fold's recipe.yaml)."""

    def __init__(self, recipe: Recipe):
        mean, std = normalisation(recipe)
        self.mean = np.array(mean, np.float32) * 255.0
        self.std = np.array(std, np.float32) * 255.0

    def image(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, H, W) float tensor."""
        return torch.from_numpy(((image.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1).copy())

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float tensor."""
        return torch.from_numpy(((images.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2).copy())
