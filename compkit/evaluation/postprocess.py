"""Per-class postprocessing chosen on out-of-fold predictions (nnU-Net's rule: keep a step only where it helps).

Rules: ``{"rule": "largest"}`` keeps the largest connected component; ``{"rule": "min_size", "min_area": f}``
removes components smaller than a fraction ``f`` of the image area (so a rule transfers across resolutions);
``{"rule": "empty"}`` predicts nothing: a candidate only for a class with no pixels in any out-of-fold truth (a class
the model never saw present can only add false positives; each empty image scores dice 1 when left empty).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SIZE_FRACTIONS = (0.1, 0.3, 0.6)  # of the class's median component area in the ground truth
RULES = ("none", "largest", "min_size", "empty")


def apply_rule(mask: np.ndarray, rule: dict | None) -> np.ndarray:
    """Apply one class's rule to a binary (H, W) mask; returns uint8 0/1."""
    if rule and rule.get("rule") == "empty":
        return np.zeros(mask.shape, np.uint8)
    mask = (mask > 0).astype(np.uint8)
    if not rule or rule.get("rule", "none") == "none" or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2 and rule["rule"] == "largest":  # background plus at most one component
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    if rule["rule"] == "largest":
        keep = np.zeros(count, np.uint8)
        keep[1 + int(np.argmax(areas))] = 1
    elif rule["rule"] == "min_size":
        min_pixels = rule["min_area"] * mask.size
        keep = np.concatenate([[0], (areas >= min_pixels).astype(np.uint8)])
    else:
        raise ValueError(f"unknown postprocessing rule {rule['rule']!r}")
    return keep[labels]


def candidate_rules(median_area_fraction: float) -> list[dict]:
    rules: list[dict] = [{"rule": "none"}, {"rule": "largest"}]
    if median_area_fraction > 0:
        rules += [{"rule": "min_size", "min_area": float(median_area_fraction * f)} for f in MIN_SIZE_FRACTIONS]
    else:  # the class is absent from every out-of-fold truth
        rules.append({"rule": "empty"})
    return rules


def median_component_area(mask: np.ndarray) -> float:
    """Median connected-component area of a binary mask as a fraction of its size (0 when empty)."""
    mask = (mask > 0).astype(np.uint8)
    if not mask.any():
        return 0.0
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return float(np.median(stats[1:, cv2.CC_STAT_AREA])) / mask.size


def upsample_mask(q: np.ndarray, size: tuple[int, int], threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """One class's (h, w) uint8 probabilities -> (H, W) boolean mask: bilinear upsampling on uint8 (4x less
    memory traffic than float32), then ``p > threshold``."""
    if q.shape != size:
        q = cv2.resize(q, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    out = np.empty(size, np.bool_) if out is None else out
    np.greater(q, threshold * 255, out=out)
    return out
