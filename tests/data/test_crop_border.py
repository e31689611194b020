"""data.crop_border: the black border of fundus photographs cropped before resizing, and pasted back on submit
(the pasting itself: tests/stages/test_submit.py)."""

from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.cache import build_cache, foreground_box, load_sample
from compkit.evaluation.postprocess import upsample_mask
from compkit.stages.ensemble import ensemble
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.train import train
from compkit.stores.members import open_member
from compkit.stores.probabilities import Store
from compkit.submission import rle
from compkit.util.fileio import read_json
from tests.conftest import FAST, csv_rows, quiet


def disk_bounds(image: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the synthetic eye disk, read independently of foreground_box: the red channel (BGR) is
    over 100 inside the disk, even at its vignetted edge, and 0 outside it."""
    ys, xs = np.nonzero(image[..., 2] > 50)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


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
    cache = build_cache(
        dataset, 64, crop=True, cache_dir=tmp_path / "cache", console=quiet()
    )  # not inside the shared data
    fresh_image, fresh_mask, box = load_sample(dataset, dataset.samples[0], 64, crop=True)
    assert cache.box(0) == box == (y0, y1, x0, x1)
    assert np.array_equal(cache.image(0), fresh_image) and np.array_equal(cache.mask(0), fresh_mask)


@pytest.mark.slow
def test_pipeline_with_crop(fundus_copy, tmp_path):
    fundus = fundus_copy
    split(fundus, folds=2, seed=0, exist_ok=True, console=quiet())
    runs = tmp_path / "runs"
    train(
        "tiny",
        data=fundus,
        fold="all",
        overrides=[*FAST, "train.epochs=1", "data.crop_border=true"],
        out=runs,
        console=quiet(),
    )
    test = open_dataset(fundus, "test")
    store = Store(runs / "tiny" / "fold0" / "test")
    for s in test.samples:  # each test image's probabilities cover its eye disk, give or take its anti-aliased rim
        assert np.allclose(store.box(s.image_id), disk_bounds(test.read_image(s)), atol=2)
    ens = ensemble([runs / "tiny"], name="c", out=tmp_path / "ens", console=quiet())
    # One epoch learns next to nothing (an empty submission scores 0.083 here: most lesion classes are absent from
    # most eyes), so the submission's score is no check of the crop; the placement is checked below. What is
    # checked here: the pipeline submits and scores, and what the ensemble kept does not lose to 0.5 held out.
    figures = read_json(ens / "members.json")
    assert figures["oof_dice_cross_validated"] >= figures["oof_dice_at_0.5"]
    assert 0 <= score(submit(ens, out=tmp_path / "s.csv", console=quiet()), fundus, console=quiet()) <= 1

    # The ensemble's predictions go back where they came from: inside the first test image's eye disk, at its
    # place. A threshold at the median probability of the least uniform class makes about half the disk foreground.
    member, first = open_member(ens), test.samples[0]
    q, (y0, y1, x0, x1) = member.test_uint8(first.image_id), member.box(first.image_id)
    c = int(np.argmax([q[k].std() if test.classes[k] not in (member.postprocess or {}) else -1 for k in range(len(q))]))
    threshold = (float(np.median(q[c])) + 0.5) / 255
    expected = np.zeros((128, 128), np.uint8)
    expected[y0:y1, x0:x1] = upsample_mask(q[c], (y1 - y0, x1 - x0), threshold)
    assert 0 < expected.sum() < 0.9 * (y1 - y0) * (x1 - x0)
    out = submit(ens, out=tmp_path / "half.csv", threshold=str(threshold), console=quiet())
    row = csv_rows(out)[1 + c]  # image by image, class by class
    assert test.classes[c] in row
    assert np.array_equal(rle.decode(row[2], (128, 128), test.rle_order), expected)
