from __future__ import annotations

import numpy as np

from compkit.data import open_dataset
from compkit.data.cache import build_cache, load_sample
from tests.conftest import quiet


def test_cached_sample_equals_freshly_decoded(data_copy):
    dataset = open_dataset(data_copy)
    cache = build_cache(dataset, 48, console=quiet())
    assert len(cache) == len(dataset) and cache.size == 48
    for i, sample in enumerate(dataset.samples):
        image, mask, _ = load_sample(dataset, sample, 48)
        assert np.array_equal(cache.image(i), image)
        assert np.array_equal(cache.mask(i), mask)
        assert mask.shape == (29, 48, 48) and image.shape == (48, 48, 3)


def test_built_once_and_keyed_by_settings(data_copy):
    dataset = open_dataset(data_copy)
    first = build_cache(dataset, 48, console=quiet())
    stamp = (first.folder / "images.npy").stat().st_mtime_ns
    again = build_cache(dataset, 48, console=quiet())
    assert again.folder == first.folder and (again.folder / "images.npy").stat().st_mtime_ns == stamp
    clahe = build_cache(dataset, 48, {"clip_limit": 2.0, "tile_grid": 4}, console=quiet())
    assert clahe.folder != first.folder
    assert not np.array_equal(clahe.image(0), first.image(0))
    assert np.array_equal(clahe.mask(0), first.mask(0))
    assert not [p for p in first.folder.parent.iterdir() if p.name.startswith(".")], "no staging folder left"


def test_unlabelled_split(data_copy):
    test = open_dataset(data_copy, "test")
    cache = build_cache(test, 32, console=quiet())
    assert not cache.has_masks and cache.image(0).shape == (32, 32, 3)
