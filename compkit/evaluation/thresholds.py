"""Per-class threshold tuning on quantised probabilities: per-image histograms inside and outside the truth,
so the leaderboard dice of any threshold costs no pass over the pixels. Used by ``compkit ensemble`` (OOF
thresholds, kept only where cross-validation confirms them) and by validation (the tuned dice of poorly calibrated
families)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def choose_rule(per_rule: np.ndarray) -> int:
    """(images, rules) dice -> the rule with the best mean, where it beats none (rule 0) at all."""
    means = per_rule.mean(axis=0)
    best = int(np.argmax(means))
    return best if best != 0 and means[best] > means[0] + 1e-9 else 0


@dataclass(frozen=True)
class ClassChoice:
    """One class's kept threshold and rule (an index into its candidates; 0: none), and its mean OOF dice: at the
    base threshold, with the full tuning (threshold and rule chosen on every image) scored in-sample and
    cross-validated, and with what was kept, cross-validated (NaN with one fold)."""

    threshold: float
    rule: int
    tuned_threshold: float
    tuned_rule: int
    at_base: float
    tuned_in_sample: float
    tuned_cross: float
    kept_cross: float


def confirmed_choice(
    scores: dict[float, np.ndarray],
    base: float,
    tuned: float,
    per_fold: dict[Any, float],
    group: np.ndarray,
    rules: bool = True,
) -> ClassChoice:
    """A threshold and a postprocessing rule for one class, each kept only where cross-validation confirms it.

    ``scores``: threshold -> (images, rules) OOF dice (rule 0: none), for ``base`` (0.5, or hard voting's vote rule),
    ``tuned`` (chosen on every image) and each fold's threshold in ``per_fold`` (chosen on the other folds).
    Candidates, simplest first: base and no rule; base and a rule; the tuned threshold; both. Each is
    cross-validated (every fold scored with what the other folds chose) and the best is kept, a simpler one on ties,
    so the kept choice never scores below the base threshold under cross-validation. With one fold nothing can be
    confirmed: base, no rule."""

    def choice(tune_threshold: bool, use_rule: bool) -> tuple[float, int]:
        """What every OOF image together chooses."""
        t = tuned if tune_threshold else base
        return t, choose_rule(scores[t]) if use_rule else 0

    def cross(tune_threshold: bool, use_rule: bool) -> float:
        held = np.zeros(len(group))
        for f, fold_threshold in per_fold.items():
            own = group == f
            t = fold_threshold if tune_threshold else base
            rule = choose_rule(scores[t][~own]) if use_rule and (~own).any() else 0
            held[own] = scores[t][own, rule]
        return float(held.mean())

    tuned_t, tuned_rule = choice(True, rules)
    at_base = float(scores[base][:, 0].mean())
    tuned_in_sample = float(scores[tuned_t][:, tuned_rule].mean())
    if not per_fold or len(set(group.tolist())) < 2:
        return ClassChoice(base, 0, tuned_t, tuned_rule, at_base, tuned_in_sample, float("nan"), float("nan"))
    candidates = (
        [(False, False), (False, True), (True, False), (True, True)] if rules else [(False, False), (True, False)]
    )
    figures = [cross(*c) for c in candidates]
    best = 0
    for k, figure in enumerate(figures):
        if figure > figures[best] + 1e-9:
            best = k
    threshold, rule = choice(*candidates[best])
    return ClassChoice(threshold, rule, tuned_t, tuned_rule, at_base, tuned_in_sample, figures[-1], figures[best])
