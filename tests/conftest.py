from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import NamedTuple

import huggingface_hub.constants  # noqa: F401  (imported before any test sets HF_HUB_OFFLINE: it reads it once)
import pytest
from rich.console import Console

from compkit.stages.synth import synth

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


def csv_rows(path: str | Path) -> list[list[str]]:
    """A CSV file's rows, header included (the file closed again)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def csv_dicts(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


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
    from compkit.stages.split import split
    from compkit.stages.train import train

    root = tmp_path_factory.mktemp("trained")
    data = copy_dataset(synth_data, root / "data")
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="all", overrides=TRAINED_TINY_OVERRIDES, out=root / "runs", console=quiet())
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
    from compkit.stages.split import split
    from compkit.stages.train import train

    root = tmp_path_factory.mktemp("fundus-aux")
    data = copy_dataset(fundus_data, root / "fundus")
    split(data, folds=2, seed=0, console=quiet())
    train(
        "tiny", data=data, fold="0", overrides=[*FAST, "train.epochs=1", FUNDUS_AUX], out=root / "runs", console=quiet()
    )
    return TrainedRun(data, root / "runs" / "tiny")


class NetworkCut(ConnectionRefusedError):
    """What a socket call raises on a machine without network (an OSError, as the real thing)."""


@pytest.fixture
def cut_network(monkeypatch):
    """Every connection attempt and DNS lookup fails as on a machine without network; yields the attempts made."""
    import socket

    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkCut(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def plant_hub_entry(hub: Path, repo_id: str, files: dict[str, bytes], revision: str | None = None) -> Path:
    """A Hugging Face hub cache entry exactly as the hub client writes one: ``blobs/<sha256>``, the snapshot's files
    as links to them, ``refs/main`` naming the revision. Returns the snapshot folder."""
    import hashlib
    import os

    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(f"../../blobs/{blob}", snapshot / name)
    return snapshot


PLANTED_MEAN, PLANTED_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="session")
def planted_weights(tmp_path_factory) -> dict:
    """A weights folder (``COMPKIT_WEIGHTS`` layout: ``hub/``) holding randomly initialised ImageNet-style entries for
    a timm encoder (``tu-resnet18`` -> timm/resnet18.a1_in1k) and an smp native one (``resnet18`` ->
    smp-hub/resnet18.imagenet at the revision smp pins), with the state dicts planted. Read-only for tests."""
    import json

    import segmentation_models_pytorch as smp
    import timm
    import torch
    from safetensors.torch import save

    folder = tmp_path_factory.mktemp("weights")
    with torch.random.fork_rng():  # the other tests' random streams stay as they were
        torch.manual_seed(1234)
        timm_state = timm.create_model("resnet18", pretrained=False).state_dict()
        native_state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    plant_hub_entry(
        folder / "hub",
        "timm/resnet18.a1_in1k",
        {"config.json": b'{"architecture": "resnet18"}', "model.safetensors": save(timm_state)},
    )
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    config = json.dumps(
        {"mean": PLANTED_MEAN, "std": PLANTED_STD, "input_space": "RGB", "input_range": [0, 1]}
    ).encode()
    plant_hub_entry(
        folder / "hub",
        settings["repo_id"],
        {"config.json": config, "model.safetensors": save(native_state)},
        settings["revision"],
    )
    return {"folder": folder, "timm": timm_state, "smp": native_state}


def screenshot(page: Path, folder: Path, width: int, height: int):
    """A headless-Chromium screenshot of an HTML page as a BGR array (skips where Debian's chromium is missing)."""
    import subprocess

    import cv2

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (`.ci/run` installs it)")
    shot = folder / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", f"--user-data-dir={folder / 'profile'}", f"--screenshot={shot}",
         f"--window-size={width},{height}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (height, width)
    return image
