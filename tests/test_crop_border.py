"""data.crop_border: the black border of fundus photographs cropped before resizing, and pasted back on submit."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit import rle
from compkit.data import open_dataset
from compkit.data.cache import build_cache, foreground_box, load_sample
from compkit.ensemble import ensemble
from compkit.score import score
from compkit.split import split
from compkit.store import Store, StoreWriter
from compkit.submit import submit
from compkit.synth import synth
from compkit.train import train
from tests.conftest import quiet
from tests.test_train import FAST


@pytest.fixture(scope="module")
def fundus(tmp_path_factory):
    root = tmp_path_factory.mktemp("crop") / "data"
    synth(root, patients=3, test_patients=1, size=128, kind="fundus", console=quiet())
    return root


def test_box_is_the_eye_disk(fundus):
    dataset = open_dataset(fundus)
    image = dataset.read_image(dataset.samples[0])
    y0, y1, x0, x1 = foreground_box(image)
    assert 0 < y0 < 20 and 108 < y1 < 128 and 0 < x0 < 20 and 108 < x1 < 128
    assert image[:y0].max() <= 10 and image[:, x1:].max() <= 10
    cache = build_cache(dataset, 64, crop=True, console=quiet())
    fresh_image, fresh_mask, box = load_sample(dataset, dataset.samples[0], 64, crop=True)
    assert cache.box(0) == box == (y0, y1, x0, x1)
    assert np.array_equal(cache.image(0), fresh_image) and np.array_equal(cache.mask(0), fresh_mask)


def test_submit_pastes_cropped_probabilities_back(fundus, tmp_path):
    test = open_dataset(fundus, "test")
    boxes = {}
    with StoreWriter(tmp_path / "store", test.classes, (64, 64)) as w:
        for s in test.samples:
            boxes[s.image_id] = foreground_box(test.read_image(s))
            probs = np.zeros((len(test.classes), 64, 64), np.float32)
            probs[0] = 1.0  # class 0 everywhere inside the crop
            w.write(s.image_id, probs, (128, 128), boxes[s.image_id])
    out = submit(tmp_path / "store", out=tmp_path / "sub.csv", data=fundus, console=quiet())
    rows = list(csv.reader(open(out)))[1:]
    for k, s in enumerate(test.samples):
        y0, y1, x0, x1 = boxes[s.image_id]
        expected = np.zeros((128, 128), np.uint8)
        expected[y0:y1, x0:x1] = 1
        assert np.array_equal(rle.decode(rows[k * len(test.classes)][2], (128, 128), test.rle_order), expected)
        assert rows[k * len(test.classes) + 1][2] == ""


def test_pipeline_with_crop(fundus, tmp_path):
    split(fundus, folds=2, seed=0, force=True, console=quiet())
    runs = tmp_path / "runs"
    train("tiny", data=fundus, fold="all", overrides=[*FAST, "train.epochs=1", "data.crop_border=true"], runs_dir=runs, console=quiet())
    assert Store(runs / "tiny" / "fold0" / "test").box(open_dataset(fundus, "test").samples[0].image_id) is not None
    ens = ensemble([runs / "tiny"], name="c", out_dir=tmp_path / "ens", console=quiet())
    assert 0.0 <= score(submit(ens, out=tmp_path / "s.csv", console=quiet()), fundus, console=quiet()) <= 1.0
