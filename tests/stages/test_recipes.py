"""compkit recipes: every recipe found, with where it comes from."""

from __future__ import annotations

import io

from rich.console import Console

from compkit.stages.recipes import list_recipes
from compkit.training.recipe import LOCAL, SHIPPED


def test_recipes_lists_where_each_comes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text("# Mine. Mostly tiny.\nextends: tiny\n")
    console = Console(file=io.StringIO(), width=250)
    names = list_recipes(console)
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in console.file.getvalue().splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    }
    assert set(names) == set(rows) and rows["mine"] == LOCAL and rows["hrnet"] == SHIPPED
