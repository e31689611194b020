from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import compkit.families.smp as smp_module
from compkit.data import open_dataset
from compkit.data.cache import build_cache
from compkit.families import load_fold
from compkit.families.smp import CachedSamples
from compkit.inference.predictor import ValidationDice, inference_settings, predict_cached
from compkit.stages.split import split
from compkit.stages.train import train
from compkit.stores.probabilities import Store
from compkit.training.checkpoint import load_checkpoint
from compkit.training.recipe import load_recipe
from compkit.util.errors import CompkitError
from tests.conftest import FAST, TRAINED_TINY_OVERRIDES, quiet

__all__ = ["FAST"]  # other test modules import FAST from here

# Validation accuracies of the auxiliary heads, measured: presence (29 classes, 2 epochs) 0.983 and 1.0 (an untrained
# head that says "absent" scores 0), the CSV grade (5 classes, 1 epoch, 4 validation eyes) 1.0. Measured floors,
# comfortably below.
AUX_PRESENCE_FLOOR = 0.9
AUX_CSV_FLOOR = 0.5


@pytest.fixture
def split_data(data_copy):
    split(data_copy, folds=2, seed=0, console=quiet())
    return data_copy


def rows(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_training_lowers_loss_and_writes_the_run_folder(split_data, tmp_path):
    [result] = train("tiny", data=split_data, fold="1", overrides=FAST, out=tmp_path / "runs", console=quiet())
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
    val_ids = sorted(json.loads((split_data / "splits.json").read_text())["folds"][1]["val"])
    assert sorted(store.image_ids) == val_ids
    probs = store.read(val_ids[0])
    assert probs.shape == (29, 64, 64)
    assert store.original_size(val_ids[0]) == (96, 96)
    # The OOF store holds the best checkpoint's probabilities (with the recipe's TTA), up to uint8 rounding.
    dataset = open_dataset(split_data)
    fold = load_fold(folder, dataset.classes, torch.device("cpu"))
    cache = build_cache(dataset, 64, console=quiet())
    positions = [cache.position[i] for i in val_ids]
    for position, probs in predict_cached(fold.predictor, cache, positions, inference_settings(fold.recipe)):
        assert np.abs(store.read(cache.image_ids[position]) - probs).max() <= 1 / 255 + 1e-6
    test_store = Store(folder / "test")
    assert len(test_store.image_ids) == 4 and test_store.resolution == (64, 64)


class Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(split_data, tmp_path, monkeypatch):
    overrides = [*FAST, "aug=[{name: HorizontalFlip, p: 0.5}, {name: Rotate, limit: 10, p: 0.5}]"]
    train("tiny", data=split_data, fold="0", overrides=overrides, out=tmp_path / "a", console=quiet())

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
        train("tiny", data=split_data, fold="0", overrides=overrides, out=tmp_path / "b", console=quiet())
    assert load_checkpoint(tmp_path / "b" / "tiny" / "fold0" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(CachedSamples, "__getitem__", original)
    train("tiny", data=split_data, fold="0", overrides=overrides, out=tmp_path / "b", resume=True, console=quiet())

    a, b = (rows(tmp_path / run / "tiny" / "fold0") for run in ("a", "b"))
    strip = lambda table: [{k: v for k, v in r.items() if k not in ("seconds", "train_images_per_s")} for r in table]  # noqa: E731  (timings)
    assert strip(a) == strip(b)
    wa = load_checkpoint(tmp_path / "a" / "tiny" / "fold0" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "tiny" / "fold0" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_same_seed_same_curve(trained_tiny_run, tmp_path):
    """Fold 0 trained again with the session run's recipe and overrides (alone this time, not as part of
    ``--fold all``) repeats its curve and its weights exactly."""
    data, run = trained_tiny_run  # read-only: the run goes to tmp_path, the preprocessing cache is already there
    train("tiny", data=data, fold="0", overrides=TRAINED_TINY_OVERRIDES, out=tmp_path, console=quiet())
    strip = lambda table: [{k: v for k, v in r.items() if k not in ("seconds", "train_images_per_s")} for r in table]  # noqa: E731  (timings)
    assert strip(rows(tmp_path / "tiny" / "fold0")) == strip(rows(run / "fold0"))
    again = load_checkpoint(tmp_path / "tiny" / "fold0" / "last.pt")["model"]
    before = load_checkpoint(run / "fold0" / "last.pt")["model"]
    assert all(torch.equal(again[k], before[k]) for k in before)


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
        train("tiny", data=split_data, fold="0", overrides=FAST, out=tmp_path / "runs", console=quiet())
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "fold0" / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_early_stop(split_data, tmp_path, monkeypatch):
    """Validation dice that never improves after epoch 1 stops training after `early_stop` more epochs."""
    monkeypatch.setattr(smp_module, "validation_dice", lambda *args, **kwargs: ValidationDice(np.full(29, 0.5)))
    [result] = train(
        "tiny",
        data=split_data,
        fold="0",
        overrides=[*FAST, "train.epochs=6", "train.early_stop=2"],
        out=tmp_path,
        console=quiet(),
    )
    assert result["epochs"] == 3 and result["best_epoch"] == 1


def test_unknown_transform_fails_before_work(split_data, tmp_path):
    with pytest.raises(CompkitError, match="unknown albumentations transform 'Rotat'"):
        train(
            "tiny", fold="0", data=split_data, overrides=[*FAST, "aug=[{name: Rotat}]"], out=tmp_path, console=quiet()
        )
    assert not (split_data / ".compkit-cache").exists()


def test_bad_folds_and_missing_splits(data_copy, tmp_path):
    with pytest.raises(CompkitError, match="run `compkit split"):
        train("tiny", fold="0", data=data_copy, overrides=FAST, out=tmp_path, console=quiet())
    split(data_copy, folds=2, seed=0, console=quiet())
    with pytest.raises(CompkitError, match=r"fold 5 out of range: the splits file has folds 0..1"):
        train("tiny", data=data_copy, fold="5", overrides=FAST, out=tmp_path, console=quiet())
    with pytest.raises(CompkitError, match="not a fold number or 'all'"):
        train("tiny", data=data_copy, fold="first", overrides=FAST, out=tmp_path, console=quiet())
    with pytest.raises(CompkitError, match="unknown key"):
        train("tiny", fold="0", data=data_copy, overrides=[*FAST, "train.epoks=1"], out=tmp_path, console=quiet())
    assert not (tmp_path / "tiny").exists()


@pytest.mark.slow
def test_aux_presence_head_reports_accuracy(split_data, tmp_path):
    train(
        "tiny",
        data=split_data,
        fold="0",
        overrides=[*FAST, "train.epochs=2", "model.aux={classes: 29, weight: 0.5}"],
        out=tmp_path,
        console=quiet(),
    )
    table = rows(tmp_path / "tiny" / "fold0")
    assert {"train_aux", "val_aux_acc"} <= set(table[0])
    assert all(float(r["val_aux_acc"]) > AUX_PRESENCE_FLOOR for r in table)
    assert float(table[-1]["train_aux"]) > 0


def test_aux_csv_target_on_fundus_grades(trained_fundus_aux, tmp_path):
    data, run = trained_fundus_aux
    table = rows(run / "fold0")
    val_ids = json.loads((data / "splits.json").read_text())["folds"][0]["val"]
    accuracy = float(table[-1]["val_aux_acc"])
    # An accuracy over the fold's validation images: a whole number of them right.
    assert accuracy * len(val_ids) == pytest.approx(round(accuracy * len(val_ids)), abs=1e-4)
    assert accuracy >= AUX_CSV_FLOOR
    with pytest.raises(CompkitError, match="not a class in 0..1"):
        train(
            "tiny",
            data=data,
            fold="0",
            overrides=[*FAST, "model.aux={classes: 2, target: 'csv:grade'}"],
            out=tmp_path / "bad",
            console=quiet(),
        )


@pytest.mark.slow
def test_a_native_smp_encoder_starts_from_its_cached_imagenet_weights(
    split_data, tmp_path, planted_weights, cut_network, monkeypatch
):
    """smp-hub/resnet18.imagenet planted in a hub cache; HF_HUB_OFFLINE=1 and every socket refused; one epoch at lr 0
    keeps the encoder's weights, and the normalisation written into recipe.yaml is the entry's config.json."""
    from compkit.pretrained.weights import file_sha256
    from tests.conftest import PLANTED_MEAN, PLANTED_STD

    monkeypatch.setenv("COMPKIT_WEIGHTS", str(planted_weights["folder"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [*FAST, "train.epochs=1", "optim.lr=0", "model.encoder=resnet18", "model.encoder_weights=imagenet"]
    train("tiny", data=split_data, fold="0", overrides=overrides, out=tmp_path, console=quiet())
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
