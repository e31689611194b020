"""compkit.evaluation.thresholds: per-class threshold tuning on quantised out-of-fold probabilities."""

from __future__ import annotations

import numpy as np

from compkit.evaluation.metrics import dice_per_class
from compkit.evaluation.thresholds import THRESHOLD_GRID, OofTuner, confirmed_choice


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


GROUP = np.array(["a"] * 4 + ["b"] * 4)  # two folds of four OOF images


def column(a: float, b: float, rules: int = 1) -> np.ndarray:
    """(8 images, rules) dice: ``a`` on fold a's images, ``b`` on fold b's, the same for every rule."""
    return np.repeat(np.array([a] * 4 + [b] * 4)[:, None], rules, axis=1)


def test_a_threshold_that_wins_in_sample_but_not_on_held_out_folds_is_not_kept():
    # 0.3 looks best on all eight images (0.725 > 0.70) only because fold a likes it: chosen on fold b (0.7) it
    # scores 0.50 on fold a, and chosen on fold a (0.3) 0.50 on fold b.
    scores = {0.5: column(0.7, 0.7), 0.3: column(0.95, 0.5), 0.7: column(0.5, 0.9)}
    choice = confirmed_choice(scores, base=0.5, tuned=0.3, per_fold={"a": 0.7, "b": 0.3}, group=GROUP, rules=False)
    assert choice.tuned_threshold == 0.3 and choice.tuned_in_sample == np.float64(0.725)
    assert choice.tuned_cross == 0.5 and choice.threshold == 0.5 and choice.kept_cross == 0.7 == choice.at_base


def test_a_threshold_every_fold_agrees_on_is_kept():
    scores = {0.5: column(0.7, 0.7), 0.3: column(0.8, 0.8)}
    choice = confirmed_choice(scores, base=0.5, tuned=0.3, per_fold={"a": 0.3, "b": 0.3}, group=GROUP, rules=False)
    assert choice.threshold == 0.3 and choice.kept_cross == choice.tuned_cross == np.float64(0.8)


def test_a_rule_is_kept_only_where_the_other_fold_would_have_chosen_it_too():
    # Rule 1 helps fold a's images only and hurts fold b's: in-sample it wins (0.75 > 0.7), held out it never does.
    overfit = np.stack([column(0.7, 0.7)[:, 0], column(0.9, 0.6)[:, 0]], axis=1)
    choice = confirmed_choice({0.5: overfit}, base=0.5, tuned=0.5, per_fold={"a": 0.5, "b": 0.5}, group=GROUP)
    assert choice.tuned_rule == 1 and choice.rule == 0 and choice.kept_cross == np.float64(0.7)
    # Helping both folds' images, it is kept.
    helps = np.stack([column(0.7, 0.7)[:, 0], column(0.8, 0.75)[:, 0]], axis=1)
    choice = confirmed_choice({0.5: helps}, base=0.5, tuned=0.5, per_fold={"a": 0.5, "b": 0.5}, group=GROUP)
    assert choice.rule == 1 and choice.kept_cross > choice.at_base


def test_one_fold_confirms_nothing():
    scores = {0.5: column(0.7, 0.7, rules=2), 0.3: column(0.9, 0.9, rules=2)}
    choice = confirmed_choice(scores, base=0.5, tuned=0.3, per_fold={}, group=np.array(["a"] * 8))
    assert choice.threshold == 0.5 and choice.rule == 0 and np.isnan(choice.kept_cross)
