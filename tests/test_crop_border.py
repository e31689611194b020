"""data.crop_border: the black border of fundus photographs cropped before resizing, and pasted back on submit
(the pasting itself: tests/test_submit.py)."""
from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.cache import build_cache, foreground_box, load_sample
from compkit.ensemble import ensemble
from compkit.score import score
from compkit.split import split
from compkit.store import Store
from compkit.submit import submit
from compkit.train import train
from tests.conftest import FAST, quiet

# Test mean dice of the 1-epoch crop_border pipeline below, measured at 0.084 (an empty submission scores 0.083
# on this data: most lesion classes are absent from most eyes). A measured floor, comfortably below.
CROP_PIPELINE_FLOOR = 0.05


@pytest.fixture
def fundus(fundus_data):
    """The session's fundus dataset (128 px), read-only."""
    return fundus_data


def test_box_is_the_eye_disk(fundus, tmp_path):
    dataset = open_dataset(fundus)
    image = dataset.read_image(dataset.samples[0])
    y0, y1, x0, x1 = foreground_box(image)
    assert 0 < y0 < 20 and 108 < y1 < 128 and 0 < x0 < 20 and 108 < x1 < 128
    assert image[:y0].max() <= 10 and image[:, x1:].max() <= 10
    cache = build_cache(dataset, 64, crop=True, cache_dir=tmp_path / "cache", console=quiet())  # not inside the shared data
    fresh_image, fresh_mask, box = load_sample(dataset, dataset.samples[0], 64, crop=True)
    assert cache.box(0) == box == (y0, y1, x0, x1)
    assert np.array_equal(cache.image(0), fresh_image) and np.array_equal(cache.mask(0), fresh_mask)


@pytest.mark.slow
def test_pipeline_with_crop(fundus_copy, tmp_path):
    fundus = fundus_copy
    split(fundus, folds=2, seed=0, force=True, console=quiet())
    runs = tmp_path / "runs"
    train("tiny", data=fundus, fold="all", overrides=[*FAST, "train.epochs=1", "data.crop_border=true"], runs_dir=runs, console=quiet())
    assert Store(runs / "tiny" / "fold0" / "test").box(open_dataset(fundus, "test").samples[0].image_id) is not None
    ens = ensemble([runs / "tiny"], name="c", out_dir=tmp_path / "ens", console=quiet())
    assert score(submit(ens, out=tmp_path / "s.csv", console=quiet()), fundus, console=quiet()) > CROP_PIPELINE_FLOOR
