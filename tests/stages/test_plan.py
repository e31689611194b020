"""`compkit plan` on the hand-bone, fundus and skin synthetic data on CPU: an explained recipe that loads and trains,
and the time budget that stops a fold (keeping its best checkpoint)."""

from __future__ import annotations

import io
import re
import time

import pytest
import yaml

from compkit.planning.planner import CANDIDATES
from compkit.stages.plan import plan
from compkit.stages.split import split
from compkit.stages.train import train
from compkit.training.checkpoint import CHECKPOINT_BEST, load_checkpoint
from compkit.training.recipe import load_recipe
from compkit.training.results import read_results
from tests.conftest import FAST, copy_dataset, quiet

EXPLAINED = (
    "data:",
    "budget:",
    "input size",
    "probe:",
    "model ",
    "batch ",
    "epochs ",
    "schedule onecycle",
    "rotation up to",
    "intensity:",
    "loss bce",
    "TTA ",
)


def comments(path) -> list[str]:
    return [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]


def planned_time_budget(path, budget_s: float, folds: int) -> float:
    """The plan's train.time_budget, checked against its own reason line and the bound the budget sets: each fold's
    share of the budget less the fixed costs (FIXED_OVERHEAD_S and 5 % of the budget), at least 1 s."""
    from compkit.planning.planner import FIXED_OVERHEAD_S

    value = load_recipe(path).train.time_budget
    stated = [float(m.group(1)) for r in comments(path) if (m := re.search(r"train\.time_budget (\d+) s per fold", r))]
    assert len(stated) == 1 and abs(stated[0] - value) <= 0.5
    assert 1.0 <= value <= (budget_s - FIXED_OVERHEAD_S - 0.05 * budget_s) / folds
    return value


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "vertical_flip", "grey"),
    [("synth_data", False, True), ("fundus_data", True, False), ("isic_data", True, False)],
)
def test_plan_writes_an_explained_recipe_that_trains(dataset, vertical_flip, grey, request, tmp_path):
    data = copy_dataset(request.getfixturevalue(dataset), tmp_path / "data")
    out = plan(data, budget="3m", device="cpu", out=tmp_path / "plan.yaml", console=quiet())
    reasons = comments(out)
    for start in EXPLAINED:
        assert any(r.startswith(start) for r in reasons), f"no reason starting {start!r} in {reasons}"
    raw = yaml.safe_load(out.read_text())
    assert raw["extends"] == "tiny"
    cfg = load_recipe(out)
    names = [a["name"] for a in cfg.aug]
    assert "HorizontalFlip" in names  # no synthetic class is side-specific (hand bones: left hands are mirrored)
    assert ("VerticalFlip" in names) == vertical_flip  # the forearm is always at the bottom of a hand X-ray
    assert ("RandomGamma" in names) == grey
    assert planned_time_budget(out, 180, folds=2) == cfg.train.time_budget  # a share of 3 minutes per fold
    assert cfg.train.epochs >= 1 and cfg.train.early_stop is None and cfg.sched.name == "onecycle"
    # The probe decides by measured speed, so the choice depends on the machine's load: one of the candidates.
    assert cfg.model.encoder in {c["encoder"] for c in CANDIDATES}
    assert 64 <= cfg.data.image_size <= 128 and cfg.data.image_size % 32 == 0
    split(data, folds=2, seed=0, console=quiet())
    result = train(out, data=data, fold="0", overrides=["train.epochs=1"], out=tmp_path / "runs", console=quiet())
    assert result[0]["epochs"] == 1 and (result.run_dir / "fold0" / CHECKPOINT_BEST).is_file()


@pytest.mark.slow
def test_the_time_budget_stops_training_and_keeps_the_best_checkpoint(data_copy, tmp_path):
    split(data_copy, folds=2, seed=0, console=quiet())
    overrides = [*FAST, "train.epochs=500", "train.time_budget=4"]
    result = train("tiny", data=data_copy, fold="0", overrides=overrides, out=tmp_path / "runs", console=quiet())
    fold = result.run_dir / "fold0"
    epochs = result[0]["epochs"]
    assert 1 <= epochs < 500
    rows = read_results(fold, epochs)
    assert len(rows) == epochs and sum(float(r["seconds"]) for r in rows) < 4 + max(float(r["seconds"]) for r in rows)
    best = load_checkpoint(fold / CHECKPOINT_BEST)
    assert best["epoch"] == result[0]["best_epoch"] <= epochs and best["best_dice"] == pytest.approx(
        result[0]["best_dice"]
    )


@pytest.mark.slow
def test_train_plan_with_a_budget_plans_then_trains_within_it(data_copy, tmp_path):
    from rich.console import Console

    split(data_copy, folds=2, seed=0, console=quiet())
    console = Console(record=True, width=200, file=io.StringIO())
    result = train("plan", data=data_copy, fold="all", out=tmp_path / "runs", budget="60s", console=console)
    planned = tmp_path / "runs" / "plan.yaml"
    time_budget = planned_time_budget(planned, 60, folds=2)
    for fold in ("fold0", "fold1"):  # the planner's budget trains each fold: --budget does not replace it
        assert load_recipe(result.run_dir / fold / "recipe.yaml").train.time_budget == time_budget
    assert result.run_dir == tmp_path / "runs" / "plan" and len(result) == 2
    text = console.export_text()
    assert "wall time" in text and "of the 60 s budget" in text


@pytest.mark.slow
def test_a_budget_gives_each_fold_its_share_as_the_time_budget(data_copy, tmp_path):
    """Without a plan, --budget becomes train.time_budget: 80 % of what is left of it, shared by the folds trained."""
    split(data_copy, folds=2, seed=0, console=quiet())
    began = time.time()
    result = train(
        "tiny",
        data=data_copy,
        fold="all",
        overrides=[*FAST, "train.epochs=1"],
        out=tmp_path / "runs",
        budget="1h",
        console=quiet(),
    )
    took = time.time() - began
    budgets = [load_recipe(result.run_dir / f"fold{k}" / "recipe.yaml").train.time_budget for k in (0, 1)]
    assert budgets[0] == budgets[1]
    assert round(0.8 * (3600 - took) / 2, 1) <= budgets[0] <= 0.8 * 3600 / 2
