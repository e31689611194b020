"""Experiment trackers: a real training writes TensorBoard event files and a local MLflow run that are read back."""

from __future__ import annotations

import csv

import pytest

from compkit.stages.split import split
from compkit.stages.train import train
from compkit.training.tracking import TRACKERS, check_loggers, flatten
from compkit.util.errors import CompkitError
from tests.conftest import FAST, quiet


@pytest.mark.slow
def test_training_logs_to_tensorboard_and_a_local_mlflow_store(data_copy, tmp_path):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    split(data_copy, folds=2, seed=0, console=quiet())
    runs = tmp_path / "runs"
    train(
        "tiny",
        data=data_copy,
        fold="0",
        overrides=[*FAST, "train.epochs=2", "train.loggers=[tensorboard, mlflow]"],
        out=runs,
        console=quiet(),
    )
    folder = runs / "tiny" / "fold0"
    with open(folder / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {"val_loss", "train_images_per_s", "train_bce", "train_dice"} <= set(table[0])

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {
        "train/loss",
        "train/bce",
        "train/dice",
        "lr",
        "val/loss",
        "val/dice_mean",
        "val/dice_Pisiform",
        "train/images_per_s",
    } <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val/dice_mean")] == [1, 2]
    assert [e.value for e in events.Scalars("val/dice_mean")] == pytest.approx(
        [float(r["val_dice_mean"]) for r in table], abs=1e-5
    )
    assert {"results", "validation"} <= set(tags["images"])

    client = mlflow.MlflowClient(tracking_uri=(runs / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "fold0" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.image_size"] == "64"
    history = client.get_metric_history(run.info.run_id, "val.dice_mean")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(float(table[-1]["val_dice_mean"]), abs=1e-5)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert {"images/results.png", "images/val_overlays.png"} <= artifacts


def test_an_unknown_logger_is_refused_by_the_recipe_and_a_missing_package_names_its_extra(monkeypatch):
    from compkit.training.recipe import load_recipe

    with pytest.raises(CompkitError, match="train.loggers: unknown logger 'tensorbord'.*tensorboard"):
        load_recipe("tiny", ["train.loggers=[tensorbord]"])
    monkeypatch.setattr(TRACKERS["wandb"], "package", "compkit_no_such_package")
    with pytest.raises(CompkitError, match=r"pip install 'compkit\[wandb\]'"):
        check_loggers(["wandb"])


def test_flatten_names_nested_recipe_values_with_dots():
    assert flatten({"train": {"epochs": 3, "loggers": ["mlflow"]}, "name": "tiny"}) == {
        "train.epochs": 3,
        "train.loggers": "['mlflow']",
        "name": "tiny",
    }


def test_wandb_writes_an_offline_run_in_the_fold_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from compkit.training.tracking import Tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "runs" / "tiny" / "fold0"
    folder.mkdir(parents=True)
    tracking = Tracking(folder, ["wandb"], {"train": {"epochs": 2}})
    tracking.epoch({"epoch": 1, "train_loss": 0.5, "val_dice_mean": 0.25, "val_dice_Pisiform": ""})
    tracking.close()
    import time

    [record] = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.time() + 30  # close() waits for wandb's service; allow a loaded machine's file system a moment
    while b"val/dice_mean" not in record.read_bytes() and time.time() < deadline:
        time.sleep(0.5)
    data = record.read_bytes()
    assert b"val/dice_mean" in data and b"train/loss" in data and b"train.epochs" in data
    assert b"val/dice_Pisiform" not in data  # an epoch without validation logs no value
