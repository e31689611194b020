from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_image


@pytest.fixture
def fundus(fundus_data):
    """The session's fundus dataset, read-only."""
    return fundus_data


@pytest.fixture
def skin(isic_data):
    """The session's skin-lesion dataset, read-only."""
    return isic_data


def test_fundus_layout_is_detected(fundus):
    train = open_dataset(fundus)
    assert train.format_name == "masks" and train.rle_order == "F"
    assert train.classes == ("HardExudate", "Hemohedge", "IRMA", "Microaneurysms", "Neovascularization", "SoftExudate")
    assert len(train) == 6
    assert {s.patient for s in train.samples} == {"P0001", "P0002", "P0003"}, "patients from the CSV group both eyes"
    assert all(isinstance(s.meta["grade"], int) for s in train.samples)
    test = open_dataset(fundus, "test", labels=fundus.with_name("data_gt"))
    assert test.classes == train.classes and test.has_labels


def test_anti_aliased_masks_threshold_at_128(tmp_path):
    root = tmp_path / "d"
    image = np.zeros((4, 4, 3), np.uint8)
    write_image(root / "Original_Images" / "a.png", image)
    write_image(root / "Original_Images" / "b.png", image)
    mask = np.array([[0, 127, 128, 255]] * 4, np.uint8)
    write_image(root / "Lesion_Masks" / "a.png", mask)
    (root / "Other_Masks").mkdir()
    dataset = open_dataset(root)
    a = dataset.read_mask(dataset.samples[0])
    assert a.shape == (2, 4, 4)
    assert a[0].tolist() == [[0, 0, 1, 1]] * 4, "threshold at 128"
    assert not a[1].any() and not dataset.read_mask(dataset.samples[1]).any(), "a missing mask is an empty class"
    write_image(root / "Other_Masks" / "b.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(CompkitError, match="mask is 5x5, its image is 4x4"):
        dataset = open_dataset(root)
        dataset.read_mask(dataset.samples[1])


def test_isic_layout(skin):
    train = open_dataset(skin)
    assert train.format_name == "isic" and train.classes == ("lesion",)
    sample = train.samples[0]
    assert sample.patient.startswith("HAM_") and sample.meta["dx"] in {"nv", "mel", "bkl", "bcc"}
    mask = train.read_mask(sample)
    assert mask.shape == (1, 96, 96) and 0 < mask.mean() < 1
    assert train.submission_name(sample) == sample.image_path.stem
    lesions = [s.patient for s in train.samples]
    assert len(set(lesions)) == 4 and len(lesions) >= 4


def test_isic_image_without_mask(skin, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(skin, root)
    next((root / "train" / "masks").glob("*.png")).unlink()
    with pytest.raises(CompkitError, match="_segmentation.png"):
        open_dataset(root)
