"""compkit augment: exact label transforms, patients kept together, and the result trains."""
from __future__ import annotations

import numpy as np
import pytest

from compkit.augment_offline import augment, mosaic, rotate
from compkit.data import open_dataset
from compkit.errors import CompkitError
from compkit.metrics import dice_per_class
from compkit.split import make_splits, patient_groups
from compkit.synth import synth
from compkit.train import train
from tests.conftest import quiet
from tests.test_train import FAST


def test_rotation_moves_pixels_and_labels_together():
    image = np.zeros((20, 20, 3), np.uint8)
    mask = np.zeros((1, 20, 20), np.uint8)
    image[2:5, 8:12] = 255
    mask[0, 2:5, 8:12] = 1
    rot_image, rot_mask = rotate(image, mask, 180, flip=False)
    assert np.array_equal(rot_image[..., 0] > 0, rot_mask[0] > 0)
    assert rot_mask.sum() == 12 and rot_mask[0, :10].sum() == 0, "the bar moved to the bottom half"


def test_mosaic_takes_one_quadrant_from_each_image():
    rng = np.random.default_rng(0)
    parts = [(np.full((10, 10, 3), v, np.uint8), np.full((1, 10, 10), v % 2, np.uint8)) for v in (1, 2, 3, 4)]
    image, mask = mosaic(parts, rng)
    assert set(np.unique(image)) == {1, 2, 3, 4}
    assert np.array_equal(mask[0], image[..., 0] % 2)


def test_augmented_handbone_dataset(data_copy, tmp_path):
    out = augment(data_copy, tmp_path / "aug", mosaics=1, rotations=[10], flip=True, console=quiet())
    source = open_dataset(data_copy)
    augmented = open_dataset(out)
    assert len(augmented) == 2 * len(source) + 1
    assert open_dataset(out, "test").samples, "the test set comes along"
    # Labels follow the pixels: the traced polygons of a rotated copy re-rasterise to the warped original mask.
    original = source.samples[0]
    rotated = next(s for s in augmented.samples if s.image_id.endswith("_rot10f.png") and s.image_id.startswith(original.patient))
    _, expected = rotate(source.read_image(original), source.read_mask(original), 10, flip=True)
    dice = dice_per_class(augmented.read_mask(rotated), expected)
    assert dice.mean() > 0.95
    assert rotated.patient == original.patient
    # A mosaic ties its patients into one group: none of them is ever in two folds.
    mosaics = [s for s in augmented.samples if "mosaic" in s.image_id]
    groups = dict(zip((s.image_id for s in augmented.samples), patient_groups(augmented), strict=True))
    splits = make_splits(augmented, 2, 0, None)
    for m in mosaics:
        members = {groups[s.image_id] for s in augmented.samples if s.patient in m.meta["source_patients"]}
        assert len(members) == 1
    for fold in splits["folds"]:
        val_patients = {s.patient for s in augmented.samples if s.image_id in set(fold["val"])}
        train_patients = {s.patient for s in augmented.samples if s.image_id in set(fold["train"])}
        assert not val_patients & train_patients


def test_augmented_dataset_trains(data_copy, tmp_path):
    from compkit.split import split

    out = augment(data_copy, tmp_path / "aug", mosaics=1, console=quiet())
    split(out, folds=2, seed=0, console=quiet())
    [result] = train("tiny", data=out, fold="0", overrides=[*FAST, "train.epochs=1"], runs_dir=tmp_path / "runs", console=quiet())
    assert result["epochs"] == 1


def test_masks_format_and_errors(tmp_path):
    data = tmp_path / "fundus"
    synth(data, patients=2, test_patients=1, size=64, kind="fundus", console=quiet())
    out = augment(data, tmp_path / "aug", rotations=[90], console=quiet())
    augmented = open_dataset(out)
    assert augmented.format_name == "masks" and len(augmented) == 8
    rotated = next(s for s in augmented.samples if "rot90" in s.image_id)
    assert rotated.meta["source_patients"].startswith("P000")
    with pytest.raises(CompkitError, match="nothing to do"):
        augment(data, tmp_path / "none", console=quiet())
