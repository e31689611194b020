"""Prediction shared by every model family: a fold's :class:`Predictor` turns cached images into per-class
probabilities; this module batches them, measures validation dice, and writes probability stores.

One implementation each for every family: :func:`predict_cached` (the batched loop), :func:`validation_dice`
(the leaderboard metric on a fold's validation images, optionally at the best threshold per class) and
:func:`write_store` (the one writer of model stores, used by ``compkit train`` and ``compkit predict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.evaluation.metrics import DiceMeter
from compkit.evaluation.thresholds import OofTuner
from compkit.stores.probabilities import StoreWriter
from compkit.training.recipe import Recipe
from compkit.util.console import transient_progress


@dataclass(frozen=True)
class InferenceSettings:
    """How to predict: TTA views, sliding window (None: whole images), overlap, images per forward pass."""

    tta: str = "none"
    window: int | None = None
    overlap: float = 0.5
    batch_size: int = 4


class Predictor(Protocol):
    """A trained fold, ready to predict (each family provides one)."""

    def predict(self, images: np.ndarray, settings: InferenceSettings) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB images as cached -> (B, C, S, S) float32 probabilities."""


def predict_cached(
    predictor: Predictor, cache: SampleCache, positions: list[int], settings: InferenceSettings
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (position, probabilities (C, S, S) float32) for cached images, batch by batch."""
    batch = settings.batch_size
    for start in range(0, len(positions), batch):
        chunk = positions[start : start + batch]
        probs = predictor.predict(np.stack([cache.image(i) for i in chunk]), settings)
        yield from zip(chunk, probs, strict=True)


@dataclass
class ValidationDice:
    per_class: np.ndarray  # at the recipe's threshold
    tuned: np.ndarray | None = None  # at the best threshold per class, when asked for
    loss: float | None = None  # the training criterion, mean over the images, when asked for

    @property
    def mean(self) -> float:
        return float(self.per_class.mean())


def validation_dice(
    predictor: Predictor,
    cache: SampleCache,
    positions: list[int],
    threshold: float,
    settings: InferenceSettings,
    tuned: bool = False,
    loss: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> ValidationDice:
    """Per-class leaderboard dice on validation images at the training size (and at the best threshold, and the
    validation loss ``loss(probabilities, truth)`` averaged over the images)."""
    meter = DiceMeter(cache.classes)
    tuner = OofTuner(len(cache.classes)) if tuned else None
    losses: list[float] = []
    for i, probs in predict_cached(predictor, cache, positions, settings):
        truth = cache.mask(i)
        if loss is not None:
            losses.append(loss(probs, truth))
        ignore = cache.ignore(i)
        if ignore is not None:  # outside a field of view: neither side counts (as `compkit score`)
            probs, truth = probs * (ignore == 0), truth * (ignore == 0)
        meter.update(probs > threshold, truth)
        if tuner is not None:
            tuner.add_probs(probs, truth)
    mean_loss = float(np.mean(losses)) if losses else None
    return ValidationDice(meter.per_class(), tuner.best_thresholds()[1] if tuner is not None else None, mean_loss)


@dataclass(frozen=True)
class CachedImages:
    """Images of a dataset to predict: their cached pixels at ``positions``, and the samples they were cut from (each
    prediction is stored with its image's id, original size and crop box)."""

    dataset: SegmentationDataset
    cache: SampleCache
    positions: list[int]


def write_store(
    predictor: Predictor,
    images: CachedImages,
    folder: Path,
    settings: InferenceSettings,
    console: Console | None = None,
    label: str = "",
) -> Path:
    """Predict ``images`` into a store at ``folder`` (atomically); ``label`` goes into the progress line."""
    console = console or Console(quiet=True)
    dataset, cache = images.dataset, images.cache
    description = f"predicting {folder.parent.name}/{folder.name} ({label}tta {settings.tta})"
    with (
        StoreWriter(folder, cache.classes, (cache.size, cache.size)) as store,
        transient_progress(console) as progress,
    ):
        task = progress.add_task(description, total=len(images.positions))
        for i, probs in predict_cached(predictor, cache, images.positions, settings):
            sample = dataset.samples[i]
            store.write(sample.image_id, probs, dataset.image_shape(sample), cache.box(i))
            progress.advance(task)
    return folder


def inference_settings(
    recipe: Recipe,
    tta: str | None = None,
    window: int | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
) -> InferenceSettings:
    """The recipe's ``infer`` settings, each overridden where a command gave one."""
    infer = recipe.infer
    return InferenceSettings(
        tta or infer.tta,
        window if window is not None else infer.window,
        overlap if overlap is not None else infer.overlap,
        batch_size or infer.batch_size,
    )
