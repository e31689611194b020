"""A real data set, read in place exactly as distributed: DRIVE, the retinal vessels of J. Staal et al., "Ridge-based
vessel segmentation in color images of the retina", IEEE TMI 23(4), 2004 (../shared/data/DRIVE, read-only; never
copied into the repository). check-data --out -> split --out -> train -> ensemble -> submit -> score in the field of
view, all through the command line, nothing written into the data."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from compkit.cli import app
from compkit.data import open_dataset
from compkit.submission import rle
from tests.conftest import FAST

DRIVE = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "DRIVE").resolve()  # ../shared may be a link
HEIGHT, WIDTH = 584, 565
# 128 px with CLAHE (vessels stand out; without it 20 epochs stay at the all-foreground level), 20 epochs of 5 steps.
# Measured (2 CPU cores shared with other work, 34 s for the whole test): test mean dice 0.488, pooled 0.490 in the
# field of view; predicting the whole field of view scores 0.226, an empty prediction 0.
TRAINING = [
    *FAST,
    "data.image_size=128",
    "train.epochs=20",
    "train.batch_size=2",
    "data.clahe={clip_limit: 2.0, tile_grid: 8}",
]
FLOOR = 0.30

runner = CliRunner(env={"COLUMNS": "200"})  # tables and hints on one line each


@pytest.fixture(scope="module")
def drive() -> Path:
    if not (DRIVE / "training" / "images").is_dir():
        pytest.skip(
            "../shared/data/DRIVE is absent: the DRIVE set is read in place from beside the repository (see ../shared/data/README.md)"
        )
    return DRIVE


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def gif(path: Path) -> np.ndarray:
    """A GIF's pixel values as PIL decodes it: the check on compkit's own reading."""
    return np.asarray(Image.open(path).convert("L"))


@pytest.mark.slow
def test_drive_as_distributed(drive, tmp_path, monkeypatch):
    before = snapshot(drive)
    monkeypatch.setenv("COMPKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    description, splits = tmp_path / "dataset.yaml", tmp_path / "splits.json"

    out = run("check-data", "--data", drive, "--write", "--out", description)
    assert "train: 20 images, 20 with labels" in out and "test: 20 images, 20 with labels" in out
    assert re.search(r"values in 1st_manual/\*\.gif +0, 255 *\n", out) and re.search(
        r"image sizes \(w x h\) +565x584 \(20\)", out
    )
    train, test = open_dataset(description), open_dataset(description, "test")
    assert train.root.resolve() == drive
    assert [s.image_id for s in train.samples] == [f"{n}_training.tif" for n in range(21, 41)]
    assert [s.image_id for s in test.samples] == [f"{n:02d}_test.tif" for n in range(1, 21)]

    trivial, shares = [], []  # the dice of predicting the whole field of view, per test image; vessels' share of it
    for dataset, kind in ((train, "training"), (test, "test")):
        for sample in dataset.samples:
            number = sample.image_id.split("_")[0]
            assert sample.label_path.name == f"{number}_manual1.gif", "paired by the leading number"
            vessels = dataset.read_mask(sample)
            ignore = dataset.read_ignore(sample, (HEIGHT, WIDTH))
            assert vessels.shape == ignore.shape == (1, HEIGHT, WIDTH)
            fov = gif(drive / kind / "mask" / f"{number}_{kind}_mask.gif") > 127
            assert np.array_equal(ignore[0].astype(bool), ~fov), "everything outside the field of view is ignored"
            assert 0.25 < 1 - fov.mean() < 0.40
            assert np.array_equal(vessels[0].astype(bool), gif(sample.label_path) > 127)
            inside = vessels[0].astype(bool) & fov
            shares.append(inside.sum() / fov.sum())
            assert 0.07 < shares[-1] < 0.20, f"{sample.image_id}: {shares[-1]:.1%} of the field of view are vessels"
            if kind == "test":
                trivial.append(2 * inside.sum() / (fov.sum() + inside.sum()))
    assert 0.11 < np.mean(shares) < 0.14  # 12.5 % (training) and 12.7 % (test)
    image = train.read_image(train.samples[0])
    rgb = np.asarray(Image.open(drive / "training" / "images" / "21_training.tif").convert("RGB"))
    assert np.array_equal(image[..., ::-1], rgb), "the LZW TIFF decodes to PIL's pixels (BGR in compkit)"

    out = run("split", "--data", description, "--folds", 2, "--seed", 0, "--out", splits)
    assert f"--set data.splits={splits}" in " ".join(out.split())  # the hint that reads it back
    sets = [arg for override in [*TRAINING, f"data.splits={splits}"] for arg in ("--set", override)]
    run("train", "--recipe", "tiny", "--data", description, "--fold", "all", *sets, "--out", tmp_path / "runs")
    assert (tmp_path / "runs" / "tiny" / "fold1" / "best.pt").is_file()
    run("ensemble", tmp_path / "runs" / "tiny", "--name", "drive", "--out", tmp_path / "ensembles")
    submission = tmp_path / "drive.csv"
    run("submit", tmp_path / "ensembles" / "drive", "--out", submission)
    with open(submission, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_name", "class", "rle"] and [r[0] for r in rows[1:]] == [s.image_id for s in test.samples]
    runs = np.array(rows[1][2].split(), dtype=np.int64).reshape(-1, 2)
    assert (runs[:, 0] + runs[:, 1] - 1).max() <= HEIGHT * WIDTH, "encoded at the original 565x584"
    first = rle.decode(rows[1][2], (HEIGHT, WIDTH), "F").astype(bool)
    assert first.shape == (HEIGHT, WIDTH) and 0.02 < first.mean() < 0.3
    assert not (first & test.read_ignore(test.samples[0], (HEIGHT, WIDTH))[0].astype(bool)).any(), (
        "nothing outside the field of view"
    )

    out = run("score", submission, "--data", description)
    dice = float(re.search(r"mean dice: ([0-9.]+)", out).group(1))
    pooled = float(re.search(r"pooled dice \(pixel F1.*?: ([0-9.]+)", out).group(1))
    assert np.mean(trivial) < 0.25 < FLOOR < dice, f"mean dice {dice:.4f} in the field of view"
    assert FLOOR < pooled < 0.9
    assert snapshot(drive) == before, "nothing written into the data"
    assert any((tmp_path / "cache").iterdir()), "the preprocessing cache of read-only data went to $COMPKIT_CACHE"
