"""benchmarks/quality.py: plan vs tiny at the same budget, run on its smallest variant with a 20 s budget."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import quality
from quality import REAL_VARIANTS, SHARED_DATA, VARIANTS, benchmark, prepare_real, table, verdicts

from compkit.data import open_dataset
from compkit.data.splits import load_splits
from compkit.stages.score import score
from tests.conftest import quiet


def test_variants_are_not_the_demos_data():
    for name, (kind, arguments) in VARIANTS.items():
        assert arguments["options"], f"{name} uses only the generator's defaults"
        assert (kind, arguments["patients"], arguments["size"]) != ("handbone", 40, 512)
    assert {kind for kind, _ in VARIANTS.values()} >= {"handbone", "fundus", "isic"}
    assert any(a["options"].get("aspect", 1.0) != 1.0 for _, a in VARIANTS.values())  # a non-square one


@pytest.mark.slow
def test_quality_benchmark_runs_both_recipes_within_a_tiny_budget(tmp_path):
    rows = benchmark(["smoke"], "20s", tmp_path, console=quiet())
    (row,) = rows
    data = tmp_path / "smoke" / "data"
    for recipe in ("plan", "tiny"):
        assert len(row[recipe]["epochs"]) == 2  # both folds trained
        assert row[recipe]["dice"] == score(tmp_path / "smoke" / recipe / f"{recipe}.csv", data, console=quiet())
        assert 0 < row[recipe]["pooled"] <= 1 and row[recipe]["size"] >= 32
    assert row["tiny"]["size"] == 192  # the recipe's own size: nothing overrode it
    assert max(row["tiny"]["epochs"]) < 36  # tiny's 36 epochs do not fit 20 s: its folds stopped at their share
    # The plain smp script at tiny's encoder, size, batch and epochs, scored the same way.
    assert row["baseline"]["epochs"] == row["tiny"]["epochs"] and row["baseline"]["size"] == 192
    assert 0 <= row["baseline"]["dice"] <= 1 and 0 <= row["baseline"]["pooled"] <= 1
    console = Console(record=True, width=400, file=io.StringIO())  # 15 columns: none wrapped
    console.print(table(rows))
    text = console.export_text()
    assert "smoke" in text and "20 s" in text and "baseline dice" in text and "tiny - baseline" in text
    assert verdicts(rows, ("plan", "tiny"))[1].startswith("tiny beats baseline on ")


def test_a_real_variant_is_skipped_with_a_message_where_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "SHARED_DATA", tmp_path / "shared" / "data")
    console = Console(record=True, width=200, file=io.StringIO())
    assert benchmark(["drive"], "20s", tmp_path / "work", console=console) == []
    assert f"drive: skipped, {tmp_path / 'shared' / 'data' / 'DRIVE'} is absent" in console.export_text()


def test_drive_is_described_and_split_in_the_workdir(tmp_path):
    source = (SHARED_DATA / REAL_VARIANTS["drive"]).resolve()
    if not source.is_dir():
        pytest.skip(f"{source} is absent: the DRIVE set is read in place from ../shared/data")
    files = sorted(source.rglob("*"))
    description, splits = prepare_real("drive", tmp_path / "drive", quiet())
    assert description == tmp_path / "drive" / "dataset.yaml" and splits == tmp_path / "drive" / "splits.json"
    assert open_dataset(description).root.resolve() == source and len(open_dataset(description, "test")) == 20
    folds = load_splits(description, tmp_path / "drive" / "splits.json")["folds"]
    assert [len(f["val"]) for f in folds] == [10, 10]
    assert sorted(source.rglob("*")) == files, "nothing written into the data"
    assert prepare_real("drive", tmp_path / "drive", quiet())[0] == description, "a second run reuses both"


@pytest.mark.slow
def test_the_tune_pipeline_searches_then_trains_its_best_recipe_within_the_same_budget(tmp_path):
    (row,) = benchmark(["smoke"], "45s", tmp_path, recipes=("tune",), baseline=False, console=quiet())
    study = tmp_path / "smoke" / "tune" / "studies" / "tune"
    assert (study / "best.yaml").is_file() and len(list(study.glob("trial-*"))) >= 2
    assert len(row["tune"]["epochs"]) == 2  # the best recipe trained on both folds
    assert row["tune"]["dice"] == score(
        tmp_path / "smoke" / "tune" / "tune.csv", tmp_path / "smoke" / "data", console=quiet()
    )
    assert row["tune"]["seconds"] < 45 * 1.5  # the study and the final training share one budget
