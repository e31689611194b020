"""The smp family's weight averaging (train.ema): what validation, best.pt and prediction see, and exact resumes."""

from __future__ import annotations

import pytest
import torch

from compkit.families import load_fold
from compkit.stages.split import split
from compkit.stages.train import train
from compkit.training.checkpoint import load_checkpoint
from tests.conftest import FAST, quiet

EMA = [*FAST, "train.ema=0.9", "train.epochs=2", "sched.name=none"]  # a constant rate: one epoch extended to two is two


@pytest.fixture
def split_data(data_copy):
    split(data_copy, folds=2, seed=0, console=quiet())
    return data_copy


def test_ema_weights_are_what_the_checkpoint_predicts_with_and_resume_exactly(split_data, tmp_path):
    train("tiny", data=split_data, fold="0", overrides=EMA, out=tmp_path / "a", console=quiet())
    last = load_checkpoint(tmp_path / "a" / "tiny" / "fold0" / "last.pt")
    averaged, trained = last["model"], last["trained_model"]
    assert averaged.keys() == trained.keys()
    # The average lags the trained weights (and averages the batch-norm statistics too).
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if "running_mean" in k)
    # Prediction loads the averaged weights of the best epoch.
    folder = tmp_path / "a" / "tiny" / "fold0"
    best = load_checkpoint(folder / "best.pt")
    loaded = load_fold(folder, best["classes"], torch.device("cpu")).predictor.model.state_dict()
    assert all(torch.equal(loaded[k], best["model"][k]) for k in best["model"])

    # One epoch, then resumed to two: the same averaged and trained weights as two in one go.
    train("tiny", data=split_data, fold="0", overrides=[*EMA, "train.epochs=1"], out=tmp_path / "b", console=quiet())
    train("tiny", data=split_data, fold="0", overrides=EMA, out=tmp_path / "b", resume=True, console=quiet())
    resumed = load_checkpoint(tmp_path / "b" / "tiny" / "fold0" / "last.pt")
    for key in ("model", "trained_model"):
        assert all(torch.equal(resumed[key][k], last[key][k]) for k in last[key]), key


def test_without_ema_the_checkpoint_holds_only_the_trained_weights(trained_tiny_run):
    _, run = trained_tiny_run
    assert "trained_model" not in load_checkpoint(run / "fold0" / "last.pt")
