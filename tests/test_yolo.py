"""YOLO-seg through ultralytics, trained inside the test suite with every network connection refused."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from compkit.ensemble import ensemble
from compkit.fileio import read_json
from compkit.split import split
from compkit.store import Store
from compkit.submit import submit
from compkit.checkpoint import load_checkpoint
from compkit.train import train
from tests.conftest import quiet
from tests.test_train import FAST


class NetworkAttempt(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt or DNS lookup fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkAttempt(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def yolo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPKIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)


def test_yolo_trains_offline_and_ensembles_with_smp(data_copy, tmp_path, no_network, yolo_env):
    split(data_copy, folds=2, seed=0, console=quiet())
    runs = tmp_path / "runs"
    yolo_overrides = ["data.image_size=128", "train.epochs=1", "train.batch_size=4", "train.workers=0", "infer.batch_size=4"]
    [result] = train("yolov8-seg", data=data_copy, fold="0", overrides=yolo_overrides, runs_dir=runs, console=quiet())
    folder = runs / "yolov8-seg" / "fold0"
    assert (folder / "ultralytics" / "weights").is_dir(), "ultralytics' own files in a subfolder"
    assert (folder / "yolo_data" / "dataset.yaml").is_file()
    label = next((folder / "yolo_data" / "labels" / "train").glob("*.txt")).read_text().splitlines()
    assert len(label) == 29 and all(0 <= float(v) <= 1 for v in label[0].split()[1:])
    header = (folder / "results.csv").read_text().splitlines()[0].split(",")
    assert "val_dice_mean" in header and "val_dice_Pisiform" in header
    assert 0.0 <= result["best_dice"] <= 1.0
    assert set(load_checkpoint(folder / "best.pt")) >= {"model", "epoch", "family"}
    test_store = Store(folder / "test")
    assert test_store.resolution == (128, 128) and len(test_store.image_ids) == 4

    # An smp run at the same store resolution, then both families in one ensemble and one submission.
    train("tiny", data=data_copy, fold="0", overrides=[*FAST, "data.image_size=128", "train.epochs=1"], runs_dir=runs, console=quiet())
    for method in ("soft", "hard"):
        ens = ensemble([runs / "tiny", runs / "yolov8-seg"], method=method, name=method, out_dir=tmp_path / "ens", console=quiet())
        assert read_json(ens / "members.json")["method"] == method
        out = submit(ens, out=tmp_path / f"{method}.csv", console=quiet())
        assert out.read_text().startswith("image_name,class,rle")
    probs = Store(tmp_path / "ens" / "soft" / "test").read(test_store.image_ids[0])
    assert np.isfinite(probs).all()
