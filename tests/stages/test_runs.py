"""``compkit runs``: every run and ensemble in one table, CV and leaderboard side by side, the recipe changes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from compkit.cli import app
from compkit.stages.ensemble import ensemble
from compkit.stages.runs import COLUMNS, runs
from compkit.stages.submit import submit
from compkit.stores.leaderboard import lb_scores
from compkit.util.errors import CompkitError
from tests.conftest import copy_run, csv_dicts, quiet


@pytest.fixture
def workspace(trained_tiny_run, tmp_path):
    """A run, its ensemble and a submission from it scored on the leaderboard, in a fresh folder."""
    run = copy_run(trained_tiny_run.run, tmp_path / "runs" / "tiny")
    ens = ensemble([run], name="tiny-ens", out=tmp_path / "ensembles", data=trained_tiny_run.data, console=quiet())
    submit(ens, out=tmp_path / "tiny.csv", lb=0.8123, console=quiet())
    return tmp_path


def test_runs_lists_runs_and_ensembles_with_cv_and_lb(workspace):
    rows = runs([workspace / "runs", workspace / "ensembles"], csv=workspace / "all.csv", console=quiet())
    by_kind = {r["kind"]: r for r in rows}
    run, ens = by_kind["run"], by_kind["ensemble"]
    cv = json.loads((workspace / "runs" / "tiny" / "cv.json").read_text())
    assert run["val_dice"] == pytest.approx(cv["mean"]["best_dice"], abs=1e-6)  # cv.json rounds to 6 places
    assert run["folds"] == "2/2" and run["epochs"] == "1" and run["size"] == 64
    assert "data.image_size 192 → 64" in run["changes"] and "train.epochs 36 → 1" in run["changes"]
    assert "model.family" not in run["changes"] and "data.root" not in run["changes"]  # resolved, not changed
    members = json.loads((workspace / "ensembles" / "tiny-ens" / "members.json").read_text())
    assert ens["oof_dice_cross_validated"] == pytest.approx(members["oof_dice_cross_validated"])
    assert run["oof_dice_cross_validated"] == ens["oof_dice_cross_validated"]  # ensembled alone: its figures
    assert ens["lb"] == 0.8123 and run["lb"] is None
    assert lb_scores(workspace / "ensembles" / "tiny-ens")[0]["submission"].endswith("tiny.csv")
    written = csv_dicts(workspace / "all.csv")
    assert list(written[0]) == list(COLUMNS) and len(written) == 2


def test_a_score_recorded_by_name_shows_in_the_cli_table(workspace, monkeypatch):
    monkeypatch.chdir(workspace)  # ./runs and ./ensembles by default
    result = CliRunner().invoke(app, ["runs", "--lb", "tiny-ens=0.83", "--sort", "lb"])
    assert result.exit_code == 0, result.output
    assert "0.8300" in result.output and "1 runs, 0 trials, 1 ensembles" in " ".join(result.output.split())
    assert [s["score"] for s in lb_scores(workspace / "ensembles" / "tiny-ens")] == [0.8123, 0.83]


@pytest.mark.parametrize(
    ("assignment", "message"), [("tiny=x", "not a score"), ("nothing=0.8", "no run or ensemble"), ("0.8", "NAME=SCORE")]
)
def test_a_bad_lb_assignment_is_one_line(workspace, assignment, message):
    with pytest.raises(CompkitError, match=message):
        runs([workspace / "runs"], lb=[assignment], console=quiet())


def test_no_folders_to_list_says_what_to_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CompkitError, match="name the folders"):
        runs(console=quiet())
