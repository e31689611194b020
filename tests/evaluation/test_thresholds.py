"""compkit.evaluation.thresholds: per-class threshold tuning on quantised out-of-fold probabilities."""

from __future__ import annotations

import numpy as np

from compkit.evaluation.metrics import dice_per_class
from compkit.evaluation.thresholds import THRESHOLD_GRID, OofTuner


def test_tuner_finds_a_planted_threshold():
    rng = np.random.default_rng(0)
    tuner = OofTuner(2)
    for _ in range(5):
        truth = rng.random((2, 32, 32)) > 0.5
        # class 0: truth at 0.7, background at 0.6 -> any threshold in [0.6, 0.7) is perfect; class 1: at 0.3 / 0.2.
        q = np.where(truth, [[[0.7]], [[0.3]]], [[[0.6]], [[0.2]]])
        tuner.add(np.rint(q * 255).astype(np.uint8), truth.astype(np.uint8))
    thresholds, dice = tuner.best_thresholds()
    assert 0.6 <= thresholds[0] < 0.7 and 0.2 <= thresholds[1] < 0.3
    assert np.allclose(dice, 1.0)
    assert tuner.dice(np.array([0.5, 0.5]))[:, 1].max() < 0.01  # at 0.5, class 1 predicts nothing


def test_tuned_dice_equals_thresholding_the_pixels():
    """The histogram shortcut gives the dice of actually thresholding every pixel, at any threshold."""
    rng = np.random.default_rng(1)
    tuner = OofTuner(3)
    images = []
    for _ in range(4):
        truth = (rng.random((3, 16, 16)) > 0.6).astype(np.uint8)
        probs = np.clip(0.4 * truth + rng.random((3, 16, 16)) * 0.6, 0, 1).astype(np.float32)
        tuner.add_probs(probs, truth)
        images.append((np.rint(probs * 255).astype(np.uint8), truth))
    thresholds = np.array([0.3, 0.5, 0.725])
    expected = np.stack([dice_per_class(q > thresholds[:, None, None] * 255, t) for q, t in images])
    assert np.allclose(tuner.dice(thresholds), expected)
    best, dice = tuner.best_thresholds()
    assert set(best) <= set(THRESHOLD_GRID)
    assert np.all(dice >= tuner.dice(thresholds).mean(axis=0) - 1e-12), "no grid threshold beats the best"
