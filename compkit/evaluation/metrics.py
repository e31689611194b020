"""The leaderboard metric: Dice per image and class with the baseline's smoothing, mean over images per class,
then mean over classes. One implementation for scoring, validation and threshold tuning."""

from __future__ import annotations

import numpy as np
from rich.table import Table

DICE_SMOOTH = 1e-4


def dice_from_counts(intersection: np.ndarray, pred_sum: np.ndarray, true_sum: np.ndarray) -> np.ndarray:
    """(2|P∩G| + eps) / (|P| + |G| + eps): an empty prediction of an empty class scores 1."""
    return (2.0 * intersection + DICE_SMOOTH) / (pred_sum + true_sum + DICE_SMOOTH)


def pixel_counts(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(3, C): per channel, the pixels in both, in ``pred`` and in ``true`` ((C, H, W) binary arrays)."""
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {true.shape}")
    p = pred.reshape(pred.shape[0], -1).astype(bool, copy=False)
    g = true.reshape(true.shape[0], -1).astype(bool, copy=False)
    return np.stack([np.count_nonzero(p & g, axis=1), np.count_nonzero(p, axis=1), np.count_nonzero(g, axis=1)])


def dice_per_class(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice of each channel of one image; ``pred`` and ``true`` are (C, H, W) binary arrays."""
    return dice_from_counts(*pixel_counts(pred, true))


class DiceMeter:
    """Accumulates per-image, per-class dice; reports the leaderboard's mean, and (from ``update``) the dice pooled
    over every pixel of every image: the pixel-level F1 that retinal-vessel papers report."""

    def __init__(self, classes: tuple[str, ...] | list[str]):
        self.classes = tuple(classes)
        self.rows: list[np.ndarray] = []
        self.counts = np.zeros((3, len(self.classes)), np.int64)  # intersection, predicted, true pixels per class

    def add(self, dice: np.ndarray) -> None:
        dice = np.asarray(dice, dtype=np.float64)
        if dice.shape != (len(self.classes),):
            raise ValueError(f"expected {len(self.classes)} dice values, got shape {dice.shape}")
        self.rows.append(dice)

    def update(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        counts = pixel_counts(pred, true)
        self.counts += counts
        dice = dice_from_counts(*counts)
        self.add(dice)
        return dice

    def pooled(self) -> np.ndarray:
        """Per class: dice over all pixels of the images given to ``update``, as if they were one image."""
        return dice_from_counts(*self.counts.astype(np.float64))

    @property
    def per_image(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, len(self.classes)))

    def per_class(self) -> np.ndarray:
        return self.per_image.mean(axis=0) if self.rows else np.full(len(self.classes), np.nan)

    def mean(self) -> float:
        return float(self.per_class().mean())


def dice_table(classes: tuple[str, ...], dice: np.ndarray, title: str = "Dice per class") -> Table:
    """A rich table of per-class dice, the weakest classes marked."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("dice", justify="right")
    weakest = set(np.argsort(dice)[:3].tolist())
    for i, (name, value) in enumerate(zip(classes, dice, strict=True)):
        table.add_row(name, f"[red]{value:.4f}[/red]" if i in weakest else f"{value:.4f}")
    return table
