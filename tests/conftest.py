from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from rich.console import Console

from compkit.synth import synth

# A tiny run that trains in seconds on a CPU: 64 px, small decoder, no loader workers.
FAST = [
    "data.image_size=64",
    "train.epochs=3",
    "train.batch_size=3",
    "train.workers=0",
    "model.params.decoder_channels=[32, 16, 16, 8, 8]",
    "optim.lr=0.005",
    "infer.batch_size=8",
]
# What `trained_tiny_run` was trained with (recipe `tiny`, fold "all").
TRAINED_TINY_OVERRIDES = [*FAST, "train.epochs=1"]


def quiet() -> Console:
    return Console(quiet=True)


def copy_dataset(source: Path, root: Path) -> Path:
    """A copy of a synthetic dataset and its ``_gt`` folder (when there is one) as ``root``."""
    shutil.copytree(source, root)
    gt = source.with_name(source.name + "_gt")
    if gt.is_dir():
        shutil.copytree(gt, root.with_name(root.name + "_gt"))
    return root


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic dataset shared read-only by the tests (copy it before changing it)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synth(root, patients=6, test_patients=2, size=96, seed=0, console=quiet())
    return root


@pytest.fixture
def data_copy(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic dataset (and its _gt folder) that a test may break."""
    return copy_dataset(synth_data, tmp_path / "data")


@pytest.fixture(scope="session")
def fundus_data(tmp_path_factory) -> Path:
    """The synthetic fundus (``masks`` format) dataset, synthesised once per session and shared read-only:
    3 patients (6 eyes) for training, 1 (2 eyes) for testing, 128 px, test labels in ``data_gt``."""
    root = tmp_path_factory.mktemp("fundus") / "data"
    synth(root, patients=3, test_patients=1, size=128, kind="fundus", console=quiet())
    return root


@pytest.fixture
def fundus_copy(fundus_data, tmp_path) -> Path:
    """A private copy of the fundus dataset (and its _gt folder) that a test may split, train on or break."""
    return copy_dataset(fundus_data, tmp_path / "fundus")


@pytest.fixture(scope="session")
def isic_data(tmp_path_factory) -> Path:
    """A synthetic skin-lesion (``isic`` format) dataset: 4 lesions for training, 1 for testing, 96 px. Read-only."""
    root = tmp_path_factory.mktemp("isic") / "data"
    synth(root, patients=4, test_patients=1, size=96, kind="isic", console=quiet())
    return root


class TrainedRun(NamedTuple):
    data: Path  # the dataset it was trained on (split into 2 folds; its preprocessing cache is inside)
    run: Path  # runs/tiny with fold0/ and fold1/ (recipe, checkpoints, results, oof/ and test/ stores)


@pytest.fixture(scope="session")
def trained_tiny_run(synth_data, tmp_path_factory) -> TrainedRun:
    """`tiny` trained once per session on every fold (2) of a copy of the synthetic data, for 1 epoch at 64 px
    (``TRAINED_TINY_OVERRIDES``). Shared read-only: copy the run folder (``copy_run``) before changing it."""
    from compkit.split import split
    from compkit.train import train

    root = tmp_path_factory.mktemp("trained")
    data = copy_dataset(synth_data, root / "data")
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="all", overrides=TRAINED_TINY_OVERRIDES, runs_dir=root / "runs", console=quiet())
    return TrainedRun(data, root / "runs" / "tiny")


def copy_run(run: Path, target: Path) -> Path:
    """A private copy of a run (or fold) folder; its recipes still point at the shared dataset."""
    shutil.copytree(run, target)
    return target


FUNDUS_AUX = "model.aux={classes: 5, target: 'csv:grade'}"


@pytest.fixture(scope="session")
def trained_fundus_aux(fundus_data, tmp_path_factory) -> TrainedRun:
    """`tiny` with a 5-grade classification head (target: the CSV's ``grade`` column) trained once per session on
    fold 0 (of 2) of a copy of the fundus data, 1 epoch (``run / "fold0"``). Read-only: copy it before changing it."""
    from compkit.split import split
    from compkit.train import train

    root = tmp_path_factory.mktemp("fundus-aux")
    data = copy_dataset(fundus_data, root / "fundus")
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="0", overrides=[*FAST, "train.epochs=1", FUNDUS_AUX], runs_dir=root / "runs", console=quiet())
    return TrainedRun(data, root / "runs" / "tiny")
