"""Hand-bone X-rays whose forearm polygons run up to 15 % out of the bottom of the frame (as annotators draw them)
go split -> eda -> train -> ensemble -> submit -> score through the CLI, training on the masks clipped to the image."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from compkit.cli import app
from compkit.data import open_dataset
from compkit.data.cache import build_cache, resize_mask
from compkit.data.raster import rasterize
from compkit.stages.synth import synth
from compkit.util.fileio import read_json
from tests.conftest import FAST, quiet


def cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (
        f"compkit {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    )
    return result.output


@pytest.mark.slow
def test_forearms_out_of_frame_train_on_the_clipped_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = synth(
        tmp_path / "data", patients=3, test_patients=1, size=96, seed=3, console=quiet(), options={"forearm_out": 0.15}
    )
    dataset = open_dataset(data, "train")
    radius, ulna = dataset.classes.index("Radius"), dataset.classes.index("Ulna")
    assert max(p.points[:, 1].max() for s in dataset.samples for p in s.polygons) >= 96 + 10  # >= 10 % out

    assert "polygons clipped to the image" in cli("check-data", data).replace("\n", " ")
    cli("split", data, "--folds", 2, "--seed", 0)
    cli("eda", data, "--out", tmp_path / "eda", "--gallery", 0)
    clipped = read_json(tmp_path / "eda" / "fingerprint.json")["clipped_polygons"]
    assert set(clipped) == {"Radius", "Ulna"} and clipped["Radius"]["clipped"] == clipped["Radius"]["polygons"] == 6
    assert 0.1 < max(clipped["Radius"]["max_fraction"], clipped["Ulna"]["max_fraction"]) <= 0.15

    overrides = [f"--set={o}" for o in (*FAST, "train.epochs=1", "infer.tta=none")]
    cli("train", "--recipe", "tiny", "--data", data, "--fold", 0, *overrides, "--out", tmp_path / "runs")
    # The cache training read holds the polygons clipped to the image, rasterised, then resized.
    cache = build_cache(dataset, 64, console=quiet())
    for sample in dataset.samples:
        clipped_mask = rasterize(sample.polygons, len(dataset.classes), dataset.image_shape(sample))
        assert clipped_mask[[radius, ulna], -1].any()  # the forearms reach the bottom row
        np.testing.assert_array_equal(cache.mask(cache.position[sample.image_id]), resize_mask(clipped_mask, 64))

    cli("ensemble", tmp_path / "runs" / "tiny", "--name", "e", "--out", tmp_path / "ens")
    cli("submit", tmp_path / "ens" / "e", "--out", tmp_path / "sub.csv")
    with open(tmp_path / "sub.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 2 * len(dataset.classes)  # 2 test images, 29 classes
    assert 0.0 <= float(re.search(r"mean dice: ([\d.]+)", cli("score", tmp_path / "sub.csv", "--data", data))[1]) <= 1.0
    cli("encode-labels", data, "--out", tmp_path / "labels.csv")  # the ground truth, clipped the same way, scores 1
    assert "mean dice: 1.0000" in cli("score", tmp_path / "labels.csv", "--data", data)
