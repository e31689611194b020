from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import compkit.families.smp as smp_module
from compkit.errors import CompkitError
from compkit.recipe import load_recipe
from compkit.split import split
from compkit.store import Store
from compkit.checkpoint import load_checkpoint
from compkit.families.smp import CachedSamples
from compkit.prediction import ValidationDice
from compkit.train import train
from tests.conftest import quiet

FAST = [
    "data.image_size=64",
    "train.epochs=3",
    "train.batch_size=3",
    "train.workers=0",
    "model.params.decoder_channels=[32, 16, 16, 8, 8]",
    "optim.lr=0.005",
    "infer.batch_size=8",
]


@pytest.fixture
def split_data(data_copy):
    split(data_copy, folds=2, seed=0, console=quiet())
    return data_copy


def rows(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_lowers_loss_and_writes_the_run_folder(split_data, tmp_path):
    [result] = train("tiny", data=split_data, fold="1", overrides=FAST, runs_dir=tmp_path / "runs", console=quiet())
    folder = tmp_path / "runs" / "tiny" / "fold1"
    assert result["folder"] == folder and result["epochs"] == 3
    table = rows(folder)
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    assert float(table[-1]["train_loss"]) < float(table[0]["train_loss"])
    assert {"train_bce", "train_dice", "lr", "val_dice_mean", "val_dice_Pisiform", "seconds"} <= set(table[0])
    assert max(float(r["val_dice_mean"]) for r in table) == pytest.approx(result["best_dice"], abs=1e-6)
    assert (folder / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = load_recipe(folder / "recipe.yaml")
    assert resolved.data.image_size == 64 and resolved.data.root == str(split_data.absolute())
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "schedule", "scaler", "epoch"} <= set(ckpt)
    assert load_checkpoint(folder / "last.pt")["epoch"] == 3
    store = Store(folder / "oof")
    val_ids = sorted(__import__("json").loads((split_data / "splits.json").read_text())["folds"][1]["val"])
    assert sorted(store.image_ids) == val_ids
    probs = store.read(val_ids[0])
    assert probs.shape == (29, 64, 64) and 0 <= probs.min() and probs.max() <= 1
    assert store.original_size(val_ids[0]) == (96, 96)
    test_store = Store(folder / "test")
    assert len(test_store.image_ids) == 4 and test_store.resolution == (64, 64)


class Killed(Exception):
    pass


def test_killed_and_resumed_run_matches_uninterrupted(split_data, tmp_path, monkeypatch):
    overrides = [*FAST, "aug=[{name: HorizontalFlip, p: 0.5}, {name: Rotate, limit: 10, p: 0.5}]"]
    train("tiny", data=split_data, fold="0", overrides=overrides, runs_dir=tmp_path / "a", console=quiet())

    original = CachedSamples.__getitem__
    calls = {"n": 0}

    def dies_mid_epoch_two(self, k):
        if self.epoch == 2:
            calls["n"] += 1
            if calls["n"] == 4:
                raise Killed
        return original(self, k)

    monkeypatch.setattr(CachedSamples, "__getitem__", dies_mid_epoch_two)
    with pytest.raises(Killed):
        train("tiny", data=split_data, fold="0", overrides=overrides, runs_dir=tmp_path / "b", console=quiet())
    assert load_checkpoint(tmp_path / "b" / "tiny" / "fold0" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(CachedSamples, "__getitem__", original)
    train("tiny", data=split_data, fold="0", overrides=overrides, runs_dir=tmp_path / "b", resume=True, console=quiet())

    a, b = (rows(tmp_path / run / "tiny" / "fold0") for run in ("a", "b"))
    strip = lambda table: [{k: v for k, v in r.items() if k != "seconds"} for r in table]  # noqa: E731
    assert strip(a) == strip(b)
    wa = load_checkpoint(tmp_path / "a" / "tiny" / "fold0" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "tiny" / "fold0" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_same_seed_same_curve(split_data, tmp_path):
    for run in ("x", "y"):
        train("tiny", data=split_data, fold="0", overrides=[*FAST, "train.epochs=2"], runs_dir=tmp_path / run, console=quiet())
    assert [r["train_loss"] for r in rows(tmp_path / "x" / "tiny" / "fold0")] == [r["train_loss"] for r in rows(tmp_path / "y" / "tiny" / "fold0")]


def test_nan_loss_stops_naming_epoch_and_step(split_data, tmp_path, monkeypatch):
    real = smp_module.create_loss
    steps = {"n": 0}

    def poisoned(weights):
        loss = real(weights)
        forward = loss.forward

        def nan_after_two_steps(logits, target):
            steps["n"] += 1
            value = forward(logits, target)
            return value * float("nan") if steps["n"] > 2 else value

        loss.forward = nan_after_two_steps
        return loss

    monkeypatch.setattr(smp_module, "create_loss", poisoned)
    with pytest.raises(CompkitError, match=r"NaN/inf at epoch 2, step 1; stopped, last.pt holds epoch 1"):
        train("tiny", data=split_data, fold="0", overrides=FAST, runs_dir=tmp_path / "runs", console=quiet())
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "fold0" / "last.pt")["epoch"] == 1


def test_early_stop(split_data, tmp_path, monkeypatch):
    """Validation dice that never improves after epoch 1 stops training after `early_stop` more epochs."""
    monkeypatch.setattr(smp_module, "validation_dice", lambda *args, **kwargs: ValidationDice(np.full(29, 0.5)))
    [result] = train("tiny", data=split_data, fold="0", overrides=[*FAST, "train.epochs=6", "train.early_stop=2"], runs_dir=tmp_path, console=quiet())
    assert result["epochs"] == 3 and result["best_epoch"] == 1


def test_unknown_transform_fails_before_work(split_data, tmp_path):
    with pytest.raises(CompkitError, match="unknown albumentations transform 'Rotat'"):
        train("tiny", data=split_data, overrides=[*FAST, "aug=[{name: Rotat}]"], runs_dir=tmp_path, console=quiet())
    assert not (split_data / ".compkit-cache").exists()


def test_bad_folds_and_missing_splits(data_copy, tmp_path):
    with pytest.raises(CompkitError, match="run `compkit split"):
        train("tiny", data=data_copy, overrides=FAST, runs_dir=tmp_path, console=quiet())
    split(data_copy, folds=2, seed=0, console=quiet())
    with pytest.raises(CompkitError, match=r"fold 5 out of range: the splits file has folds 0..1"):
        train("tiny", data=data_copy, fold="5", overrides=FAST, runs_dir=tmp_path, console=quiet())
    with pytest.raises(CompkitError, match="not a fold number or 'all'"):
        train("tiny", data=data_copy, fold="first", overrides=FAST, runs_dir=tmp_path, console=quiet())
    with pytest.raises(CompkitError, match="unknown key"):
        train("tiny", data=data_copy, overrides=[*FAST, "train.epoks=1"], runs_dir=tmp_path, console=quiet())
    assert not (tmp_path / "tiny").exists()


def test_ddp_two_gloo_processes(split_data, tmp_path):
    """--devices 2 on CPU: torchrun starts two gloo processes; rank 0 alone writes the run folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "compkit", "train", "--recipe", "tiny", "--data", str(split_data), "--fold", "0", "--devices", "2", "--runs-dir", str(tmp_path / "runs")]
    for o in [*FAST, "train.epochs=2"]:
        args += ["--set", o]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "tiny" / "fold0"
    table = rows(folder)
    assert [int(r["epoch"]) for r in table] == [1, 2]
    ckpt = load_checkpoint(folder / "last.pt")
    assert ckpt["epoch"] == 2
    # 6 training images, batch 3: one process takes 2 steps an epoch; each of 2 ranks takes 1 (its half).
    assert ckpt["schedule"]["per_step"]["last_epoch"] == 2
    assert np.isfinite(float(table[-1]["val_dice_mean"]))
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt", "oof", "pretrained.json", "recipe.yaml", "results.csv", "results.png", "test"]


def test_aux_presence_head_reports_accuracy(split_data, tmp_path):
    train("tiny", data=split_data, fold="0", overrides=[*FAST, "train.epochs=2", "model.aux={classes: 29, weight: 0.5}"], runs_dir=tmp_path, console=quiet())
    table = rows(tmp_path / "tiny" / "fold0")
    assert {"train_aux", "val_aux_acc"} <= set(table[0])
    assert all(0.0 <= float(r["val_aux_acc"]) <= 1.0 for r in table)
    assert float(table[-1]["train_aux"]) > 0


def test_aux_csv_target_on_fundus_grades(tmp_path):
    from compkit.synth import synth

    data = tmp_path / "fundus"
    synth(data, patients=3, test_patients=1, size=96, kind="fundus", console=quiet())
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="0", overrides=[*FAST, "train.epochs=1", "model.aux={classes: 5, target: 'csv:grade'}"], runs_dir=tmp_path / "runs", console=quiet())
    table = rows(tmp_path / "runs" / "tiny" / "fold0")
    assert 0.0 <= float(table[-1]["val_aux_acc"]) <= 1.0
    with pytest.raises(CompkitError, match="not a class in 0..1"):
        train("tiny", data=data, fold="0", overrides=[*FAST, "model.aux={classes: 2, target: 'csv:grade'}"], runs_dir=tmp_path / "bad", console=quiet())


def test_a_native_smp_encoder_starts_from_its_cached_imagenet_weights(split_data, tmp_path, planted_weights, cut_network, monkeypatch):
    """smp-hub/resnet18.imagenet planted in a hub cache; HF_HUB_OFFLINE=1 and every socket refused; one epoch at lr 0
    keeps the encoder's weights, and the normalisation written into recipe.yaml is the entry's config.json."""
    from compkit.weights import file_sha256
    from tests.conftest import PLANTED_MEAN, PLANTED_STD

    monkeypatch.setenv("COMPKIT_WEIGHTS", str(planted_weights["folder"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [*FAST, "train.epochs=1", "optim.lr=0", "model.encoder=resnet18", "model.encoder_weights=imagenet"]
    train("tiny", data=split_data, fold="0", overrides=overrides, runs_dir=tmp_path, console=quiet())
    folder = tmp_path / "tiny" / "fold0"
    trained = load_checkpoint(folder / "best.pt")["model"]
    for name, value in planted_weights["smp"].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(trained[f"encoder.{name}"], value), name
    resolved = load_recipe(folder / "recipe.yaml")
    assert resolved.data.mean == pytest.approx(PLANTED_MEAN) and resolved.data.std == pytest.approx(PLANTED_STD)
    record = __import__("json").loads((folder / "pretrained.json").read_text())
    assert (record["name"], record["tag"], record["repo_id"]) == ("resnet18", "imagenet", "smp-hub/resnet18.imagenet")
    assert record["sha256"] == file_sha256(record["path"])
    assert not cut_network, f"network access attempted: {cut_network}"
