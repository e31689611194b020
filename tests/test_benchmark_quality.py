"""benchmarks/quality.py: plan vs tiny at the same budget, run on its smallest variant with a 20 s budget."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality import VARIANTS, benchmark, table  # noqa: E402

from compkit.score import score  # noqa: E402
from tests.conftest import quiet  # noqa: E402


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
    assert max(row["tiny"]["epochs"]) < 36  # tiny's 36 epochs do not fit 20 s: its folds stopped at their share
    console = Console(record=True, width=200, file=open(tmp_path / "table.txt", "w"))
    console.print(table(rows))
    text = console.export_text()
    assert "smoke" in text and "20 s" in text
