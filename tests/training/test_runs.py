"""Run folders you can trust: they never silently change meaning, record what made them, and resume exactly,
also for more epochs (compkit.training.runs and the train stage)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from compkit.stages.split import split
from compkit.stages.train import train
from compkit.stores.probabilities import OOF_STORE, STORE_INDEX, TEST_STORE
from compkit.training.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint
from compkit.training.optimization import create_optimizer, create_schedule, lr_factor
from compkit.training.recipe import OptimConfig, SchedConfig
from compkit.training.results import OVERLAYS_PNG, RESULTS_CSV, RESULTS_PNG
from compkit.training.runs import (
    PRETRAINED_FILE,
    RECIPE_FILE,
    RUN_FILE,
    RUNS_DIR,
    TRAIN_LOG,
    fold_dirs,
    fold_folder,
    fold_number,
    next_free,
    output_folder,
    recipe_difference,
    refuse_nonempty,
)
from compkit.util.errors import CompkitError
from tests.conftest import FAST, quiet
from tests.stages.test_train import rows, split_data  # noqa: F401  (the fixture and reader test_train uses)

ONE_EPOCH = [*FAST, "train.epochs=1"]
# Every file a fold folder holds, as docs/artifacts.md names them.
FOLD_FILES = (
    RECIPE_FILE,
    RUN_FILE,
    PRETRAINED_FILE,
    TRAIN_LOG,
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    RESULTS_CSV,
    RESULTS_PNG,
)


def test_recipe_difference_names_the_first_changed_key():
    assert (
        recipe_difference({"train": {"epochs": 3, "seed": 1}}, {"train": {"epochs": 1, "seed": 1}})
        == "train.epochs: 3 -> 1"
    )
    assert recipe_difference({"a": {"b": 1}}, {"a": {"b": 1}}) is None


def test_output_folders_are_never_silently_reused(tmp_path):
    taken = tmp_path / "eda"
    taken.mkdir()
    assert output_folder(taken, explicit=False, exist_ok=False) == tmp_path / "eda-2"
    assert output_folder(taken, explicit=True, exist_ok=True) == taken
    with pytest.raises(CompkitError, match="already exists: pass --exist-ok"):
        output_folder(taken, explicit=True, exist_ok=False)
    (tmp_path / "eda-2").mkdir()
    assert next_free(taken) == tmp_path / "eda-3"


def test_an_output_dataset_is_replaced_only_when_asked(tmp_path):
    refuse_nonempty(tmp_path / "new", exist_ok=False)
    (tmp_path / "out" / "x").mkdir(parents=True)
    with pytest.raises(CompkitError, match="already exists and is not empty"):
        refuse_nonempty(tmp_path / "out", exist_ok=False)
    refuse_nonempty(tmp_path / "out", exist_ok=True)


def test_fold_folders_are_named_as_read_back(tmp_path):
    run = tmp_path / RUNS_DIR / "tiny"
    for k in (1, 0, 10):
        fold_folder(run, k).mkdir(parents=True)
        (fold_folder(run, k) / RECIPE_FILE).write_text("{}")
    assert [fold_number(f) for f in fold_dirs(run)] == [0, 1, 10]
    assert fold_dirs(fold_folder(run, 1)) == [run / "fold1"]


def test_the_readme_names_every_run_folder_artifact():
    artifacts = (Path(__file__).parents[2] / "docs" / "artifacts.md").read_text(encoding="utf-8")
    for name in (*FOLD_FILES, OVERLAYS_PNG):
        assert f"`{name}`" in artifacts, name
    assert f"`{OOF_STORE}/`" in artifacts and f"`{TEST_STORE}/`" in artifacts and f"`{STORE_INDEX}`" in artifacts
    assert f"`{RUNS_DIR}/<name>/fold<k>/`" in artifacts


@pytest.mark.slow
def test_a_changed_recipe_never_overwrites_a_run(split_data, tmp_path):
    runs = tmp_path / "runs"
    train("tiny", fold="0", data=split_data, overrides=ONE_EPOCH, out=runs, console=quiet())
    # The same recipe again (another fold, say) trains into the same run.
    train("tiny", data=split_data, fold="1", overrides=ONE_EPOCH, out=runs, console=quiet())
    assert sorted(p.name for p in (runs / "tiny").iterdir()) == ["cv.csv", "cv.json", "fold0", "fold1"]
    # Another recipe without --name: a new run folder, the first one untouched.
    before = (runs / "tiny" / "fold0" / "best.pt").read_bytes()
    [result] = train("tiny", fold="0", data=split_data, overrides=[*FAST, "train.epochs=2"], out=runs, console=quiet())
    assert result["folder"] == runs / "tiny-2" / "fold0"
    assert (runs / "tiny" / "fold0" / "best.pt").read_bytes() == before
    # With --name it is refused, naming what differs; --exist-ok trains over it.
    with pytest.raises(
        CompkitError, match=r"fold0 was trained with another recipe \(train.epochs: 1 -> 2\): pass --exist-ok"
    ):
        train(
            "tiny",
            fold="0",
            data=split_data,
            overrides=[*FAST, "train.epochs=2"],
            name="tiny",
            out=runs,
            console=quiet(),
        )
    train(
        "tiny",
        fold="0",
        data=split_data,
        overrides=[*FAST, "train.epochs=2"],
        name="tiny",
        out=runs,
        exist_ok=True,
        console=Console(file=io.StringIO(), width=200),
    )
    assert len(rows(runs / "tiny" / "fold0")) == 2
    log = (runs / "tiny" / "fold0" / TRAIN_LOG).read_text(encoding="utf-8")
    assert "warning: " in log and "training over it (--exist-ok)" in log, "the fold's log keeps the warning"


@pytest.mark.slow
def test_another_split_is_another_experiment(split_data, tmp_path):
    runs = tmp_path / "runs"
    train("tiny", fold="0", data=split_data, overrides=ONE_EPOCH, out=runs, console=quiet())
    split(split_data, folds=2, seed=5, exist_ok=True, console=quiet())
    [result] = train("tiny", fold="0", data=split_data, overrides=ONE_EPOCH, out=runs, console=quiet())
    assert result["folder"].parent.name == "tiny-2"


def test_each_fold_records_what_made_it(split_data, tmp_path):
    console = Console(file=io.StringIO(), width=120)
    train("tiny", fold="0", data=split_data, overrides=ONE_EPOCH, out=tmp_path / "runs", console=console)
    folder = tmp_path / "runs" / "tiny" / "fold0"
    record = json.loads((folder / "run.json").read_text())
    assert record["overrides"] == ONE_EPOCH and record["recipe"]["train"]["epochs"] == 1
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] or record["versions"]["torch"].startswith(
        torch.__version__.split("+")[0]
    )
    assert {"compkit", "segmentation-models-pytorch", "timm", "ultralytics", "cuda"} <= set(record["versions"])
    assert (
        record["device"] == "cpu" and record["started"] <= record["ended"] and len(record["splits_fingerprint"]) == 16
    )
    assert (folder / record["data_root_relative"]).resolve() == split_data.resolve()
    log = (folder / "train.log").read_text()
    assert "fold 0 epoch 1" in log
    assert all((folder / name).is_file() for name in FOLD_FILES), [n for n in FOLD_FILES if not (folder / n).is_file()]
    assert (folder / OOF_STORE / STORE_INDEX).is_file() and (folder / TEST_STORE / STORE_INDEX).is_file()


@pytest.mark.slow
def test_a_ten_step_run_trains_with_every_schedule(data_copy, tmp_path):
    """10 training images, batch 2, 2 epochs: 10 optimizer steps (one-cycle used to divide by zero here)."""
    split(data_copy, folds=6, seed=0, console=quiet())  # 12 images: 10 train, 2 validate
    for schedule in ("onecycle", "cosine", "step", "plateau", "none"):
        [result] = train(
            "tiny",
            fold="0",
            data=data_copy,
            overrides=[*FAST, "train.epochs=2", "train.batch_size=2", f"sched.name={schedule}", "sched.warmup_epochs=1"],
            name=schedule, out=tmp_path / "runs", console=quiet(),
        )  # fmt: skip
        assert result["epochs"] == 2


@pytest.mark.slow
def test_resume_extends_training_on_the_longer_schedule(split_data, tmp_path):
    runs = tmp_path / "runs"
    train("tiny", fold="0", data=split_data, overrides=[*FAST, "train.epochs=2"], out=runs, console=quiet())
    folder = runs / "tiny" / "fold0"
    console = Console(file=io.StringIO(), width=120)
    [result] = train(
        "tiny", fold="0", data=split_data, overrides=[*FAST, "train.epochs=4"], resume=True, out=runs, console=console
    )
    assert result["epochs"] == 4 and [int(r["epoch"]) for r in rows(folder)] == [1, 2, 3, 4]
    text = console.export_text()
    assert "train.epochs 2 -> 4" in text and "resuming fold 0 after epoch 2" in text
    # The schedule's step count carried over: the last lr is where the 4-epoch cosine curve ends.
    checkpoint = load_checkpoint(folder / "last.pt")
    steps = checkpoint["schedule"]["step"]
    base = 0.005
    expected = base * lr_factor(SchedConfig(name="onecycle", pct_start=0.1), steps, steps, steps // 4, base)
    assert float(rows(folder)[-1]["lr"]) == pytest.approx(expected, rel=1e-6)
    # Anything else changed is refused, naming it.
    with pytest.raises(
        CompkitError, match=r"cannot resume: fold0 was trained with another recipe \(optim.lr: 0.005 -> 0.001\)"
    ):
        train(
            "tiny",
            fold="0",
            data=split_data,
            overrides=[*FAST, "train.epochs=5", "optim.lr=0.001"],
            resume=True,
            out=runs,
            console=quiet(),
        )


def test_schedules_extend_without_a_jump_at_the_start():
    """Rebuilt for more steps, a schedule resumes at the same step of the longer curve (no restart from warm-up)."""
    model = torch.nn.Linear(2, 1)
    for name in ("cosine", "onecycle", "step", "none"):
        short = create_schedule(
            create_optimizer(model, OptimConfig(lr=0.1)), SchedConfig(name=name), steps_per_epoch=5, epochs=2
        )
        for _ in range(10):
            short.after_step()
        longer = create_schedule(
            create_optimizer(model, OptimConfig(lr=0.1)), SchedConfig(name=name), steps_per_epoch=5, epochs=4
        )
        longer.load_state_dict(short.state_dict())
        assert longer.step_count == 10
        assert longer.lr == pytest.approx(0.1 * lr_factor(SchedConfig(name=name), 10, 20, 5, 0.1))


def test_an_ensemble_refuses_a_run_whose_folds_are_different_experiments(trained_tiny_run, tmp_path):
    from compkit.stages.ensemble import ensemble
    from tests.conftest import copy_run

    run = copy_run(trained_tiny_run.run, tmp_path / "tiny")
    recipe = run / "fold1" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("\n  epochs: 1\n", "\n  epochs: 2\n"))
    with pytest.raises(
        CompkitError, match=r"not one experiment: fold1 differs from fold0 in train.epochs: 1 -> 2 \(pass --mixed-folds"
    ):
        ensemble([run], data=trained_tiny_run.data, out=tmp_path / "ens", console=quiet())
    assert ensemble([run], data=trained_tiny_run.data, out=tmp_path / "ens", mixed_folds=True, console=quiet()).is_dir()
