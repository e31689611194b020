"""splits.json is checked when read (compkit.data.splits): each original image validates in exactly one fold, no
fold trains on its own validation images, no image the dataset lacks; augmented images validate nowhere."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from compkit.data.splits import check_current, load_splits
from compkit.util.errors import CompkitError


def sample(image_id: str, augmented: bool = False):
    return SimpleNamespace(image_id=image_id, patient=image_id[0], meta={"augmented": True} if augmented else {})


DATASET = SimpleNamespace(
    samples=[sample(i) for i in ("a1", "a2", "b1", "b2", "c1")] + [sample("a1_rot90", augmented=True)]
)
GOOD = [
    {"train": ["b1", "b2", "c1", "a1_rot90"], "val": ["a1", "a2"]},
    {"train": ["a1", "a2", "a1_rot90"], "val": ["b1", "b2", "c1"]},
]


def written(tmp_path, folds) -> dict:
    (tmp_path / "splits.json").write_text(json.dumps({"version": 1, "folds": folds}))
    return load_splits(tmp_path)


def test_a_consistent_split_reads_and_augmented_images_validate_nowhere(tmp_path):
    splits = written(tmp_path, GOOD)
    check_current(splits, DATASET, tmp_path / "splits.json")


def test_an_image_in_two_validation_folds_is_refused_naming_it(tmp_path):
    folds = [{"train": ["b1", "b2", "c1"], "val": ["a1", "a2"]}, {"train": ["a2"], "val": ["a1", "b1", "b2", "c1"]}]
    with pytest.raises(
        CompkitError,
        match=r"splits.json: 1 images are in the validation lists of several folds \(first: a1 in folds 0 and 1\)",
    ):
        written(tmp_path, folds)


def test_an_image_in_train_and_val_of_one_fold_is_refused_naming_the_first_few(tmp_path):
    folds = [
        {"train": ["a1", "a2", "b1", "b2", "c1"], "val": ["a1", "a2"]},
        {"train": ["a1", "a2", "c1"], "val": ["b1", "b2", "c1"]},
    ]
    with pytest.raises(
        CompkitError,
        match=r"3 images are in both train and val of one fold \(first: a1 in fold 0, a2 in fold 0, c1 in fold 1\)",
    ):
        written(tmp_path, folds)


def test_an_original_image_that_validates_nowhere_is_refused(tmp_path):
    folds = [
        {"train": ["b1", "b2", "c1", "a1_rot90"], "val": ["a1", "a2"]},
        {"train": ["a1", "a2", "c1", "a1_rot90"], "val": ["b1", "b2"]},
    ]
    splits = written(tmp_path, folds)
    with pytest.raises(CompkitError, match=r"1 images are in no fold's validation list \(first: c1\)"):
        check_current(splits, DATASET, tmp_path / "splits.json")


def test_images_the_dataset_lacks_are_named_first_few(tmp_path):
    folds = [{"train": GOOD[0]["train"] + ["x1", "x2", "x3", "x4"], "val": GOOD[0]["val"]}, GOOD[1]]
    splits = written(tmp_path, folds)
    with pytest.raises(CompkitError, match=r"names 4 images the dataset lacks \(first: x1, x2, x3, \.\.\.\)"):
        check_current(splits, DATASET, tmp_path / "splits.json")
