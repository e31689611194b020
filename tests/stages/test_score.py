from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from compkit.data import HANDBONE_CLASSES
from compkit.data.labelled import open_labelled
from compkit.evaluation.metrics import DICE_SMOOTH, DiceMeter, dice_per_class
from compkit.stages.encode_labels import encode_labels
from compkit.stages.score import score
from compkit.submission import rle
from compkit.util.errors import CompkitError
from tests.conftest import csv_rows, quiet


def test_dice_per_class_known_values():
    pred = np.zeros((3, 4, 4), np.uint8)
    true = np.zeros((3, 4, 4), np.uint8)
    pred[0, :2] = 1  # 8 px
    true[0, 1:3] = 1  # 8 px, 4 shared
    true[1, 0, 0] = 1  # missed entirely
    dice = dice_per_class(pred, true)  # class 2: both empty
    np.testing.assert_allclose(dice, [(8 + DICE_SMOOTH) / (16 + DICE_SMOOTH), DICE_SMOOTH / (1 + DICE_SMOOTH), 1.0])


def test_meter_means_over_images_then_classes():
    meter = DiceMeter(("a", "b"))
    meter.add(np.array([1.0, 0.0]))
    meter.add(np.array([0.5, 1.0]))
    np.testing.assert_allclose(meter.per_class(), [0.75, 0.5])
    assert meter.mean() == pytest.approx(0.625)


def test_pooled_dice_counts_every_pixel_of_every_image_once():
    """The papers' pixel F1: one big image's dice, not the mean of per-image dice (a small image weighs less)."""
    meter = DiceMeter(("vessel",))
    big_pred, big_true = np.zeros((1, 10, 10), bool), np.zeros((1, 10, 10), bool)
    big_pred[0, :4], big_true[0, :5] = True, True  # 40 predicted, 50 true, 40 shared
    small_pred, small_true = np.zeros((1, 2, 2), bool), np.ones((1, 2, 2), bool)  # 4 true pixels missed
    meter.update(big_pred, big_true)
    meter.update(small_pred, small_true)
    np.testing.assert_allclose(meter.pooled(), [(2 * 40 + DICE_SMOOTH) / (40 + 54 + DICE_SMOOTH)])
    assert meter.mean() == pytest.approx((80 / 90 + 0) / 2, abs=1e-4)
    assert DiceMeter(("a",)).pooled() == pytest.approx([1.0]), "nothing predicted, nothing true: as an empty image"


def test_perfect_submission_scores_one(synth_data, tmp_path):
    out = encode_labels(synth_data, tmp_path / "perfect.csv", console=quiet())
    assert score(out, synth_data, console=quiet()) == pytest.approx(1.0)


def test_known_imperfect_score(synth_data, tmp_path):
    """Two hand-edited rows, their dice worked out from pixel counts."""
    dataset = open_labelled(synth_data, "test")
    out = encode_labels(synth_data, tmp_path / "perfect.csv", console=quiet())
    rows = csv_rows(out)
    radius = HANDBONE_CLASSES.index("Radius")
    first = dataset.read_mask(dataset.samples[0])[radius]
    half = first.copy()
    columns = np.flatnonzero(first.any(axis=0))
    half[:, : int(columns.mean())] = 0  # keep the right part only: a subset of the truth
    rows[1 + radius][2] = rle.encode(half)
    rows[1 + 29 + 0][2] = ""  # second image, finger-1 predicted empty
    second_truth = dataset.read_mask(dataset.samples[1])[0]
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)

    p, g = half.sum(), first.sum()
    d_radius = (2 * p + DICE_SMOOTH) / (p + g + DICE_SMOOTH)
    d_finger = DICE_SMOOTH / (second_truth.sum() + DICE_SMOOTH)
    n = len(dataset.samples)
    expected = (27 + (n - 1 + d_radius) / n + (n - 1 + d_finger) / n) / 29
    assert 0 < p < g
    assert score(out, synth_data, console=quiet()) == pytest.approx(expected, abs=1e-12)


def test_train_split(synth_data, tmp_path):
    out = encode_labels(synth_data, tmp_path / "train.csv", split="train", console=quiet())
    assert score(out, synth_data, split="train", console=quiet()) == pytest.approx(1.0)


def test_missing_ground_truth(data_copy, tmp_path):
    out = encode_labels(data_copy, tmp_path / "perfect.csv", console=quiet())
    shutil.rmtree(data_copy.with_name("data_gt"))
    with pytest.raises(CompkitError, match="no ground truth for the test images: pass --gt"):
        score(out, data_copy, console=quiet())
