"""The smp family's weight averaging (train.ema): what validation, best.pt and prediction see, and exact resumes."""

from __future__ import annotations

import pytest
import torch

from compkit.families import load_fold
from compkit.stages.split import split
from compkit.stages.train import train
from compkit.training.checkpoint import load_checkpoint
from compkit.util.errors import CompkitError
from tests.conftest import FAST, csv_dicts, quiet

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


def test_a_compiled_training_loop_follows_the_eager_curve(split_data, tmp_path):
    # The eager backend runs torch.compile's graph capture without generating code: the compile path on a CPU, in
    # seconds, with the same numbers as no compilation at all.
    overrides = [*FAST, "train.epochs=1", "data.image_size=32"]
    train("tiny", data=split_data, fold="0", overrides=overrides, out=tmp_path / "eager", console=quiet())
    compiled = [*overrides, "train.compile=eager"]
    train("tiny", data=split_data, fold="0", overrides=compiled, out=tmp_path / "compiled", console=quiet())
    curves = [csv_dicts(tmp_path / name / "tiny" / "fold0" / "results.csv") for name in ("eager", "compiled")]
    assert [row["train_loss"] for row in curves[0]] == [row["train_loss"] for row in curves[1]]
    saved = load_checkpoint(tmp_path / "compiled" / "tiny" / "fold0" / "best.pt")["model"]
    assert not any(key.startswith("_orig_mod.") for key in saved), "the checkpoint holds the plain model's weights"
    with pytest.raises(CompkitError, match="train.compile"):
        train(
            "tiny",
            data=split_data,
            fold="0",
            overrides=[*overrides, "train.compile=no-such-backend"],
            out=tmp_path / "bad",
            console=quiet(),
        )
