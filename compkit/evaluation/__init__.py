"""Evaluation: the leaderboard metric, per-class thresholds and postprocessing rules chosen on out-of-fold predictions."""
