from __future__ import annotations

import numpy as np
import pytest

from compkit.training.augmentation import create_augmentation
from compkit.util.errors import CompkitError


def test_builds_from_names_and_moves_mask_with_image():
    aug = create_augmentation([{"name": "HorizontalFlip", "p": 1.0}])
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :2] = 255
    mask = np.zeros((8, 8, 5), np.uint8)
    mask[:, :2, 3] = 1
    out = aug(image=image, mask=mask)
    assert out["image"][:, -2:].min() == 255 and out["mask"][:, -2:, 3].min() == 1
    assert out["mask"].shape == (8, 8, 5)


def test_seeded_is_repeatable():
    aug = create_augmentation([{"name": "Rotate", "limit": 30, "p": 1.0}])
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    aug.set_random_seed(7)
    a = aug(image=image)["image"]
    aug.set_random_seed(7)
    assert np.array_equal(a, aug(image=image)["image"])


def test_empty_list_is_none():
    assert create_augmentation([]) is None


def test_unknown_transform_suggests():
    with pytest.raises(
        CompkitError, match=r"unknown albumentations transform 'HorizontalFlp' \(did you mean 'HorizontalFlip'\?\)"
    ):
        create_augmentation([{"name": "HorizontalFlp"}])


def test_bad_parameters():
    with pytest.raises(CompkitError, match="Rotate: bad parameters"):
        create_augmentation([{"name": "Rotate", "limit": "lots"}])


def test_a_crop_larger_than_the_images_is_one_line_before_training():
    from compkit.training.augmentation import check_crops

    crop = {"name": "CropNonEmptyMaskIfExists", "height": 96, "width": 96}
    with pytest.raises(CompkitError, match=r"CropNonEmptyMaskIfExists crops 96 px from 64 px images"):
        check_crops([crop], 64)
    check_crops([crop], 96)  # as large as the images: fine
    check_crops([{"name": "RandomCrop", "height": 96, "width": 96, "pad_if_needed": True}], 64)  # pads
