"""compkit augment: exact label transforms, patients kept together, and the result trains."""

from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.splits import load_splits
from compkit.evaluation.metrics import dice_per_class
from compkit.stages.augment import augment, mosaic, rotate
from compkit.stages.split import split
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.util.errors import CompkitError
from tests.conftest import FAST, quiet


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
    rotated = next(
        s for s in augmented.samples if s.image_id.endswith("_rot10f.png") and s.image_id.startswith(original.patient)
    )
    _, expected = rotate(source.read_image(original), source.read_mask(original), 10, flip=True)
    dice = dice_per_class(augmented.read_mask(rotated), expected)
    assert dice.mean() > 0.95
    assert rotated.patient == original.patient
    assert all(s.meta.get("augmented") for s in augmented.samples if "rot10f" in s.image_id or "mosaic" in s.image_id)
    assert_no_leak(augmented, load_splits(out))


def test_an_existing_output_is_replaced_only_when_asked(data_copy, tmp_path):
    out = augment(data_copy, tmp_path / "aug", flip=True, console=quiet())
    with pytest.raises(CompkitError, match="already exists and is not empty \\(use --exist-ok to replace it\\)"):
        augment(data_copy, out, rotations=[90], console=quiet())
    augment(data_copy, out, rotations=[90], exist_ok=True, console=quiet())
    assert any("rot90" in s.image_id for s in open_dataset(out).samples)
    augment(data_copy, out, flip=True, exist_ok=True, console=quiet())
    assert not any("rot90" in s.image_id for s in open_dataset(out).samples), "replaced, not added to"


def assert_no_leak(dataset, splits):
    """No fold trains on an image made from one of its validation patients, and only originals validate."""
    by_id = {s.image_id: s for s in dataset.samples}
    originals = {s.image_id for s in dataset.samples if not s.meta.get("augmented")}
    assert sorted(i for fold in splits["folds"] for i in fold["val"]) == sorted(originals), (
        "every original validates once"
    )
    for fold in splits["folds"]:
        val_patients = {by_id[i].patient for i in fold["val"]}
        for image_id in fold["train"]:
            sources = by_id[image_id].meta.get("source_patients") or [by_id[image_id].patient]
            sources = sources.split("|") if isinstance(sources, str) else sources
            assert not set(sources) & val_patients, f"{image_id} trains in the fold that validates {sources}"


@pytest.mark.slow
def test_mosaics_respect_folds_on_a_realistic_patient_count(tmp_path):
    """100 patients, 200 mosaics: before, mosaics tied every patient into one group and `split --folds 2` failed."""
    data = tmp_path / "data"
    synth(data, patients=100, test_patients=0, size=64, seed=3, console=quiet())
    split(data, folds=5, seed=0, console=quiet())
    out = augment(data, tmp_path / "aug", mosaics=200, console=quiet())
    augmented = open_dataset(out)
    carried = load_splits(out)
    assert carried["num_folds"] == 5 and carried["augmented"] == 200
    assert_no_leak(augmented, carried)
    for k, fold in enumerate(load_splits(data)["folds"]):
        assert set(carried["folds"][k]["val"]) == set(fold["val"]), "the source's folds carry over"
        mosaics_here = [i for i in carried["folds"][k]["train"] if "mosaic" in i]
        assert 150 <= len(mosaics_here) <= 170, "about 4/5 of the mosaics train in each fold (each comes from one fold)"
    split(out, folds=5, seed=0, console=quiet())  # the same settings: reused as carried
    assert load_splits(out) == carried
    split(out, folds=2, seed=1, exist_ok=True, console=quiet())  # other folds: regrouped by patient, still no leak
    assert_no_leak(augmented, load_splits(out))


@pytest.mark.slow
def test_augmented_dataset_trains(data_copy, tmp_path):
    out = augment(data_copy, tmp_path / "aug", mosaics=1, console=quiet())
    split(out, folds=2, seed=0, exist_ok=True, console=quiet())
    [result] = train(
        "tiny", data=out, fold="0", overrides=[*FAST, "train.epochs=1"], out=tmp_path / "runs", console=quiet()
    )
    assert result["epochs"] == 1


def test_masks_format_and_errors(fundus_data, tmp_path):
    data = fundus_data  # 3 patients, 6 eyes; read-only (augment writes elsewhere)
    out = augment(data, tmp_path / "aug", rotations=[90], console=quiet())
    augmented = open_dataset(out)
    assert augmented.format_name == "masks" and len(augmented) == 2 * 6, "each original and its rotation"
    rotated = next(s for s in augmented.samples if "rot90" in s.image_id)
    assert rotated.meta["source_patients"].startswith("P000")
    with pytest.raises(CompkitError, match="nothing to do"):
        augment(data, tmp_path / "none", console=quiet())
