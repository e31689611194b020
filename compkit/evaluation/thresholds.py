"""Per-class threshold tuning on quantised probabilities: per-image histograms inside and outside the truth,
so the leaderboard dice of any threshold costs no pass over the pixels. Used by ``compkit ensemble`` (OOF
thresholds) and by validation (the tuned dice of poorly calibrated families)."""

from __future__ import annotations

import numpy as np

from compkit.evaluation.metrics import dice_from_counts
from compkit.stores.probabilities import quantise

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


class OofTuner:
    """Per-image, per-class histograms of quantised OOF probabilities, inside and outside the truth: the dice of
    any threshold then costs no pass over the pixels."""

    def __init__(self, num_classes: int):
        self.c = num_classes
        self.all: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []

    def add(self, q: np.ndarray, truth: np.ndarray) -> None:
        offsets = (np.arange(self.c, dtype=np.int64) * 256)[:, None, None]
        idx = (q.astype(np.int64) + offsets).ravel()
        self.all.append(np.bincount(idx, minlength=256 * self.c).reshape(self.c, 256))
        self.pos.append(
            np.bincount(idx, weights=truth.ravel().astype(np.float64), minlength=256 * self.c).reshape(self.c, 256)
        )

    def dice(self, thresholds: np.ndarray) -> np.ndarray:
        """(images, classes) dice at one threshold per class (pixel kept where p > t)."""
        allh, posh = np.stack(self.all), np.stack(self.pos)  # (N, C, 256)
        above_all = np.cumsum(allh[..., ::-1], axis=-1)[..., ::-1]
        above_pos = np.cumsum(posh[..., ::-1], axis=-1)[..., ::-1]
        first = np.minimum(np.floor(thresholds * 255).astype(int) + 1, 255)  # q > 255 t  <=>  q >= floor(255 t) + 1
        cls = np.arange(self.c)
        pred = above_all[:, cls, first]
        tp = above_pos[:, cls, first]
        truth = posh.sum(axis=-1)
        return dice_from_counts(tp, pred, truth)

    def best_thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        scores = np.stack([self.dice(np.full(self.c, t)).mean(axis=0) for t in THRESHOLD_GRID])  # (T, C)
        best = scores.argmax(axis=0)
        return THRESHOLD_GRID[best], scores[best, np.arange(self.c)]

    def add_probs(self, probs: np.ndarray, truth: np.ndarray) -> None:
        """Float probabilities (C, H, W), quantised as stores keep them."""
        self.add(quantise(probs, "uint8"), truth)
